//go:build linux

package iopool

import (
	"net"
	"sync"
	"time"
)

// NetPacketConn returns ps as a net.PacketConn for code that runs on plain
// goroutines. Its methods may be called from any goroutine and
// concurrently (reads are serialized among themselves, and so are writes);
// a call that must wait parks its goroutine in the Go runtime's network
// poller, as NetConn's do. ReadFrom reports a datagram larger than p with
// an error wrapping ErrTruncated after filling p; deadlines and Close
// behave as NetConn's.
//
// The net.PacketConn takes over ps, which leaves the pool's epoll set: a
// task that waits on ps from then on panics.
func (ps *PacketSocket) NetPacketConn() net.PacketConn {
	c := &netPacketConn{ps: ps}
	c.gp, c.err = ps.s.attachGoPoll()
	return c
}

// netPacketConn is a PacketSocket seen from plain goroutines: its reads
// and writes are the PacketSocket's, waiting in the runtime's poller.
type netPacketConn struct {
	ps       *PacketSocket
	gp       *goPoll
	err      error      // why gp could not be made: every call fails with it
	rmu, wmu sync.Mutex // serialize readers (gp.read), writers (gp.write)
}

var _ net.PacketConn = (*netPacketConn)(nil)

// ReadFrom reads one datagram into p, waiting while none is queued.
func (c *netPacketConn) ReadFrom(p []byte) (int, net.Addr, error) {
	if c.err != nil {
		return 0, nil, c.ps.opError("read", nil, c.err)
	}
	c.rmu.Lock()
	defer c.rmu.Unlock() // also when the misuse check panics
	n, addr, err := c.ps.readFrom(waiter{g: &c.gp.read}, p)
	return n, addr, c.ps.opError("read", nil, err)
}

// WriteTo sends p as one datagram to addr, waiting while the send queue is
// full.
func (c *netPacketConn) WriteTo(p []byte, addr net.Addr) (int, error) {
	if c.err != nil {
		return 0, c.ps.opError("write", addr, c.err)
	}
	c.wmu.Lock()
	defer c.wmu.Unlock() // also when the misuse check panics
	n, err := c.ps.writeTo(waiter{g: &c.gp.write}, p, addr)
	return n, c.ps.opError("write", addr, err)
}

// Close wakes the waiting calls, which fail with net.ErrClosed, and closes
// the socket once no call is inside a syscall with it.
func (c *netPacketConn) Close() error { return c.ps.Close() }

// LocalAddr returns the bound address (nil for an unbound unixgram socket).
func (c *netPacketConn) LocalAddr() net.Addr { return c.ps.laddr }

// SetDeadline sets both deadlines; a call waiting now sees it at once.
func (c *netPacketConn) SetDeadline(t time.Time) error {
	if c.ps.s.fr.closing() {
		return c.ps.opError("set", nil, ErrClosed)
	}
	return c.ps.SetDeadline(t)
}

// SetReadDeadline sets the read deadline.
func (c *netPacketConn) SetReadDeadline(t time.Time) error {
	if c.ps.s.fr.closing() {
		return c.ps.opError("set", nil, ErrClosed)
	}
	return c.ps.SetReadDeadline(t)
}

// SetWriteDeadline sets the write deadline.
func (c *netPacketConn) SetWriteDeadline(t time.Time) error {
	if c.ps.s.fr.closing() {
		return c.ps.opError("set", nil, ErrClosed)
	}
	return c.ps.SetWriteDeadline(t)
}
