package iopool

import (
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/iopool/iopool/internal/sys"
)

// NetConn is a net.Conn over a socket registered with a pool, for code that
// runs on plain goroutines: net/http, crypto/tls, gRPC, anything that takes
// a net.Conn. Its methods may be called from any goroutine and concurrently
// (reads are serialized among themselves, and so are writes). A call that
// must wait parks its goroutine on the pool's readiness and deadline
// timers, so the pool must be running (inside Run) while it waits;
// without waiting, calls are plain nonblocking syscalls on the caller's
// goroutine.
//
// Deadlines behave as in package net: an expired deadline fails the call
// with an error that is a net.Error with Timeout() true and satisfies
// errors.Is(err, os.ErrDeadlineExceeded); Close wakes every waiting call.
//
// A NetConn owns its socket: do not use the Socket from tasks as well.
type NetConn struct {
	s        *Socket
	network  string
	rmu, wmu sync.Mutex // serialize readers, writers; Close takes both
	rpark    *parkWaker // rmu: the reader's waker
	wpark    *parkWaker // wmu: the writer's waker
	laddr    net.Addr   // read once: the fd may be closed under a caller
	raddr    net.Addr
}

var _ net.Conn = (*NetConn)(nil)

// NewNetConn registers a connected stream socket fd with drv's pool and
// returns it as a net.Conn. The NetConn owns fd from then on.
func NewNetConn(drv *Driver, fd int) (*NetConn, error) {
	// A NetConn reads until EAGAIN whatever the fd (see do), so the kind of
	// fd that Socket.Read's short-read rule needs is not asked for.
	s, err := newSocket(drv, fd, false)
	if err != nil {
		return nil, err
	}
	return s.NetConn(), nil
}

// NetConn turns s into a net.Conn usable from any goroutine. The NetConn
// takes over s: use one or the other.
func (s *Socket) NetConn() *NetConn {
	c := &NetConn{s: s, network: "unix", rpark: newParkWaker(), wpark: newParkWaker(),
		laddr: s.LocalAddr(), raddr: s.RemoteAddr()}
	if _, ok := c.laddr.(*net.TCPAddr); ok {
		c.network = "tcp"
	}
	return c
}

// Fd returns the socket's fd.
func (c *NetConn) Fd() int { return c.s.fd }

// Read reads up to len(p) bytes, waiting while none is available. It
// returns io.EOF at the end of the stream.
func (c *NetConn) Read(p []byte) (int, error) {
	c.rmu.Lock()
	defer c.rmu.Unlock()
	n, err := c.do(&c.s.read, c.rpark, "read", p)
	if err == nil && n == 0 && len(p) > 0 {
		return 0, io.EOF
	}
	return n, err
}

// Write writes all of p, waiting while the socket is full, and returns
// len(p) or an error with the count written before it.
func (c *NetConn) Write(p []byte) (int, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	done := 0
	for {
		n, err := c.do(&c.s.write, c.wpark, "write", p[done:])
		done += n
		if err != nil || done == len(p) {
			return done, err
		}
	}
}

// do makes one read or write of p on the caller's goroutine, parking it on
// the pool while the socket is not ready. Called with the side's lock held.
func (c *NetConn) do(w *ioWait, park *parkWaker, op string, p []byte) (int, error) {
	cx := &Context{waker: park}
	fr := c.s.fr
	for {
		if w.expired() && !fr.ref.closing() {
			return 0, c.opError(op, os.ErrDeadlineExceeded)
		}
		// A reference for the syscall: Close cannot close the number
		// under it, and once Close has begun no syscall starts.
		if !fr.acquire() {
			return 0, c.opError(op, c.closedErr())
		}
		var n int
		var err error
		if op == "read" {
			n, err = sys.Read(c.s.fd, p)
		} else {
			n, err = sys.Write(c.s.fd, p)
		}
		fr.releaseRef()
		switch {
		case err == nil:
			return n, nil
		case err == unix.EINTR:
		case err == unix.EAGAIN:
			w.fr.ClearReady(w.slot)
			if err := c.s.parkReady(w, park, cx); err != nil {
				return 0, c.opError(op, err)
			}
		default:
			return 0, c.opError(op, os.NewSyscallError(op, err))
		}
	}
}

// closedErr is why a call cannot make its syscall: the connection was
// closed (net.ErrClosed), or its pool was.
func (c *NetConn) closedErr() error { return c.s.closedErr() }

func (c *NetConn) opError(op string, err error) error {
	return &net.OpError{Op: op, Net: c.network, Source: c.LocalAddr(), Addr: c.RemoteAddr(), Err: err}
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
	if err := c.s.CloseWrite(); err != nil {
		if errors.Is(err, ErrClosed) {
			return c.opError("close", c.closedErr())
		}
		return err
	}
	return nil
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
	if c.s.fr.ref.closing() {
		return c.opError("set", net.ErrClosed)
	}
	return c.s.SetReadDeadline(t)
}

// SetWriteDeadline sets the write deadline.
func (c *NetConn) SetWriteDeadline(t time.Time) error {
	if c.s.fr.ref.closing() {
		return c.opError("set", net.ErrClosed)
	}
	return c.s.SetWriteDeadline(t)
}
