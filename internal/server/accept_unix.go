//go:build unix

package server

import (
	"errors"
	"net"
	"syscall"
)

// readAvailable reads what has arrived on c without waiting: n > 0 bytes
// read, 0 at the end of the stream or on an error, -1 when nothing has
// arrived yet.
func readAvailable(c net.Conn, buf []byte) (int, error) {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return -1, nil
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return 0, err
	}
	n, rerr := 0, error(nil)
	if err := rc.Read(func(fd uintptr) bool {
		n, rerr = syscall.Read(int(fd), buf)
		return true // one attempt: never wait for the poller
	}); err != nil {
		return 0, err
	}
	if errors.Is(rerr, syscall.EAGAIN) {
		return -1, nil
	}
	if rerr != nil || n < 0 {
		return 0, rerr
	}
	return n, nil
}

// writeAvailable writes what c's send buffer takes of b without waiting.
func writeAvailable(c net.Conn, b []byte) (int, error) {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return 0, errors.New("not a socket")
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return 0, err
	}
	n, werr := 0, error(nil)
	if err := rc.Write(func(fd uintptr) bool {
		n, werr = syscall.Write(int(fd), b)
		return true
	}); err != nil {
		return 0, err
	}
	if n < 0 {
		n = 0
	}
	return n, werr
}

// pending reports whether bytes have arrived on c that nobody has read:
// a request net/http is about to read.
func pending(c net.Conn) bool {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return false
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	n := 0
	_ = rc.Control(func(fd uintptr) {
		var b [1]byte
		n, _, _ = syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
	})
	return n > 0
}
