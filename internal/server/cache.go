package server

import (
	"errors"
	"time"

	"github.com/tollgate/tollgate/internal/cache"
	"github.com/tollgate/tollgate/internal/config"
	"github.com/tollgate/tollgate/internal/gateway"
	"github.com/tollgate/tollgate/internal/metrics"
	"github.com/tollgate/tollgate/internal/rscript"
)

// Defaults of the response cache (docs/caching.md).
const (
	defaultCacheTTL        = 10 * time.Minute
	defaultCacheEntryBytes = 1 << 20
)

// newCache builds the response cache of litellm_settings.cache (nil when
// it is off): local in process, or on the gateway's Redis under
// {prefix}:cache:.
func newCache(cfg *config.Config, opts Options, rc *rscript.Runner, m *metrics.Metrics) (*gateway.Cache, error) {
	ls := cfg.LiteLLMSettings
	if !ls.Cache {
		return nil, nil
	}
	cp := ls.CacheParams
	if cp == nil {
		cp = &config.CacheParams{}
	}
	c := &gateway.Cache{TTL: defaultCacheTTL, Namespace: cp.Namespace, DefaultOff: cp.Mode == "default_off",
		MaxEntryBytes: defaultCacheEntryBytes, ChargeHits: cp.ChargeHits, Metrics: m}
	if cp.TTL != nil && *cp.TTL > 0 {
		c.TTL = time.Duration(*cp.TTL)
	}
	if cp.MaxEntryBytes != nil {
		c.MaxEntryBytes = *cp.MaxEntryBytes
	}
	if len(cp.SupportedCallTypes) > 0 {
		c.CallTypes = map[string]bool{}
		for _, t := range cp.SupportedCallTypes {
			c.CallTypes[t] = true
		}
	}
	switch cp.Type {
	case "redis", "redis-semantic":
		if rc == nil {
			return nil, errors.New("litellm_settings.cache_params.type is redis, and no redis_url (or REDIS_URL) names the gateway's Redis")
		}
		if cp.DefaultInRedisTTL != nil && *cp.DefaultInRedisTTL > 0 {
			c.TTL = time.Duration(*cp.DefaultInRedisTTL)
		}
		prefix := opts.RedisPrefix
		if prefix == "" {
			prefix = "tg"
		}
		c.Backend = cache.NewRedis(rc, "{"+prefix+"}:cache:")
	default:
		if cp.DefaultInMemoryTTL != nil && *cp.DefaultInMemoryTTL > 0 {
			c.TTL = time.Duration(*cp.DefaultInMemoryTTL)
		}
		var size int64
		if cp.MaxBytes != nil {
			size = *cp.MaxBytes
		}
		c.Backend = cache.NewLocal(size)
	}
	if cp.Type == "redis-semantic" || cp.Type == "local-semantic" {
		c.Semantic = &gateway.Semantic{Model: cp.RedisSemanticCacheEmbeddingModel, Threshold: *cp.SimilarityThreshold, Index: cache.NewIndex(0)}
	}
	c.MaxTTL = max(24*time.Hour, c.TTL)
	if cp.MaxTTL != nil {
		c.MaxTTL = time.Duration(*cp.MaxTTL)
	}
	opts.Logger.Info("response cache on", "type", c.Backend.Name(), "ttl", c.TTL, "namespace", c.Namespace, "mode", cp.Mode)
	return c, nil
}
