package netsim

import (
	"io"
	"net"
	"strconv"
	"testing"
)

// TestProxyPortOutsideEphemeralRange: the proxy's port is below the
// kernel's ephemeral range, so that after Cut no outgoing connection can
// take it before Restore listens on it again; and Cut then Restore serves
// again on the same address.
func TestProxyPortOutsideEphemeralRange(t *testing.T) {
	target, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer target.Close()
	go func() {
		for {
			c, err := target.Accept()
			if err != nil {
				return
			}
			go func() { io.Copy(c, c); c.Close() }()
		}
	}()
	low := ephemeralLow()
	for range 20 {
		p, err := NewProxy(target.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		_, port, _ := net.SplitHostPort(p.Addr())
		if n, _ := strconv.Atoi(port); n >= low {
			t.Fatalf("proxy port %d is in the ephemeral range (from %d)", n, low)
		}
		p.Cut()
		if _, err := net.Dial("tcp", p.Addr()); err == nil {
			t.Fatal("a cut proxy accepted a connection")
		}
		if err := p.Restore(); err != nil {
			t.Fatal(err)
		}
		c, err := net.Dial("tcp", p.Addr())
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.Write([]byte("ping")); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 4)
		if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "ping" {
			t.Fatalf("after Restore: %q, %v", buf, err)
		}
		c.Close()
		p.Cut()
	}
}
