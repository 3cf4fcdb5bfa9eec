// Package procmem hands back the resident pages of the process's own
// executable that its start touched (docs/performance.md, "Issue 31:
// memory at load"). Linux maps the binary's code and read-only data
// from the page cache and counts every page the process has touched in
// its RSS (RssFile), with the 64 KB around each fault; at start the
// package inits, the config, the store's migrations and the key load
// touch far more of them than serving does. Release unmaps the
// read-only ones: they stay in the page cache, and the next touch maps
// them back with a minor fault, so only what is used after stays
// resident.
package procmem

import (
	"bufio"
	"bytes"
	"strconv"
	"strings"
)

// span is a range of addresses [start, end).
type span struct{ start, end uintptr }

// readOnlySpans returns the mappings in maps (/proc/self/maps) of the
// file exe that are private and not writable: its code and read-only
// data. Writable mappings (the data segment, copied on write) are never
// returned: dropping them would lose what the process wrote there.
func readOnlySpans(maps []byte, exe string) []span {
	var out []span
	sc := bufio.NewScanner(bytes.NewReader(maps))
	for sc.Scan() {
		// address perms offset dev inode pathname
		f := strings.Fields(sc.Text())
		if len(f) < 6 || strings.TrimSuffix(strings.Join(f[5:], " "), " (deleted)") != exe {
			continue
		}
		perms := f[1]
		if len(perms) != 4 || perms[0] != 'r' || perms[1] != '-' || perms[3] != 'p' {
			continue
		}
		lo, hi, ok := strings.Cut(f[0], "-")
		if !ok {
			continue
		}
		start, err1 := strconv.ParseUint(lo, 16, 64)
		end, err2 := strconv.ParseUint(hi, 16, 64)
		if err1 != nil || err2 != nil || end <= start {
			continue
		}
		out = append(out, span{uintptr(start), uintptr(end)})
	}
	return out
}
