// Package netsim plays network failures for tests: a TCP proxy in front of a
// real server (PostgreSQL, Redis) that can be cut and restored, or turned
// into a black hole, so a test can take a dependency "down" without
// touching the shared service.
package netsim

import (
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// Proxy forwards a loopback port to a target address.
type Proxy struct {
	target, addr string
	mu           sync.Mutex
	ln           net.Listener
	conns        []net.Conn
	holed        bool         // black hole: accept, read, never answer
	held         []net.Conn   // client connections the black hole keeps open
	deaf         atomic.Bool  // DropReplies: requests go through, answers do not
	delay        atomic.Int64 // Delay: ns each read of a client's request waits before it goes on
	// stalled are the client connections Stall holds back, and the channel
	// Restore closes to let what they sent through.
	stalled map[net.Conn]chan struct{}
}

// NewProxy listens on a free loopback port and forwards to target.
func NewProxy(target string) (*Proxy, error) {
	ln, err := listenFixable()
	if err != nil {
		return nil, err
	}
	p := &Proxy{target: target, addr: ln.Addr().String()}
	p.serve(ln)
	return p, nil
}

// Addr is the proxy's host:port.
func (p *Proxy) Addr() string { return p.addr }

func (p *Proxy) serve(ln net.Listener) {
	p.mu.Lock()
	p.ln = ln
	p.mu.Unlock()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			p.mu.Lock()
			holed := p.holed
			if holed {
				p.held = append(p.held, c)
			}
			p.mu.Unlock()
			if holed {
				go p.swallow(c)
				continue
			}
			u, err := net.Dial("tcp", p.target)
			if err != nil {
				c.Close()
				continue
			}
			// BlackHole may have run while this connection was dialled: it
			// cleared p.conns before this one was in, so check again under
			// the lock (a connection forwarded past the black hole let
			// TestDatabaseBlackHole's store calls through).
			p.mu.Lock()
			holed = p.holed
			if holed {
				p.held = append(p.held, c)
			} else {
				p.conns = append(p.conns, c, u)
			}
			p.mu.Unlock()
			if holed {
				u.Close()
				go p.swallow(c)
				continue
			}
			go func() {
				p.forward(u, c)
				u.Close()
				if p.holding(c) {
					p.swallow(c)
				}
			}()
			go func() {
				p.reply(c, u)
				if !p.holding(c) {
					c.Close()
				}
			}()
		}
	}()
}

// reply copies the target's answers on u to the client c, dropping them
// while DropReplies is in force.
func (p *Proxy) reply(c, u net.Conn) {
	buf := make([]byte, 32<<10)
	for {
		n, err := u.Read(buf)
		if n > 0 && !p.deaf.Load() {
			if _, werr := c.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// forward copies what the client c sends to the target on u, holding it
// back while Stall holds c.
func (p *Proxy) forward(u, c net.Conn) {
	buf := make([]byte, 32<<10)
	for {
		n, err := c.Read(buf)
		if n > 0 {
			p.mu.Lock()
			gate := p.stalled[c]
			p.mu.Unlock()
			if gate != nil {
				<-gate
			}
			if d := p.delay.Load(); d > 0 {
				time.Sleep(time.Duration(d))
			}
			if _, werr := u.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// Stall holds back what clients send on the connections open now, even
// after the client gives up and closes its end, until Restore delivers it
// to the target (a request delayed in the network, or queued behind a
// busy target, that runs after its caller stopped waiting). New
// connections are forwarded as usual.
func (p *Proxy) Stall() {
	p.mu.Lock()
	defer p.mu.Unlock()
	gate := make(chan struct{})
	if p.stalled == nil {
		p.stalled = map[net.Conn]chan struct{}{}
	}
	for i := 0; i < len(p.conns); i += 2 {
		p.stalled[p.conns[i]] = gate
	}
}

// Delay makes what clients send, on connections open and new, reach the
// target d late (each read of it, so requests sent together wait once,
// and a request queued behind a delayed one waits after it): a slow
// network or a target slow to take requests. The request still reaches
// the target if its client gives up meanwhile. Restore ends it.
func (p *Proxy) Delay(d time.Duration) { p.delay.Store(int64(d)) }

// DropReplies lets what clients send reach the target, on connections
// open and new, but drops every answer: the target acts on a request whose
// reply is lost (a connection that dies after the request went out).
// Restore ends it.
func (p *Proxy) DropReplies() { p.deaf.Store(true) }

// swallow reads and drops what c sends until it is closed.
func (p *Proxy) swallow(c net.Conn) { _, _ = io.Copy(io.Discard, c); c.Close() }

// holding reports whether c was kept open by BlackHole.
func (p *Proxy) holding(c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, h := range p.held {
		if h == c {
			return true
		}
	}
	return false
}

// Cut closes the listener and every connection: the target is "down".
func (p *Proxy) Cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ln != nil {
		p.ln.Close()
		p.ln = nil
	}
	for _, c := range append(p.conns, p.held...) {
		c.Close()
	}
	p.conns, p.held, p.holed = nil, nil, false
	p.unstall()
}

// unstall lets what Stall held back go (p.mu held).
func (p *Proxy) unstall() {
	for c, gate := range p.stalled {
		select {
		case <-gate:
		default:
			close(gate)
		}
		delete(p.stalled, c)
	}
}

// BlackHole makes the target stop answering without refusing anything: new
// connections are accepted and what they send is read and dropped, and
// connections already open stay open but get no further reply (as a host
// whose packets are dropped, or a database that hangs).
func (p *Proxy) BlackHole() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.holed = true
	for i := 0; i+1 < len(p.conns); i += 2 {
		c, u := p.conns[i], p.conns[i+1]
		p.held = append(p.held, c)
		u.Close() // the client side stays open, unanswered
	}
	p.conns = nil
}

// Restore brings the target back after Cut, BlackHole, DropReplies,
// Delay or Stall: the proxy listens again on the same port and forwards new
// connections; connections the black hole held are closed; what Stall
// held back goes through.
func (p *Proxy) Restore() error {
	p.deaf.Store(false)
	p.delay.Store(0)
	p.mu.Lock()
	p.holed = false
	p.unstall()
	for _, c := range p.held {
		c.Close()
	}
	p.held = nil
	listening := p.ln != nil
	p.mu.Unlock()
	if listening {
		return nil
	}
	ln, err := net.Listen("tcp", p.addr)
	if err != nil {
		return err
	}
	p.serve(ln)
	return nil
}

// listenFixable listens on a free loopback port below the kernel's
// ephemeral range: Restore listens on the same port again after Cut, and a
// port from the ephemeral range (what port 0 gives) may meanwhile be the
// local end of some outgoing connection (CI saw "bind: address already in
// use" there). Below the range only another listener can take it.
func listenFixable() (net.Listener, error) {
	low := ephemeralLow()
	const first = 10000
	if low > first+1000 {
		for range 200 {
			port := first + rand.IntN(low-first)
			if ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port)); err == nil {
				return ln, nil
			}
		}
	}
	return net.Listen("tcp", "127.0.0.1:0")
}

// ephemeralLow is the first port of the kernel's ephemeral range (Linux's
// ip_local_port_range; its default, 32768, elsewhere).
func ephemeralLow() int {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	low := 0
	if err == nil {
		fmt.Sscan(string(b), &low)
	}
	if low <= 0 {
		low = 32768
	}
	return low
}
