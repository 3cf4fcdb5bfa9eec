package procmem

import (
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// smapsEntry is one mapping of /proc/self/smaps with its Anonymous line.
func smapsEntry(header string, anonKB int) string {
	return header + "\nSize:               4 kB\nRss:                4 kB\nAnonymous:          " + strconv.Itoa(anonKB) + " kB\nVmFlags: rd mr mw me\n"
}

func TestReadOnlySpans(t *testing.T) {
	smaps := smapsEntry("00400000-01a3c000 r-xp 00000000 08:01 123 /usr/local/bin/tollgate", 0) +
		smapsEntry("01a3c000-0400a000 r--p 0163c000 08:01 123 /usr/local/bin/tollgate", 0) +
		// RELRO: relocated, then made read-only; its written pages are anonymous.
		smapsEntry("0400a000-0400c000 r--p 03c0a000 08:01 123 /usr/local/bin/tollgate", 8) +
		smapsEntry("0400c000-04051000 rw-p 03c0c000 08:01 123 /usr/local/bin/tollgate", 0) +
		smapsEntry("04051000-040b6000 rw-p 00000000 00:00 0", 0) +
		smapsEntry("c000000000-c004000000 rw-p 00000000 00:00 0", 4) +
		// A cgo build's shared libraries: their code and read-only data
		// go, their RELRO (written by the loader) and data do not.
		smapsEntry("7f1000000000-7f1000028000 r--p 00000000 08:01 456 /usr/lib/x86_64-linux-gnu/libc.so.6", 0) +
		smapsEntry("7f1000028000-7f10001bd000 r-xp 00028000 08:01 456 /usr/lib/x86_64-linux-gnu/libc.so.6", 0) +
		smapsEntry("7f10001bd000-7f1000215000 r--p 001bd000 08:01 456 /usr/lib/x86_64-linux-gnu/libc.so.6", 0) +
		smapsEntry("7f1000215000-7f1000219000 r--p 00214000 08:01 456 /usr/lib/x86_64-linux-gnu/libc.so.6", 16) +
		smapsEntry("7f1000219000-7f100021b000 rw-p 00218000 08:01 456 /usr/lib/x86_64-linux-gnu/libc.so.6", 8) +
		smapsEntry("7f1000300000-7f1000301000 r--p 00000000 08:01 789 /tmp/my tollgate (deleted)", 0) +
		// Not files, or not private: never.
		smapsEntry("7f2000002000-7f2000003000 r--s 00000000 08:01 123 /dev/shm/segment", 0) +
		smapsEntry("7ffc00000000-7ffc00021000 rw-p 00000000 00:00 0 [stack]", 132) +
		smapsEntry("7ffc10000000-7ffc10004000 r--p 00000000 00:00 0 [vvar]", 0) +
		smapsEntry("7ffc10004000-7ffc10006000 r-xp 00000000 00:00 0 [vdso]", 0) +
		smapsEntry("7ffc20000000-7ffc20001000 ---p 00000000 08:01 456 /usr/lib/x86_64-linux-gnu/libc.so.6", 0)
	got := readOnlySpans([]byte(smaps))
	want := []span{
		{0x400000, 0x1a3c000}, {0x1a3c000, 0x400a000},
		{0x7f1000000000, 0x7f1000028000}, {0x7f1000028000, 0x7f10001bd000}, {0x7f10001bd000, 0x7f1000215000},
		{0x7f1000300000, 0x7f1000301000},
	}
	if !slices.Equal(got, want) {
		t.Errorf("readOnlySpans = %x;\nwant %x\n(the executable's and the libraries' code and read-only data, a deleted binary's too; not a RELRO with written pages, a data segment, a shared mapping, [vdso] or [vvar])", got, want)
	}
}

// rssFile is the process's resident file-backed memory in kB.
func rssFile(t *testing.T) int {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Skip("no /proc/self/status")
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "RssFile:"); ok {
			n, _ := strconv.Atoi(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")))
			return n
		}
	}
	t.Skip("no RssFile")
	return 0
}

// TestReleaseDropsTheBinarysPages: the test binary's touched pages leave
// its RSS, and the process (its data written before included) carries on.
func TestReleaseDropsTheBinarysPages(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("linux only")
	}
	written := map[string]int{"a": 1} // heap and data written before stay
	before := rssFile(t)
	n, err := Release()
	if err != nil {
		t.Fatal(err)
	}
	after := rssFile(t)
	if n == 0 || after >= before {
		t.Errorf("Release covered %d bytes; RssFile %d kB before, %d kB after: want it lower", n, before, after)
	}
	if written["a"] != 1 || strings.Repeat("x", 3) != "xxx" {
		t.Error("the process lost its state")
	}
	t.Logf("Release covered %d MB; RssFile %d kB before, %d kB after", n>>20, before, after)
}
