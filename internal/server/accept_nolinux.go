//go:build !linux

package server

import "net"

// deferAccept: TCP_DEFER_ACCEPT is Linux's; elsewhere a connection past
// the bound whose bytes have not arrived waits on a sniffing goroutine.
func deferAccept(net.Listener) {}
