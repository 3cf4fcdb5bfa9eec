package server

import (
	"bufio"
	"context"
	"net/http/httptest"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tollgate/tollgate/internal/mockupstream"
)

// redisStats is what a Redis server reports about its own work: the
// process's CPU (getrusage, the same user + system time /proc/PID/stat
// shows, to the microsecond) and, per command, the calls made (commands
// run inside scripts included) and the time spent in them.
type redisStats struct {
	cpu   time.Duration
	calls map[string]int64
	usec  map[string]int64
}

func readRedisStats(t testing.TB, rc *redis.Client) redisStats {
	t.Helper()
	s := redisStats{calls: map[string]int64{}, usec: map[string]int64{}}
	info, err := rc.Info(context.Background(), "cpu", "commandstats").Result()
	if err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(strings.NewReader(info))
	for sc.Scan() {
		name, val, ok := strings.Cut(strings.TrimSpace(sc.Text()), ":")
		if !ok {
			continue
		}
		switch {
		case name == "used_cpu_sys" || name == "used_cpu_user":
			f, _ := strconv.ParseFloat(val, 64)
			s.cpu += time.Duration(f * 1e9)
		case strings.HasPrefix(name, "cmdstat_"):
			cmd := strings.TrimPrefix(name, "cmdstat_")
			for _, kv := range strings.Split(val, ",") {
				k, v, _ := strings.Cut(kv, "=")
				n, _ := strconv.ParseInt(v, 10, 64)
				switch k {
				case "calls":
					s.calls[cmd] = n
				case "usec":
					s.usec[cmd] = n
				}
			}
		}
	}
	return s
}

// BenchmarkRedisPerRequest drives whole requests through a gateway whose
// key has a budget, rpm, tpm and a parallel limit on Redis (the fused
// scripts: one call before the upstream call, one after) and reports what
// each cost Redis: its process CPU (redis-µs/req), the commands it ran,
// inner ones included (redis-cmds/req), and the script calls
// (evalsha/req). Point TOLLGATE_TEST_REDIS_URL at a private server
// (redis-server --port 6399 --save ” --appendonly no) so that no other
// client's commands are counted: the figures are the whole server's. The
// per-command counts are logged (-v).
func BenchmarkRedisPerRequest(b *testing.B) {
	up := httptest.NewServer(mockupstream.New(mockupstream.Options{}))
	defer up.Close()
	e := startFused(b, 1, up.URL)
	e.key(b, "sk-redis-cost", `"max_budget": 1000000, "rpm_limit": 100000000, "tpm_limit": 10000000000, "max_parallel_requests": 100000`)
	// Warm: scripts loaded, keys made. A slow Redis (under valgrind) may
	// miss the first holds' deadline: wait until 50 in a row are served.
	served := 0
	if _, ok := within(120*time.Second, func() bool {
		if code, _ := send(b, e.urls[0]+"/v1/chat/completions", "sk-redis-cost", chat3); code == 200 {
			served++
		} else {
			served = 0
		}
		return served >= 50
	}); !ok {
		b.Fatal("the gateway did not serve 50 requests in a row")
	}
	before := readRedisStats(b, e.rc)
	b.ResetTimer()
	b.SetParallelism(4)
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if code, body := send(b, e.urls[0]+"/v1/chat/completions", "sk-redis-cost", chat3); code != 200 {
				b.Error(code, body)
				return
			}
		}
	})
	b.StopTimer()
	// The settle runs after the answer is written: wait until every
	// request's has run (two script calls per request), or give up.
	want := before.calls["evalsha"] + before.calls["eval"] + 2*int64(b.N)
	var after redisStats
	within(30*time.Second, func() bool {
		after = readRedisStats(b, e.rc)
		return after.calls["evalsha"]+after.calls["eval"] >= want
	})
	n := float64(b.N)
	var cmds int64
	var lines []string
	for c, v := range after.calls {
		d := v - before.calls[c]
		if c == "info" || d == 0 {
			continue
		}
		cmds += d
		lines = append(lines, c+" "+strconv.FormatFloat(float64(d)/n, 'f', 2, 64))
	}
	sort.Strings(lines)
	b.ReportMetric(float64(after.cpu-before.cpu)/1e3/n, "redis-µs/req")
	b.ReportMetric(float64(cmds)/n, "redis-cmds/req")
	b.ReportMetric(float64(after.calls["evalsha"]-before.calls["evalsha"])/n, "evalsha/req")
	b.ReportMetric(float64(after.usec["evalsha"]-before.usec["evalsha"])/n, "evalsha-µs/req")
	b.Logf("N=%d, per request: %s", b.N, strings.Join(lines, ", "))
}

// TestRedisCommandsPerRequest: the commands a request's two scripts run on
// Redis, counted with MONITOR (those naming one of this test's keys; TIME
// names none), stay within what the layout promises: per budgeted account
// a read and a write to hold, a read and two writes to settle; per window
// a read and a write (and the tpm correction's); a parallel slot counted,
// added and its expiry set, then removed; the replicas counted once.
// The layout before this one ran 27 such commands per request.
func TestRedisCommandsPerRequest(t *testing.T) {
	up := httptest.NewServer(mockupstream.New(mockupstream.Options{}))
	defer up.Close()
	e := startFused(t, 1, up.URL)
	e.key(t, "sk-redis-count", `"max_budget": 1000, "rpm_limit": 100000, "tpm_limit": 100000000, "max_parallel_requests": 1000`)
	if code, body := send(t, e.urls[0]+"/v1/chat/completions", "sk-redis-count", chat3); code != 200 {
		t.Fatal(code, body)
	}
	ctx := context.Background()
	lines := monitor(t, e.rc.Options())
	tag := "{" + e.prefix + "}"
	mark := tag + ":mark"
	// drain reads MONITOR up to the mark's GET, counting the script calls
	// and the commands run inside them on this test's keys.
	var evals, inner int
	var seen []string
	drain := func() bool {
		e.rc.Get(ctx, mark)
		for {
			var l string
			select {
			case l = <-lines:
			case <-time.After(30 * time.Second):
				return false
			}
			if strings.Contains(l, mark) {
				return true
			}
			if !strings.Contains(l, tag) {
				continue
			}
			_, rest, _ := strings.Cut(l, "]")
			verb, _, _ := strings.Cut(strings.TrimSpace(rest), " ")
			verb = strings.ToLower(strings.Trim(verb, `"`))
			switch {
			case strings.HasPrefix(verb, "eval"):
				evals++
			case strings.Contains(l, "lua]"):
				inner++
				seen = append(seen, verb)
			}
		}
	}
	if _, ok := within(30*time.Second, drain); !ok {
		t.Fatal("MONITOR never echoed a command")
	}
	evals, inner, seen = 0, 0, nil
	const n = 5
	for i := range n {
		if code, body := send(t, e.urls[0]+"/v1/chat/completions", "sk-redis-count", chat3); code != 200 {
			t.Fatal(code, body)
		}
		if _, ok := within(30*time.Second, func() bool { return drain() && evals >= 2*(i+1) }); !ok {
			t.Fatalf("request %d: saw %d script calls in all, want %d", i, evals, 2*(i+1))
		}
	}
	// Per request: hold ZCOUNT + budget HMGET, HSET; rpm and tpm HMGET,
	// HSET each; parallel ZCARD, ZADD, PEXPIRE. Settle: budget HMGET,
	// HSET, HDEL; tpm HMGET, HSET; parallel ZREM. 16, and a window's
	// PEXPIRE when a request opens a new slot (at most 3).
	if evals != 2*n || inner > 19*n {
		t.Fatalf("%d requests: %d script calls, %d commands inside them on our keys (want %d and at most %d): %v", n, evals, inner, 2*n, 19*n, seen)
	}
	t.Logf("%d requests: %d commands inside the scripts on our keys: %v", n, inner, seen)
}
