package cache

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
)

// Commander runs one Redis command (rscript.Runner.Submit) and says
// whether Redis is known to be away (rscript.Runner.Degraded).
type Commander interface {
	Submit(ctx context.Context, argv ...any) (any, error)
	Degraded() bool
}

// ErrRedisAway is the error of a call made while Redis is known to be
// away: the cache is off until it answers again.
var ErrRedisAway = errors.New("cache: redis is away")

// Redis keeps entries on Redis under prefix+key, each with its TTL.
type Redis struct {
	c      Commander
	prefix string
	// Timeout bounds each command: a Redis that is slow is a miss, never a
	// slow request.
	Timeout time.Duration
}

var _ Backend = (*Redis)(nil)

// NewRedis returns a backend on c whose keys start with prefix (the
// gateway's "{tg}:cache:").
func NewRedis(c Commander, prefix string) *Redis {
	return &Redis{c: c, prefix: prefix, Timeout: 250 * time.Millisecond}
}

func (r *Redis) Name() string { return "redis" }

func (r *Redis) do(ctx context.Context, argv ...any) (any, error) {
	if r.c.Degraded() {
		return nil, ErrRedisAway
	}
	ctx, cancel := context.WithTimeout(ctx, r.Timeout)
	defer cancel()
	return r.c.Submit(ctx, argv...)
}

func (r *Redis) Get(ctx context.Context, key string) (*Entry, error) {
	v, err := r.do(ctx, "GET", r.prefix+key)
	if err != nil {
		if errors.Is(err, redis.Nil) {
			return nil, nil
		}
		return nil, err
	}
	var b []byte
	switch s := v.(type) {
	case string:
		b = []byte(s)
	case []byte:
		b = s
	case nil:
		return nil, nil
	default:
		return nil, fmt.Errorf("cache: redis GET answered %T", v)
	}
	return Decode(b)
}

func (r *Redis) Set(ctx context.Context, key string, e *Entry, ttl time.Duration) error {
	_, err := r.do(ctx, "SET", r.prefix+key, e.Encode(), "PX", ttlMillis(ttl))
	return err
}

func (r *Redis) Delete(ctx context.Context, keys ...string) error {
	if len(keys) == 0 {
		return nil
	}
	argv := []any{"DEL"}
	for _, k := range keys {
		argv = append(argv, r.prefix+k)
	}
	_, err := r.do(ctx, argv...)
	return err
}

// Flush deletes every key under the prefix, a SCAN page at a time.
func (r *Redis) Flush(ctx context.Context) error {
	cursor := "0"
	for {
		v, err := r.do(ctx, "SCAN", cursor, "MATCH", r.prefix+"*", "COUNT", 500)
		if err != nil {
			return err
		}
		page, ok := v.([]any)
		if !ok || len(page) != 2 {
			return fmt.Errorf("cache: redis SCAN answered %T", v)
		}
		cursor, _ = page[0].(string)
		keys, _ := page[1].([]any)
		if len(keys) > 0 {
			argv := append([]any{"DEL"}, keys...)
			if _, err := r.do(ctx, argv...); err != nil {
				return err
			}
		}
		if cursor == "0" || cursor == "" {
			return nil
		}
	}
}

func (r *Redis) Ping(ctx context.Context) error {
	_, err := r.do(ctx, "PING")
	return err
}
