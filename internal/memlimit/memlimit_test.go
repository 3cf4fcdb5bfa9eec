package memlimit

import (
	"math"
	"runtime/debug"
	"strconv"
	"strings"
	"testing"
	"testing/fstest"
)

func file(s string) *fstest.MapFile { return &fstest.MapFile{Data: []byte(s)} }

func TestCgroupLimit(t *testing.T) {
	tests := []struct {
		name  string
		fsys  fstest.MapFS
		limit int64
		ok    bool
	}{
		{"v2 in a namespace", fstest.MapFS{
			"proc/self/cgroup":         file("0::/\n"),
			"sys/fs/cgroup/memory.max": file("268435456\n"),
		}, 268435456, true},
		{"v2 below the mount", fstest.MapFS{
			"proc/self/cgroup": file("0::/system.slice/tollgate.service\n"),
			"sys/fs/cgroup/system.slice/tollgate.service/memory.max": file("536870912\n"),
			"sys/fs/cgroup/memory.max":                               file("max\n"),
		}, 536870912, true},
		{"v2 without a limit", fstest.MapFS{
			"proc/self/cgroup":         file("0::/\n"),
			"sys/fs/cgroup/memory.max": file("max\n"),
		}, 0, false},
		{"v1 below the mount", fstest.MapFS{
			"proc/self/cgroup": file("5:devices:/\n4:memory:/process_api/abc\n3:cpu,cpuacct:/\n"),
			"sys/fs/cgroup/memory/process_api/abc/memory.limit_in_bytes": file("1073741824\n"),
		}, 1073741824, true},
		{"v1 in a namespace", fstest.MapFS{
			"proc/self/cgroup":                           file("4:memory:/docker/0123\n"),
			"sys/fs/cgroup/memory/memory.limit_in_bytes": file("209715200\n"),
		}, 209715200, true},
		{"v1 without a limit (MaxInt64 rounded to a page)", fstest.MapFS{
			"proc/self/cgroup": file("4:memory:/process_api/abc\n"),
			"sys/fs/cgroup/memory/process_api/abc/memory.limit_in_bytes": file("9223372036854771712\n"),
		}, 0, false},
		{"hybrid: v2 listed without a memory controller file, v1 limited", fstest.MapFS{
			"proc/self/cgroup": file("4:memory:/a\n0::/a\n"),
			"sys/fs/cgroup/memory/a/memory.limit_in_bytes": file("104857600\n"),
		}, 104857600, true},
		{"no cgroup file", fstest.MapFS{}, 0, false},
		{"garbage", fstest.MapFS{
			"proc/self/cgroup":         file("0::/\n"),
			"sys/fs/cgroup/memory.max": file("lots\n"),
		}, 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			limit, ok := Cgroup(tt.fsys)
			if limit != tt.limit || ok != tt.ok {
				t.Errorf("Cgroup = %d, %v; want %d, %v", limit, ok, tt.limit, tt.ok)
			}
		})
	}
}

func TestParse(t *testing.T) {
	tests := []struct {
		in   string
		want int64
	}{
		{"1048576", 1 << 20},
		{"512MiB", 512 << 20},
		{"2GiB", 2 << 30},
		{"64KiB", 64 << 10},
		{"100B", 100},
		{"1TiB", 1 << 40},
		{"off", math.MaxInt64},
	}
	for _, tt := range tests {
		if got, err := Parse(tt.in); err != nil || got != tt.want {
			t.Errorf("Parse(%q) = %d, %v; want %d", tt.in, got, err, tt.want)
		}
	}
	for _, bad := range []string{"", "0", "-5MiB", "12MB", "1.5GiB", "lots", "9999999999TiB"} {
		if _, err := Parse(bad); err == nil || !strings.Contains(err.Error(), strconv.Quote(bad)) {
			t.Errorf("Parse(%q) = %v; want an error naming the value", bad, err)
		}
	}
}

func env(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

// cgroup256 is a container limited to 256 MiB (cgroup v2).
var cgroup256 = fstest.MapFS{
	"proc/self/cgroup":         file("0::/\n"),
	"sys/fs/cgroup/memory.max": file("268435456\n"),
}

func TestChoose(t *testing.T) {
	tests := []struct {
		name       string
		env        map[string]string
		configured string
		fsys       fstest.MapFS
		want       int64
		src        Source
	}{
		{"derived from the cgroup", nil, "", cgroup256, 241591910, FromCgroup},
		{"config wins over the cgroup", nil, "100MiB", cgroup256, 100 << 20, FromConfig},
		{"config off wins over the cgroup", nil, "off", cgroup256, math.MaxInt64, FromConfig},
		{"no cgroup limit: none", nil, "", fstest.MapFS{}, math.MaxInt64, None},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, src, err := Choose(env(tt.env), tt.configured, tt.fsys)
			if err != nil || got != tt.want || src != tt.src {
				t.Errorf("Choose = %d, %s, %v; want %d, %s", got, src, err, tt.want, tt.src)
			}
		})
	}
	if _, _, err := Choose(env(nil), "12MB", cgroup256); err == nil {
		t.Error("Choose accepted a memory_limit of 12MB")
	}
}

// TestApplyLeavesGOMEMLIMITAlone: with GOMEMLIMIT in the environment the
// runtime's limit (applied from it at start) is kept, whatever the config
// and the cgroup say; otherwise the chosen limit is set.
func TestApplyLeavesGOMEMLIMITAlone(t *testing.T) {
	prev := debug.SetMemoryLimit(-1)
	t.Cleanup(func() { debug.SetMemoryLimit(prev) })

	debug.SetMemoryLimit(300 << 20) // as GOMEMLIMIT=300MiB would have
	got, src, err := Apply(env(map[string]string{"GOMEMLIMIT": "300MiB"}), "100MiB", cgroup256)
	if err != nil || src != FromEnv || got != 300<<20 {
		t.Errorf("Apply with GOMEMLIMIT = %d, %s, %v; want %d, GOMEMLIMIT", got, src, err, 300<<20)
	}
	if l := debug.SetMemoryLimit(-1); l != 300<<20 {
		t.Errorf("runtime limit = %d after Apply with GOMEMLIMIT; want it untouched (%d)", l, 300<<20)
	}

	if _, src, err := Apply(env(nil), "", cgroup256); err != nil || src != FromCgroup {
		t.Fatalf("Apply from the cgroup: %s, %v", src, err)
	}
	if l, want := debug.SetMemoryLimit(-1), int64(241591910); l != want {
		t.Errorf("runtime limit = %d after Apply from a 256 MiB cgroup; want %d", l, want)
	}

	if _, _, err := Apply(env(nil), "100MiB", cgroup256); err != nil {
		t.Fatal(err)
	}
	if l := debug.SetMemoryLimit(-1); l != 100<<20 {
		t.Errorf("runtime limit = %d after Apply of memory_limit 100MiB; want %d", l, 100<<20)
	}

	if _, _, err := Apply(env(nil), "bad", cgroup256); err == nil {
		t.Error("Apply accepted a memory_limit of bad")
	}
	if l := debug.SetMemoryLimit(-1); l != 100<<20 {
		t.Errorf("runtime limit = %d after a refused memory_limit; want it unchanged (%d)", l, 100<<20)
	}
}
