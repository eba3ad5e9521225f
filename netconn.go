//go:build linux

package iopool

import (
	"io"
	"net"
	"sync"
	"time"
)

// NetConn is a net.Conn over a socket registered with a pool, for code that
// runs on plain goroutines: net/http, crypto/tls, gRPC, anything that takes
// a net.Conn. Its methods may be called from any goroutine and concurrently
// (reads are serialized among themselves, and so are writes). A call that
// must wait parks its goroutine in the Go runtime's network poller, as a
// net.TCPConn's does: the socket leaves the pool's epoll set, its traffic
// never wakes the pool's loop, and it is served whether or not the loop
// runs. Reads and writes take the Socket's one I/O path (fdio.go) and its
// one door to the fd; Close closes the fd once, whoever is waiting on it.
// Calling a method that waits from inside a task panics: it would block
// the task's whole pool (use the Socket from tasks).
//
// Deadlines behave as in package net, on the wall clock (the runtime's
// poller keeps them; one set on the Socket before it became a NetConn
// carries over): an expired deadline fails the call with an
// error that is a net.Error with Timeout() true and satisfies
// errors.Is(err, os.ErrDeadlineExceeded); Close, or closing the pool, wakes
// every waiting call, which fails with an error matching net.ErrClosed.
//
// A NetConn owns its socket: do not use the Socket from tasks as well.
type NetConn struct {
	s        *Socket
	gp       *goPoll    // the socket's registration with the runtime's poller
	err      error      // why gp could not be made: every call fails with it
	rmu, wmu sync.Mutex // serialize readers (gp.read), writers (gp.write)
	laddr    net.Addr   // read once: the fd may be closed under a caller
	raddr    net.Addr
}

var _ net.Conn = (*NetConn)(nil)

// NewNetConn takes a connected stream socket fd into the driver's pool and
// returns it as a net.Conn. The NetConn owns fd from then on.
func (d *Driver) NewNetConn(fd int) (*NetConn, error) {
	if err := setNonblock(fd); err != nil {
		return nil, err
	}
	kind, tcp := probeSocket(fd)
	s, err := newSocket(d, fd, tcp, kind, PollIn|PollOut, false)
	if err != nil {
		return nil, err
	}
	c := s.NetConn()
	if c.err != nil {
		s.Close()
		return nil, c.err
	}
	return c, nil
}

// NetConn turns s into a net.Conn usable from any goroutine. The NetConn
// takes over s: s leaves the pool's epoll set, and a task that waits on s
// from then on panics. Use one or the other. If the runtime's poller
// refuses the fd, every call of the NetConn fails saying so.
func (s *Socket) NetConn() *NetConn { return s.netConn(s.RemoteAddr()) }

// netConn is NetConn for a caller that knows the peer's address (an
// accept's).
func (s *Socket) netConn(raddr net.Addr) *NetConn {
	c := &NetConn{s: s, laddr: s.LocalAddr(), raddr: raddr}
	c.gp, c.err = s.attachGoPoll()
	return c
}

// Fd returns the socket's fd.
func (c *NetConn) Fd() int { return c.s.fd }

// Read reads up to len(p) bytes, waiting while none is available. It
// returns io.EOF at the end of the stream.
func (c *NetConn) Read(p []byte) (int, error) {
	if c.err != nil {
		return 0, c.opError("read", c.err)
	}
	c.rmu.Lock()
	defer c.rmu.Unlock() // also when the misuse check panics
	n, err := c.s.doRead(waiter{g: &c.gp.read}, p)
	return n, c.opError("read", err)
}

// Write writes all of p, waiting while the socket is full, and returns
// len(p) or an error with the count written before it.
func (c *NetConn) Write(p []byte) (int, error) {
	if c.err != nil {
		return 0, c.opError("write", c.err)
	}
	c.wmu.Lock()
	defer c.wmu.Unlock() // also when the misuse check panics
	n, err := c.s.doWrite(waiter{g: &c.gp.write}, p)
	return n, c.opError("write", err)
}

// opError wraps err as package net does, with the addresses read when the
// connection was made.
func (c *NetConn) opError(op string, err error) error {
	if err == nil || err == io.EOF {
		return err
	}
	return &net.OpError{Op: op, Net: c.s.read.kind.network(), Source: c.laddr, Addr: c.raddr, Err: err}
}

// Close wakes the calls waiting on the connection, which fail with
// net.ErrClosed, and closes the socket: the fd number is closed once no
// read or write is inside a syscall with it, so it cannot be reused under
// them. Closing twice is a no-op.
func (c *NetConn) Close() error {
	return c.s.Close()
}

// CloseWrite shuts down the writing half: the peer reads EOF.
func (c *NetConn) CloseWrite() error {
	return c.s.CloseWrite()
}

// LocalAddr returns the local address (nil for an fd without one, such as
// a pipe).
func (c *NetConn) LocalAddr() net.Addr { return c.laddr }

// RemoteAddr returns the peer's address (nil if it has none).
func (c *NetConn) RemoteAddr() net.Addr { return c.raddr }

// SetDeadline sets the read and write deadlines; a zero time means none.
// A call waiting now sees the new deadline at once.
func (c *NetConn) SetDeadline(t time.Time) error {
	if err := c.SetReadDeadline(t); err != nil {
		return err
	}
	return c.SetWriteDeadline(t)
}

// SetReadDeadline sets the read deadline.
func (c *NetConn) SetReadDeadline(t time.Time) error {
	if c.s.fr.closing() {
		return c.opError("set", ErrClosed)
	}
	return c.s.SetReadDeadline(t)
}

// SetWriteDeadline sets the write deadline.
func (c *NetConn) SetWriteDeadline(t time.Time) error {
	if c.s.fr.closing() {
		return c.opError("set", ErrClosed)
	}
	return c.s.SetWriteDeadline(t)
}
