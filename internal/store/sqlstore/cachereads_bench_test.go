package sqlstore_test

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tollgate/tollgate/internal/store"
	"github.com/tollgate/tollgate/internal/store/sqlstore"
)

// BenchmarkSpendReadsByCacheSize measures what the page cache's size costs
// the spend writer: on a copy of a store of many keys (the bench's,
// TOLLGATE_BENCH_STORE, e.g. /tmp/tollgate-bench-keys-100000.db), after
// LoadKeys, batches of 100 spend rows with keys and users drawn at random,
// as the gateway writes them; reported: the page reads from the OS
// (/proc/self/io syscr) and the CPU time per row, and libc's bytes are not
// read here (docs/performance.md, branches anonmem and mem79). The cache
// sizes run alternated, each on a fresh copy.
//
//	TOLLGATE_BENCH_STORE=/tmp/tollgate-bench-keys-100000.db go test -run '^$' -bench SpendReadsByCacheSize -benchtime 1x -count 2 ./internal/store/sqlstore
func BenchmarkSpendReadsByCacheSize(b *testing.B) {
	src := os.Getenv("TOLLGATE_BENCH_STORE")
	if src == "" {
		b.Skip("TOLLGATE_BENCH_STORE unset")
	}
	for _, kib := range []int{1024, 500} {
		b.Run(fmt.Sprintf("cache=%dKiB", kib), func(b *testing.B) {
			var reads, cpu, rows float64
			for range b.N {
				path := filepath.Join(b.TempDir(), "tollgate.db")
				copyFile(b, src, path)
				ctx := context.Background()
				s, err := sqlstore.OpenSQLite(ctx, path)
				if err != nil {
					b.Fatal(err)
				}
				if err := sqlstore.Exec(ctx, s, "PRAGMA cache_size(-"+strconv.Itoa(kib)+")"); err != nil {
					b.Fatal(err)
				}
				var keys []*store.Key
				if err := s.LoadKeys(ctx, func(p []*store.Key) error { keys = append(keys, p...); return nil }); err != nil {
					b.Fatal(err)
				}
				rng := rand.New(rand.NewPCG(7, 7))
				now := time.Now()
				r0, c0 := syscr(b), cpuNow()
				for n := range 200 {
					batch := make([]store.SpendLog, 100)
					for i := range batch {
						k := keys[rng.IntN(len(keys))]
						at := now.Add(time.Duration(n*100+i) * time.Millisecond)
						batch[i] = store.SpendLog{RequestID: fmt.Sprintf("%012x%016x", at.UnixMilli(), rng.Uint64()), ResponseID: "chatcmpl-" + base62(29),
							KeyHash: k.TokenHash, UserID: k.UserID, TeamID: k.TeamID, ModelGroup: "gpt-4o", Deployment: "gpt-4o", Provider: "openai",
							CallType: "acompletion", PromptTokens: 10, CompletionTokens: 8, Cost: 0.0001, Status: 200, StartedAt: at, EndedAt: at}
					}
					if err := s.ApplySpend(ctx, batch); err != nil {
						b.Fatal(err)
					}
				}
				reads += float64(syscr(b) - r0)
				cpu += float64(cpuNow() - c0)
				rows += 200 * 100
				s.Close()
			}
			b.ReportMetric(reads/rows, "preads/row")
			b.ReportMetric(cpu/rows/1e3, "cpu-µs/row")
		})
	}
}

func copyFile(b *testing.B, from, to string) {
	in, err := os.Open(from)
	if err != nil {
		b.Fatal(err)
	}
	defer in.Close()
	out, err := os.Create(to)
	if err != nil {
		b.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		b.Fatal(err)
	}
	if err := out.Close(); err != nil {
		b.Fatal(err)
	}
}

func syscr(b *testing.B) int64 {
	raw, err := os.ReadFile("/proc/self/io")
	if err != nil {
		b.Skip("no /proc/self/io")
	}
	for _, l := range strings.Split(string(raw), "\n") {
		if v, ok := strings.CutPrefix(l, "syscr: "); ok {
			n, _ := strconv.ParseInt(v, 10, 64)
			return n
		}
	}
	b.Fatal("no syscr in /proc/self/io")
	return 0
}

func cpuNow() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
