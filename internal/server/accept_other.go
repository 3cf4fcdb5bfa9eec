//go:build !unix

package server

import (
	"net"
	"time"
)

// readAvailable: without unix sockets' non-blocking reads, nothing is read
// (-1: nothing has arrived); a connection past the bound then waits for
// its first bytes on a sniffing goroutine, or is refused.
func readAvailable(net.Conn, []byte) (int, error) { return -1, nil }

// writeAvailable writes b with a short deadline.
func writeAvailable(c net.Conn, b []byte) (int, error) {
	_ = c.SetWriteDeadline(time.Now().Add(10 * time.Millisecond))
	return c.Write(b)
}

// pending: not known without unix sockets.
func pending(net.Conn) bool { return false }
