package procmem

import (
	"os"
	"strings"
	"syscall"
)

// Release unmaps the resident pages of the executable's code and
// read-only data (MADV_DONTNEED on its private, non-writable mappings
// that hold no page the process wrote)
// and returns how many bytes of address space it covered. The pages stay
// in the page cache; a later touch maps them back (a minor fault).
func Release() (int64, error) {
	exe, err := os.Readlink("/proc/self/exe")
	if err != nil {
		return 0, err
	}
	exe = strings.TrimSuffix(exe, " (deleted)")
	smaps, err := os.ReadFile("/proc/self/smaps")
	if err != nil {
		return 0, err
	}
	var n int64
	for _, s := range readOnlySpans(smaps, exe) {
		if _, _, e := syscall.Syscall(syscall.SYS_MADVISE, s.start, s.end-s.start, syscall.MADV_DONTNEED); e != 0 {
			return n, e
		}
		n += int64(s.end - s.start)
	}
	return n, nil
}
