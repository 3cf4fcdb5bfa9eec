//go:build linux

package server

import (
	"net"
	"syscall"
)

// deferAccept asks the kernel to hand ln's connections to accept only once
// their first bytes have arrived (TCP_DEFER_ACCEPT, as nginx's "deferred"):
// a connection past the bound is then decided on its request line at
// once, rather than on a sniffing goroutine (connGate.past); one whose
// client sends nothing waits in the kernel, not in the gateway. The
// kernel still hands a silent connection over after about a second.
func deferAccept(ln net.Listener) {
	tl, ok := ln.(*net.TCPListener)
	if !ok {
		return
	}
	rc, err := tl.SyscallConn()
	if err != nil {
		return
	}
	_ = rc.Control(func(fd uintptr) {
		_ = syscall.SetsockoptInt(int(fd), syscall.IPPROTO_TCP, syscall.TCP_DEFER_ACCEPT, 1)
	})
}
