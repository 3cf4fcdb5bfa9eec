package bench

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/tollgate/tollgate/internal/store"
	"github.com/tollgate/tollgate/internal/store/sqlstore"
)

// keySet is whom a run's requests are made as: one key, or (n > 0) a
// key drawn at random for each request from the n seeded ones.
type keySet struct {
	one string
	n   int
}

func (k keySet) pick() string {
	if k.n > 0 {
		return seededKey(rand.IntN(k.n))
	}
	return k.one
}

// seededKey is the raw key i of the seeded store.
func seededKey(i int) string { return fmt.Sprintf("sk-bench-%08d", i) }

// seedsMany says whether a scenario takes the seeded keys (--keys): the
// governed ones on SQLite.
func seedsMany(sc string) bool {
	switch sc {
	case "governed", "traced", "logged", "observed", "cached", "cached-miss":
		return true
	}
	return false
}

// seedKeys puts a store of n keys at path: keys of 100 users, half with
// an alias, a model list, metadata and a max budget that never binds (the
// shape of the server package's key benchmarks). The store is made once
// per n in the temporary directory (through the store API, a minute or
// two for 100,000 keys) and copied after.
func seedKeys(path string, n int, out io.Writer) error {
	cached := filepath.Join(os.TempDir(), "tollgate-bench-keys-"+strconv.Itoa(n)+".db")
	if _, err := os.Stat(cached); err != nil {
		fmt.Fprintf(out, "seeding %d keys into %s (once)\n", n, cached)
		if err := makeSeed(cached+".tmp", n); err != nil {
			os.Remove(cached + ".tmp")
			return err
		}
		if err := os.Rename(cached+".tmp", cached); err != nil {
			return err
		}
	}
	b, err := os.ReadFile(cached)
	if err != nil {
		return err
	}
	return os.WriteFile(path, b, 0o600)
}

func makeSeed(path string, n int) error {
	ctx := context.Background()
	os.Remove(path)
	st, err := sqlstore.OpenSQLite(ctx, path)
	if err != nil {
		return err
	}
	now := time.Now().UTC()
	budget := 1e6
	for i := range n {
		raw := seededKey(i)
		k := &store.Key{TokenHash: hashKey(raw), KeyName: "sk-..." + raw[len(raw)-4:],
			UserID: fmt.Sprintf("user-%d", i%100), Models: []string{"gpt-4"},
			Metadata: map[string]any{"app": fmt.Sprintf("app-%d", i%10)}, CreatedAt: now, UpdatedAt: now}
		k.MaxBudget = &budget
		if i%2 == 0 {
			alias := fmt.Sprintf("key-%d", i)
			k.KeyAlias = &alias
		}
		if err := st.CreateKey(ctx, k); err != nil {
			st.Close()
			return err
		}
	}
	return st.Close()
}

// waitKeysLoaded waits (up to a minute) for the gateway's log in dir to
// say the keys read at start-up are in.
func waitKeysLoaded(logPath string) error {
	deadline := time.Now().Add(time.Minute)
	for time.Now().Before(deadline) {
		if b, _ := os.ReadFile(logPath); strings.Contains(string(b), "keys loaded") {
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("the keys were not loaded within a minute (%s)", logPath)
}

// memory is a process's resident set as /proc/PID/status has it, in MB:
// now, its high-water mark, and the anonymous and file-backed parts.
type memory struct{ rss, hwm, anon, file float64 }

func readMemory(pid int) memory {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return memory{}
	}
	var m memory
	for _, line := range strings.Split(string(b), "\n") {
		name, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		kb, _ := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 64)
		switch name {
		case "VmRSS":
			m.rss = kb / 1024
		case "VmHWM":
			m.hwm = kb / 1024
		case "RssAnon":
			m.anon = kb / 1024
		case "RssFile":
			m.file = kb / 1024
		}
	}
	return m
}

func (m memory) String() string {
	return fmt.Sprintf("RSS %.0f MB (anonymous %.0f MB, file %.0f MB), peak %.0f MB", m.rss, m.anon, m.file, m.hwm)
}

// resetPeak sets the process's high-water mark back to its RSS now
// (clear_refs 5), so that the peak read after a run is the run's.
func resetPeak(pid int) {
	_ = os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", pid), []byte("5"), 0)
}

// hashKey is a raw key's token hash (sha256, lower-case hex).
func hashKey(raw string) string {
	sum := sha256.Sum256([]byte(raw))
	return hex.EncodeToString(sum[:])
}
