//go:build linux && (amd64 || arm64)

package server

import (
	"net"
	"syscall"
	"time"
	"unsafe"
)

// queueDelayMeasured: the kernel reports a connection's tcpi_last_data_recv.
const queueDelayMeasured = true

// tcpInfoHead is struct tcp_info up to tcpi_last_data_recv (linux/tcp.h):
// eight one-byte fields, then u32s; the kernel copies as many bytes as
// asked for.
type tcpInfoHead struct {
	_            [8]uint8
	_            [9]uint32 // rto, ato, snd_mss, rcv_mss, unacked, sacked, lost, retrans, fackets
	_            [2]uint32 // last_data_sent, last_ack_sent
	lastDataRecv uint32    // ms since the last data segment arrived (jiffies: 1–10 ms steps)
}

// queueDelay reads how long ago the connection's last data segment
// arrived: for a request whose bytes came in before the gateway got to
// them, how long they waited (in the accept queue, then unread).
func (c *leanConn) queueDelay() (time.Duration, bool) {
	if c.raw == nil {
		tc, ok := c.gc.Conn.(*net.TCPConn)
		if !ok {
			return 0, false
		}
		rc, err := tc.SyscallConn()
		if err != nil {
			return 0, false
		}
		c.raw = rc
		c.rawCtl = c.readTCPInfo
	}
	c.rawErr = true
	if c.raw.Control(c.rawCtl) != nil || c.rawErr {
		return 0, false
	}
	return time.Duration(c.lastRecv) * time.Millisecond, true
}

// readTCPInfo is queueDelay's getsockopt, on the connection's descriptor.
func (c *leanConn) readTCPInfo(fd uintptr) {
	var info tcpInfoHead
	n := uint32(unsafe.Sizeof(info))
	_, _, e := syscall.Syscall6(syscall.SYS_GETSOCKOPT, fd, syscall.IPPROTO_TCP, syscall.TCP_INFO,
		uintptr(unsafe.Pointer(&info)), uintptr(unsafe.Pointer(&n)), 0)
	if e != 0 || n < uint32(unsafe.Sizeof(info)) {
		return
	}
	c.lastRecv, c.rawErr = info.lastDataRecv, false
}
