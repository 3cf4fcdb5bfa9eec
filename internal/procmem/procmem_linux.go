package procmem

import (
	"os"
	"syscall"
)

// Release unmaps the resident pages of the code and read-only data of the
// executable and its shared libraries (MADV_DONTNEED on their private,
// non-writable file mappings that hold no page the process wrote)
// and returns how many bytes of address space it covered. The pages stay
// in the page cache; a later touch maps them back (a minor fault).
func Release() (int64, error) {
	smaps, err := os.ReadFile("/proc/self/smaps")
	if err != nil {
		return 0, err
	}
	var n int64
	for _, s := range readOnlySpans(smaps) {
		if _, _, e := syscall.Syscall(syscall.SYS_MADVISE, s.start, s.end-s.start, syscall.MADV_DONTNEED); e != 0 {
			return n, e
		}
		n += int64(s.end - s.start)
	}
	return n, nil
}
