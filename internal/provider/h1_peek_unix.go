//go:build unix

package provider

import "syscall"

// peekAlive reports whether an idle connection is still open: a
// non-blocking peek that finds nothing to read (EAGAIN). End of stream
// (the server closed it), an error, or bytes the server sent unasked all
// mean it cannot carry a request.
func (pc *h1Conn) peekAlive() bool {
	if pc.rc == nil {
		return true
	}
	pc.peekOK = false
	if err := pc.rc.Read(pc.peekFn); err != nil {
		return false
	}
	return pc.peekOK
}

func (pc *h1Conn) peekProbe(fd uintptr) bool {
	_, _, err := syscall.Recvfrom(int(fd), pc.peekB[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
	pc.peekOK = err == syscall.EAGAIN || err == syscall.EWOULDBLOCK
	return true
}
