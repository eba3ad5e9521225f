//go:build linux

package iopool

import (
	"net"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// Listener accepts stream connections on a pool.
type Listener struct {
	sock *Socket
	addr net.Addr
}

// ListenConfig holds listening options.
type ListenConfig struct {
	// ReusePort sets SO_REUSEPORT so that several pools (one per core) can
	// listen on the same port and the kernel spreads connections.
	ReusePort bool
	// Backlog is the accept queue length; 0 means 4096.
	Backlog int
}

// Listen listens on a tcp, tcp4, tcp6 or unix address ("127.0.0.1:0",
// "[::1]:8080", "localhost:http", "/run/app.sock"). A host name is looked
// up without blocking the pool when Listen is called from one of its tasks
// (see Dial); from any other goroutine, on that goroutine. Errors are
// *net.OpError with Op "listen", as package net's (an address in use is
// one wrapping a bind *os.SyscallError with EADDRINUSE).
func (d *Driver) Listen(network, addr string) (*Listener, error) {
	return ListenConfig{}.Listen(d, network, addr)
}

// Listen listens with the configuration's options.
func (lc ListenConfig) Listen(drv *Driver, network, addr string) (*Listener, error) {
	sa, family, err := resolve(drv.p.callingTask(), network, addr)
	if err != nil {
		return nil, &net.OpError{Op: "listen", Net: network, Err: err}
	}
	kind := sockKindOf(family, unix.SOCK_STREAM)
	fail := func(err error) (*Listener, error) {
		return nil, &net.OpError{Op: "listen", Net: network, Addr: sockaddrToAddr(sa, kind), Err: err}
	}
	fd, err := unix.Socket(family, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fail(os.NewSyscallError("socket", err))
	}
	if err := listenFd(fd, family, sa, lc); err != nil {
		unix.Close(fd)
		return fail(err)
	}
	s, err := newSocket(drv, fd, family != unix.AF_UNIX, kind, PollIn, true)
	if err != nil {
		unix.Close(fd)
		return fail(err)
	}
	return &Listener{sock: s, addr: s.LocalAddr()}, nil
}

// listenFd sets fd's options, binds it to sa and listens.
func listenFd(fd, family int, sa unix.Sockaddr, lc ListenConfig) error {
	if family != unix.AF_UNIX {
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1); err != nil {
			return os.NewSyscallError("setsockopt", err)
		}
		if lc.ReusePort {
			if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEPORT, 1); err != nil {
				return os.NewSyscallError("setsockopt", err)
			}
		}
	}
	if err := unix.Bind(fd, sa); err != nil {
		return os.NewSyscallError("bind", err)
	}
	backlog := lc.Backlog
	if backlog <= 0 {
		backlog = 4096
	}
	if err := unix.Listen(fd, backlog); err != nil {
		return os.NewSyscallError("listen", err)
	}
	return nil
}

// Addr returns the address the listener is bound to (with the port chosen
// by the kernel for port 0).
func (l *Listener) Addr() net.Addr { return l.addr }

// Close stops listening.
func (l *Listener) Close() error { return l.sock.Close() }

// acceptBackoff bounds the pause when the process is out of fds.
const (
	acceptBackoffMin = 10 * time.Millisecond
	acceptBackoffMax = time.Second
)

// Accept waits inside task t for a connection and returns it registered on
// the same pool. When the process or system is out of fds (EMFILE, ENFILE)
// it backs off (10 ms doubling to 1 s; Close ends the pause) and tries
// again, so the listener keeps working once fds are freed. Errors are
// *net.OpError with Op "accept", as package net's.
func (l *Listener) Accept(t *Task) (*Socket, error) {
	s, _, err := l.sock.doAccept(waiter{t: t}, l.addr)
	if err != nil {
		return nil, l.opError(err)
	}
	return s, nil
}

// opError wraps an accept error as package net does.
func (l *Listener) opError(err error) error {
	return &net.OpError{Op: "accept", Net: l.sock.read.kind.network(), Addr: l.addr, Err: err}
}
