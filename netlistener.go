package iopool

import (
	"fmt"
	"net"
	"os"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/iopool/iopool/internal/sys"
)

// NetListener returns l as a net.Listener for code that runs on plain
// goroutines, such as net/http's Server.Serve. Its Accept may be called from
// any goroutine (calls are serialized) and returns a *NetConn registered on
// l's pool; while no connection is queued it parks the calling goroutine on
// the pool's readiness, so the pool must be running (inside Run) for Accept
// to wait. Close closes the listener and wakes a waiting Accept, which fails
// with net.ErrClosed.
//
// The net.Listener takes over l: do not accept from tasks as well.
func (l *Listener) NetListener() net.Listener {
	return &netListener{l: l, park: newParkWaker()}
}

// netListener is a Listener seen from plain goroutines. The listening fd is
// owned by the Listener's Socket; Accept holds a reference to it for the
// time of its accept4 call, so the number is never closed under a syscall
// that names it (as NetConn does).
type netListener struct {
	l    *Listener
	mu   sync.Mutex // serializes Accept
	park *parkWaker // mu: the accepting goroutine's waker
}

var _ net.Listener = (*netListener)(nil)

// Accept waits for a connection and returns it as a *NetConn. Accepted TCP
// connections have TCP_NODELAY set, as in package net. When the process is
// out of fds it backs off (10 ms doubling to 1 s) as Listener.Accept does.
func (nl *netListener) Accept() (net.Conn, error) {
	nl.mu.Lock()
	defer nl.mu.Unlock()
	s := nl.l.sock
	cx := &Context{waker: nl.park}
	backoff := acceptBackoffMin
	for {
		if !s.fr.acquire() {
			return nil, nl.opError(s.closedErr())
		}
		fd, _, err := sys.Accept4(s.fd, unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC)
		s.fr.releaseRef()
		switch {
		case err == nil:
			setAcceptedOptions(fd)
			c, err := NewNetConn(&s.fr.p.drv, fd)
			if err != nil {
				unix.Close(fd)
				return nil, nl.opError(err)
			}
			return c, nil
		case err == unix.EINTR || err == unix.ECONNABORTED:
		case err == unix.EAGAIN:
			s.fr.ClearReady(SlotRead)
			if err := s.parkReady(&s.read, nl.park, cx); err != nil {
				return nil, nl.opError(err)
			}
		case err == unix.EMFILE || err == unix.ENFILE || err == unix.ENOBUFS || err == unix.ENOMEM:
			s.fr.p.logAcceptBackoff(nl.l.addr, err, backoff)
			time.Sleep(backoff)
			backoff = min(2*backoff, acceptBackoffMax)
		default:
			return nil, nl.opError(os.NewSyscallError("accept4", err))
		}
	}
}

// parkReady parks a plain goroutine until the side w of s is ready, its
// deadline passes, or s or its pool is closed.
func (s *Socket) parkReady(w *ioWait, park *parkWaker, cx *Context) error {
	for checked := false; ; checked = true {
		if err, ok := w.Poll(cx); ok {
			return err
		}
		if s.fr.ref.closing() || s.fr.p.isClosing() {
			return s.closedErr()
		}
		if p := s.fr.p; !checked && p.current.Load() != nil && callerPool() == p {
			// The readiness it waits for is delivered by the loop that
			// this task is blocking.
			panic(fmt.Sprintf("iopool: a NetConn, net.Listener or net.PacketConn of fd %d used from a task of its own pool, which could never deliver its readiness: use the Socket, Listener or PacketSocket methods that take the task", s.fd))
		}
		// Also woken by a Go timer at the deadline: the pool's timer fires
		// only while the pool runs, and a deadline must hold without it.
		if err := park.parkUntil(s.fr.p, w.deadline.Load()); err != nil {
			return err
		}
	}
}

// closedErr is why a call from a plain goroutine cannot make its syscall:
// the socket was closed (net.ErrClosed), or its pool was.
func (s *Socket) closedErr() error {
	if s.fr.ref.closing() {
		return net.ErrClosed
	}
	return fmt.Errorf("%w (the pool of fd %d)", ErrClosed, s.fd)
}

func (nl *netListener) opError(err error) error {
	network := "tcp"
	if _, ok := nl.l.addr.(*net.UnixAddr); ok {
		network = "unix"
	}
	return &net.OpError{Op: "accept", Net: network, Addr: nl.l.addr, Err: err}
}

// Close closes the listener; a waiting Accept wakes and fails with
// net.ErrClosed. Closing twice is a no-op.
func (nl *netListener) Close() error {
	return nl.l.sock.Close()
}

// Addr returns the listener's address.
func (nl *netListener) Addr() net.Addr { return nl.l.addr }
