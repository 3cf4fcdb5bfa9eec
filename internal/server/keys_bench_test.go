package server

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/tollgate/tollgate/internal/auth"
	"github.com/tollgate/tollgate/internal/config"
	"github.com/tollgate/tollgate/internal/memtest"
	"github.com/tollgate/tollgate/internal/store"
	"github.com/tollgate/tollgate/internal/store/sqlstore"
)

// benchKeys is how many keys the start-up benchmarks load (issue #31:
// 100,000 keys).
const benchKeys = 100_000

var (
	seedOnce sync.Once
	seedPath string
	seedErr  error
)

// seededStore is a SQLite store holding benchKeys keys, made through the
// store API once per benchmark binary: keys of 100 users, half with an
// alias, a model list and metadata, as a gateway issuing keys per
// application would hold. The raw key of key i is benchRawKey(i).
func seededStore(b *testing.B) string {
	b.Helper()
	seedOnce.Do(func() {
		dir, err := os.MkdirTemp("", "tollgate-keys-bench") // left for the binary's other benchmarks
		if err != nil {
			seedErr = err
			return
		}
		seedPath = filepath.Join(dir, "keys.db")
		ctx := context.Background()
		st, err := sqlstore.OpenSQLite(ctx, seedPath)
		if err != nil {
			seedErr = err
			return
		}
		defer st.Close()
		now := time.Now().UTC()
		budget := 10.0
		for i := range benchKeys {
			raw := benchRawKey(i)
			k := &store.Key{TokenHash: config.HashKey(raw), KeyName: "sk-..." + raw[len(raw)-4:],
				UserID: fmt.Sprintf("user-%d", i%100), Models: []string{"demo"},
				Metadata: map[string]any{"app": fmt.Sprintf("app-%d", i%10)}, CreatedAt: now, UpdatedAt: now}
			k.MaxBudget = &budget
			if i%2 == 0 {
				alias := fmt.Sprintf("key-%d", i)
				k.KeyAlias = &alias
			}
			if seedErr = st.CreateKey(ctx, k); seedErr != nil {
				return
			}
		}
	})
	if seedErr != nil {
		b.Fatal(seedErr)
	}
	return seedPath
}

func benchRawKey(i int) string { return fmt.Sprintf("sk-bench-%08d", i) }

// BenchmarkSnapshotBytesPerKey loads benchKeys keys (Store.LoadAll) and
// builds the key snapshot, reporting the live heap each holds per key:
// loaded-B/key is the store's records as read, snapshot-B/key what the
// snapshot adds on top (its maps and digest index), and the time each took.
func BenchmarkSnapshotBytesPerKey(b *testing.B) {
	path := seededStore(b)
	st, err := sqlstore.OpenSQLite(context.Background(), path)
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	var loadTime, snapTime, loadCPU, snapCPU time.Duration
	var loaded, built uint64
	b.ResetTimer()
	for range b.N {
		before := memtest.LiveHeap()
		c0 := cpuTime()
		t0 := time.Now()
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		all, err := st.LoadAll(ctx)
		cancel()
		if err != nil {
			b.Fatal(err)
		}
		t1 := time.Now()
		c1 := cpuTime()
		afterLoad := memtest.LiveHeap()
		t2 := time.Now()
		c2 := cpuTime()
		snap := auth.NewSnapshot(all)
		t3 := time.Now()
		c3 := cpuTime()
		all = nil
		afterSnap := memtest.LiveHeap()
		if _, ok := snap.Key(config.HashKey(benchRawKey(7))); !ok {
			b.Fatal("a seeded key is missing from the snapshot")
		}
		loadTime += t1.Sub(t0)
		snapTime += t3.Sub(t2)
		loadCPU += c1 - c0
		snapCPU += c3 - c2
		loaded += afterLoad - before
		built += afterSnap - before
		runtime.KeepAlive(all)
	}
	n := float64(b.N)
	b.ReportMetric(float64(loaded)/n/benchKeys, "loaded-B/key")
	b.ReportMetric(float64(built)/n/benchKeys, "snapshot-B/key")
	b.ReportMetric(float64(loadTime.Milliseconds())/n, "loadall-ms")
	b.ReportMetric(float64(snapTime.Milliseconds())/n, "newsnapshot-ms")
	b.ReportMetric(float64(loadCPU.Milliseconds())/n, "loadall-cpu-ms")
	b.ReportMetric(float64(snapCPU.Milliseconds())/n, "newsnapshot-cpu-ms")
}

// cpuTime is the CPU time (user and system) the process has used: the
// figure that other processes on the machine do not inflate.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkStartupToFirstAnswer100kKeys times a gateway on a store of
// benchKeys keys from server.New to the first answered chat completion
// made with one of them (the demo model answers in process): ns/op and
// first-answer-cpu-ms (the process's CPU time over the same span), then
// all-keys-ms, from New until every key is in the snapshot.
func BenchmarkStartupToFirstAnswer100kKeys(b *testing.B) {
	path := seededStore(b)
	cfg, err := config.Parse("b.yaml", []byte("model_list:\n  - model_name: demo\n    litellm_params: {model: demo/demo}\ngeneral_settings:\n  master_key: sk-1234\n"))
	if err != nil {
		b.Fatal(err)
	}
	body := `{"model":"demo","messages":[{"role":"user","content":"hi"}]}`
	var firstCPU, allKeys time.Duration
	b.ResetTimer()
	for i := range b.N {
		b.StopTimer()
		st, err := sqlstore.OpenSQLite(context.Background(), path)
		if err != nil {
			b.Fatal(err)
		}
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			b.Fatal(err)
		}
		runtime.GC()
		b.StartTimer()
		t0, c0 := time.Now(), cpuTime()
		srv, err := New(cfg, Options{Logger: testLogger, Store: st})
		if err != nil {
			b.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- srv.Serve(ctx, ln) }()
		req, _ := http.NewRequest("POST", "http://"+ln.Addr().String()+"/v1/chat/completions", strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+benchRawKey(i%benchKeys))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		resp.Body.Close()
		b.StopTimer()
		firstCPU += cpuTime() - c0
		if resp.StatusCode != http.StatusOK {
			b.Fatalf("first answer: %d", resp.StatusCode)
		}
		<-srv.snap.Loaded()
		allKeys += time.Since(t0)
		cancel()
		if err := <-done; err != nil {
			b.Fatal(err)
		}
		st.Close()
		b.StartTimer()
	}
	b.ReportMetric(float64(firstCPU.Milliseconds())/float64(b.N), "first-answer-cpu-ms")
	b.ReportMetric(float64(allKeys.Milliseconds())/float64(b.N), "all-keys-ms")
}

// BenchmarkBytesPerUsedKey serves one chat completion with each of
// usedKeys keys of the benchKeys a gateway loaded, then reports the live
// heap the gateway holds per key used on top of the snapshot
// (used-B/key): what a key costs once it has made a request (its ledger
// accounts, its metric series, its record rewritten with its spend),
// which is the steady state of a gateway whose keys are all in use.
func BenchmarkBytesPerUsedKey(b *testing.B) {
	const usedKeys = 10_000
	path := seededStore(b)
	// Priced, so that each key's request costs something: its spend
	// series (metrics_key_labels is on by default) counts too.
	cfg, err := config.Parse("b.yaml", []byte("model_list:\n  - model_name: demo\n    litellm_params: {model: demo/demo, input_cost_per_token: 0.000001, output_cost_per_token: 0.00001}\ngeneral_settings:\n  master_key: sk-1234\n"))
	if err != nil {
		b.Fatal(err)
	}
	body := `{"model":"demo","messages":[{"role":"user","content":"hi"}]}`
	var perKey float64
	for range b.N {
		st, err := sqlstore.OpenSQLite(context.Background(), path)
		if err != nil {
			b.Fatal(err)
		}
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			b.Fatal(err)
		}
		// Not testLogger: it keeps every request's log line in memory.
		log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
		srv, err := New(cfg, Options{Logger: log, Store: st, ResyncInterval: 100 * time.Millisecond})
		if err != nil {
			b.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- srv.Serve(ctx, ln) }()
		<-srv.snap.Loaded()
		// Loaded is closed after a failed load too (its 30 s bound, on a
		// loaded machine): the keys would then come one by one through the
		// miss path, uncompacted, which is not what this measures.
		missing := 0
		for i := range usedKeys {
			if _, ok := srv.snap.Key(config.HashKey(benchRawKey(i))); !ok {
				missing++
			}
		}
		if missing > 0 {
			b.Fatalf("%d of the %d keys to use are not in the snapshot: the key load did not complete (see its warnings above)", missing, usedKeys)
		}
		url := "http://" + ln.Addr().String() + "/v1/chat/completions"
		ask := func(i int) {
			req, _ := http.NewRequest("POST", url, strings.NewReader(body))
			req.Header.Set("Authorization", "Bearer "+benchRawKey(i))
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				b.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				b.Fatalf("key %d: %d", i, resp.StatusCode)
			}
		}
		// Warm the paths first (one key used twice) so that what they
		// allocate once is not counted per key.
		ask(benchKeys - 1)
		ask(benchKeys - 1)
		// Quiet before each reading: the spend rows written and two
		// resyncs completed after that, so that the records rewritten
		// with their keys' spend are in (as on a gateway at rest) and no
		// resync's rows are half applied.
		quiet := func() {
			srv.writer.Flush()
			want := srv.resyncSeq.Load() + 2
			for deadline := time.Now().Add(2 * time.Minute); srv.resyncDone.Load() < want; {
				if time.Now().After(deadline) {
					b.Fatal("no resync completed in 2 minutes")
				}
				time.Sleep(10 * time.Millisecond)
			}
		}
		quiet()
		prof := os.Getenv("TOLLGATE_BENCH_HEAP_PROFILE")
		if prof != "" {
			// Every allocation from here on; the "before" profile is
			// written at the same rate, so that pprof -base leaves only
			// what the used keys added.
			runtime.MemProfileRate = 1
			writeHeapProfile(prof + ".before")
		}
		before := memtest.LiveHeap()
		var wg sync.WaitGroup
		for w := range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := w; i < usedKeys; i += 4 {
					ask(i)
				}
			}()
		}
		wg.Wait()
		quiet()
		after := memtest.LiveHeap()
		if prof != "" {
			writeHeapProfile(prof)
		}
		perKey += (float64(after) - float64(before)) / usedKeys
		cancel()
		if err := <-done; err != nil {
			b.Fatal(err)
		}
		st.Close()
	}
	b.ReportMetric(perKey/float64(b.N), "used-B/key")
}

// writeHeapProfile writes the heap profile as of the last collection to
// path (heapInUse's collections make it current).
func writeHeapProfile(path string) {
	runtime.GC()
	if f, err := os.Create(path); err == nil {
		pprof.WriteHeapProfile(f)
		f.Close()
	}
}
