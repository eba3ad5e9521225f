//go:build linux

// Package echo holds the echo servers' pieces that cmd/echoserver (the
// throughput comparison) and cmd/conns (the idle-connection memory tool)
// share: the iopool task per connection, the poll-layer connection and
// listener, and a raw listening socket.
package echo

import (
	"fmt"
	"net"
	"sync/atomic"

	"golang.org/x/sys/unix"

	"github.com/iopool/iopool"
)

// BufSize is the size of an echo buffer.
const BufSize = 16 << 10

// BufPool is a free list of echo buffers for the tasks of one pool (they
// run one at a time on its loop goroutine, so it needs no lock).
type BufPool struct{ free [][]byte }

// Get returns a buffer of BufSize bytes.
func (p *BufPool) Get() []byte {
	if n := len(p.free); n > 0 {
		b := p.free[n-1]
		p.free = p.free[:n-1]
		return b
	}
	return make([]byte, BufSize)
}

// Put returns b to the pool.
func (p *BufPool) Put(b []byte) { p.free = append(p.free, b) }

// ServeTask is the iopool-task connection: a task that echoes on s until
// the peer closes or an error, holding a buffer only while it echoes (an
// idle connection waits for readability with none). It closes s.
func ServeTask(t *iopool.Task, s *iopool.Socket, bufs *BufPool) {
	defer s.Close()
	for {
		if err := s.WaitReadable(t); err != nil {
			return
		}
		buf := bufs.Get()
		n, err := s.Read(t, buf)
		if err == nil {
			_, err = s.Write(t, buf[:n])
		}
		bufs.Put(buf)
		if err != nil {
			return
		}
	}
}

// PollConn is one connection of the poll-layer server: its Wake echoes on
// the loop goroutine whenever the fd signals, with no task.
type PollConn struct {
	fd      int
	fr      *iopool.FdReady
	cx      *iopool.PollContext
	buf     []byte // shared by every connection of the pool
	pending []byte // echoed bytes not yet written
}

// Wake reads and echoes until the socket would block.
func (c *PollConn) Wake() {
	for {
		if len(c.pending) > 0 {
			if _, ok := c.fr.PollReady(c.cx, iopool.SlotWrite, iopool.PollOut); !ok {
				// The read buffer is shared by every connection: keep a copy.
				c.pending = append([]byte(nil), c.pending...)
				return
			}
			n, err := unix.Write(c.fd, c.pending)
			switch {
			case err == unix.EAGAIN:
				c.fr.ClearReady(iopool.SlotWrite)
				continue
			case err == unix.EINTR:
				continue
			case err != nil:
				c.close()
				return
			}
			if c.pending = c.pending[n:]; len(c.pending) > 0 {
				c.fr.ClearEvents(iopool.SlotWrite, iopool.PollOut)
			}
			continue
		}
		if _, ok := c.fr.PollReady(c.cx, iopool.SlotRead, iopool.PollIn|iopool.PollRdHup); !ok {
			return
		}
		n, err := unix.Read(c.fd, c.buf)
		switch {
		case err == unix.EAGAIN:
			c.fr.ClearReady(iopool.SlotRead)
			continue
		case err == unix.EINTR:
			continue
		case err != nil || n == 0:
			c.close()
			return
		case n < len(c.buf):
			// A short read of a TCP stream socket drained it (the package
			// doc of iopool states when that holds): wait for the next edge.
			c.fr.ClearEvents(iopool.SlotRead, iopool.PollIn)
		}
		c.pending = c.buf[:n]
	}
}

func (c *PollConn) close() {
	c.fr.Close()
	unix.Close(c.fd)
}

// PollListener accepts connections when its fd signals and serves each as
// a PollConn.
type PollListener struct {
	fd       int
	fr       *iopool.FdReady
	cx       *iopool.PollContext
	drv      *iopool.Driver
	buf      []byte        // shared: one connection runs at a time on the loop
	noDelay  bool          // set TCP_NODELAY on each connection
	accepted *atomic.Int64 // counts the connections, if not nil
}

// ServePoll serves the listening socket fd with the poll layer on t's pool
// until the pool closes. ready is called once it accepts. With noDelay
// each connection gets TCP_NODELAY; accepted, if not nil, counts them.
func ServePoll(t *iopool.Task, fd int, noDelay bool, accepted *atomic.Int64, ready func()) error {
	fr, err := t.Driver().NewFdReady(fd)
	if err != nil {
		unix.Close(fd)
		return err
	}
	l := &PollListener{fd: fd, fr: fr, drv: t.Driver(), buf: make([]byte, BufSize), noDelay: noDelay, accepted: accepted}
	l.cx = iopool.NewPollContext(l)
	l.Wake()
	ready()
	_, err = iopool.NewOneshot[struct{}]().Recv(t) // serve until the pool closes
	return err
}

// Wake accepts until the queue is empty.
func (l *PollListener) Wake() {
	for {
		if _, ok := l.fr.PollReady(l.cx, iopool.SlotRead, iopool.PollIn); !ok {
			return
		}
		cfd, _, err := unix.Accept4(l.fd, unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC)
		switch {
		case err == unix.EAGAIN:
			l.fr.ClearReady(iopool.SlotRead)
			continue
		case err != nil:
			continue // ECONNABORTED, EMFILE: the client counts the failure
		}
		if l.noDelay {
			_ = unix.SetsockoptInt(cfd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1)
		}
		fr, err := l.drv.NewFdReady(cfd)
		if err != nil {
			unix.Close(cfd)
			continue
		}
		if l.accepted != nil {
			l.accepted.Add(1)
		}
		c := &PollConn{fd: cfd, fr: fr, buf: l.buf}
		c.cx = iopool.NewPollContext(c)
		c.Wake()
	}
}

// ListenFd opens a nonblocking listening TCP socket on a numeric IPv4
// address, with SO_REUSEADDR, and SO_REUSEPORT if reusePort.
func ListenFd(addr string, reusePort bool, backlog int) (int, error) {
	ta, err := net.ResolveTCPAddr("tcp4", addr)
	if err != nil {
		return -1, err
	}
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, err
	}
	_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1)
	if reusePort {
		_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
	}
	sa := &unix.SockaddrInet4{Port: ta.Port}
	copy(sa.Addr[:], ta.IP.To4())
	if err := unix.Bind(fd, sa); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("listen %s: %w", addr, err)
	}
	if err := unix.Listen(fd, backlog); err != nil {
		unix.Close(fd)
		return -1, err
	}
	return fd, nil
}

// LocalAddr returns the "ip:port" a listening socket is bound to.
func LocalAddr(fd int) (string, error) {
	sa, err := unix.Getsockname(fd)
	if err != nil {
		return "", err
	}
	if in4, ok := sa.(*unix.SockaddrInet4); ok {
		return (&net.TCPAddr{IP: in4.Addr[:], Port: in4.Port}).String(), nil
	}
	return fmt.Sprint(sa), nil
}
