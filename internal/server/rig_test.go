package server

import (
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tollgate/tollgate/internal/config"
	"github.com/tollgate/tollgate/internal/mockupstream"
	"github.com/tollgate/tollgate/internal/store"
	"github.com/tollgate/tollgate/internal/store/storetest"
)

// rig is gateway replicas on loopback sharing one store and one Redis, as a
// deployment runs them, in front of one mock upstream. Its store is a fresh
// PostgreSQL schema (or a fresh SQLite file) and its Redis keys sit under a
// prefix of its own, so no two rigs see each other's state, in one test
// binary or in several running at once against the same servers.
type rig struct {
	mock   *mockupstream.Server
	up     string // the mock's URL (or rigSpec.up)
	st     store.Store
	redis  string         // TOLLGATE_TEST_REDIS_URL ("" without redis)
	ropts  *redis.Options // redis parsed (nil without redis)
	prefix string         // every replica's Options.RedisPrefix
	urls   []string
	srvs   []*Server
	stops  []func() // each replica's graceful stop; at most once, the test's cleanup runs what is left
	cfgs   map[string]*config.Config
}

// rigCount numbers the rigs of this test binary.
var rigCount atomic.Int64

// rigSpec says what a rig needs.
type rigSpec struct {
	name     string // the start of the Redis prefix
	postgres bool   // the store on PostgreSQL (skip without TOLLGATE_TEST_POSTGRES_URL); else SQLite
	redis    bool   // skip without TOLLGATE_TEST_REDIS_URL
	mock     mockupstream.Options
	up       string // an upstream of the test's own instead of the mock (mock is then nil)
}

// newRig makes a rig without replicas (start adds them), skipping the test
// when a server it needs is not configured.
func newRig(t testing.TB, spec rigSpec) *rig {
	t.Helper()
	pg, rd := os.Getenv("TOLLGATE_TEST_POSTGRES_URL"), os.Getenv("TOLLGATE_TEST_REDIS_URL")
	if spec.postgres && pg == "" {
		t.Skip("TOLLGATE_TEST_POSTGRES_URL is not set: skipping a test of replicas on PostgreSQL")
	}
	if spec.redis && rd == "" {
		t.Skip("TOLLGATE_TEST_REDIS_URL is not set: skipping a test of replicas on Redis")
	}
	// The clock and a counter: rigs made at once by parallel tests differ too.
	prefix := spec.name + "-" + strconv.FormatInt(time.Now().UnixNano(), 36) + "-" + strconv.FormatInt(rigCount.Add(1), 36)
	r := &rig{up: spec.up, prefix: prefix, cfgs: map[string]*config.Config{}}
	if r.up == "" {
		r.mock = mockupstream.New(spec.mock)
		up := httptest.NewServer(r.mock)
		t.Cleanup(up.Close) // registered first: runs after every replica has stopped
		r.up = up.URL
	}
	if spec.redis {
		o, err := redis.ParseURL(rd)
		if err != nil {
			t.Fatal(err)
		}
		r.redis, r.ropts = rd, o
	}
	if spec.postgres {
		r.st = storetest.OpenPostgres(t, pg)
	} else {
		r.st = sqliteStore(t)
	}
	return r
}

// replicas is a rig of n replicas, each serving yaml with opts (see start).
func replicas(t testing.TB, n int, spec rigSpec, yaml string, opts Options) *rig {
	t.Helper()
	r := newRig(t, spec)
	for range n {
		r.start(t, yaml, opts)
	}
	return r
}

// start adds a replica serving yaml, in which {{UP}} stands for the mock's
// URL and {{REDIS}} for the rig's Redis URL, with opts but the rig's store
// and Redis prefix. Replicas started with the same yaml share one parsed
// config, as they did before the rig.
func (r *rig) start(t testing.TB, yaml string, opts Options) *Server {
	t.Helper()
	cfg, ok := r.cfgs[yaml]
	if !ok {
		text := strings.ReplaceAll(strings.ReplaceAll(yaml, "{{UP}}", r.up), "{{REDIS}}", r.redis)
		var err error
		if cfg, err = config.Parse("t.yaml", []byte(text)); err != nil {
			t.Fatal(err)
		}
		r.cfgs[yaml] = cfg
	}
	if opts.Store == nil { // else the test's wrapper of r.st for this replica
		opts.Store = r.st
	}
	opts.RedisPrefix = r.prefix
	u, s, stop := serveStop(t, cfg, opts)
	r.urls, r.srvs, r.stops = append(r.urls, u), append(r.srvs, s), append(r.stops, stop)
	return s
}

// key makes a key on the first replica and waits until every replica knows
// it (a request for an unknown model is answered 404, not 401).
func (r *rig) key(t testing.TB, name, fields string) string {
	t.Helper()
	if fields != "" {
		fields = ", " + fields
	}
	if code, body := send(t, r.urls[0]+"/key/generate", "sk-1234", `{"key": "`+name+`"`+fields+`}`); code != 200 {
		t.Fatal(code, body)
	}
	for _, u := range r.urls {
		if _, ok := within(time.Minute, func() bool {
			c, _ := send(t, u+"/v1/chat/completions", name, `{"model":"nope"}`)
			return c == 404
		}); !ok {
			t.Fatal("a replica does not know the key", name)
		}
	}
	return sha(name)
}

// client is a Redis client on the rig's Redis, closed at cleanup.
func (r *rig) client(t testing.TB) *redis.Client {
	c := redis.NewClient(r.ropts)
	t.Cleanup(func() { c.Close() })
	return c
}

// budget is the Redis key of an account's shared budget (kind "key",
// "user", "end_user", …).
func (r *rig) budget(kind, id string) string { return "{" + r.prefix + "}:bud:" + kind + ":" + id }

// flush writes every replica's pending spend to the store.
func (r *rig) flush() {
	for _, s := range r.srvs {
		s.writer.Flush()
	}
}
