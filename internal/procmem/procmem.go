// Package procmem hands back the resident pages of the process's own
// executable, and of the shared libraries a dynamically linked build
// loads, that its start touched (docs/performance.md, "Issue 31: memory
// at load" and "the binary's own pages"). Linux maps the binary's code
// and read-only data from the page cache and counts every page the
// process has touched in its RSS (RssFile), with the 64 KB around each
// fault; at start the dynamic loader, the package inits, the config, the
// store's migrations and the key load touch far more of them than
// serving does. Release unmaps the read-only ones: they stay in the page
// cache, and the next touch maps them back with a minor fault, so only
// what is used after stays resident.
package procmem

import (
	"bufio"
	"bytes"
	"strconv"
	"strings"
)

// span is a range of addresses [start, end).
type span struct{ start, end uintptr }

// readOnlySpans returns the mappings in smaps (/proc/self/smaps) of
// files (a path, not "[vdso]" or an anonymous mapping) that are private,
// not writable and hold no anonymous page: the code and read-only data of
// the executable and of the shared libraries (the dynamic loader, libc
// in a cgo build) as their files have them. Writable mappings (the data
// segments) are never returned, nor a read-only one that was written
// before it was made read-only (a PIE build's or a library's relocated
// .data.rel.ro, RELRO): dropping those would lose what the process wrote.
// The pages of a mapping without anonymous pages are the file's, so a
// later touch reads back the same bytes.
func readOnlySpans(smaps []byte) []span {
	var out []span
	var cur span
	candidate := false
	sc := bufio.NewScanner(bytes.NewReader(smaps))
	for sc.Scan() {
		line := sc.Text()
		if v, ok := strings.CutPrefix(line, "Anonymous:"); ok {
			if candidate && strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")) == "0" {
				out = append(out, cur)
			}
			candidate = false
			continue
		}
		// A mapping's header: address perms offset dev inode pathname.
		f := strings.Fields(line)
		if len(f) < 5 || !strings.Contains(f[0], "-") || strings.HasSuffix(f[0], ":") {
			continue
		}
		candidate = false
		if len(f) < 6 || !strings.HasPrefix(f[5], "/") {
			continue
		}
		perms := f[1]
		if len(perms) != 4 || perms[0] != 'r' || perms[1] != '-' || perms[3] != 'p' {
			continue
		}
		lo, hi, _ := strings.Cut(f[0], "-")
		start, err1 := strconv.ParseUint(lo, 16, 64)
		end, err2 := strconv.ParseUint(hi, 16, 64)
		if err1 != nil || err2 != nil || end <= start {
			continue
		}
		cur, candidate = span{uintptr(start), uintptr(end)}, true
	}
	return out
}
