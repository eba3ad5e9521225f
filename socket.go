//go:build linux

package iopool

import (
	"io"
	"net"
	"os"
	"time"

	"golang.org/x/sys/unix"

	"github.com/iopool/iopool/internal/sys"
)

// Socket is a nonblocking fd (TCP or unix socket, socketpair, pipe end,
// tty, tun; seqpacket and datagram sockets read a message per Read)
// registered with a pool. Its Read and Write take the task they run in and
// suspend it, not the thread, while the fd is not ready; TryRead and
// TryWrite do not wait at all.
//
// One task may read while another writes. Read and write deadlines use the
// pool's timers; an expired deadline fails the call with an error for which
// errors.Is(err, os.ErrDeadlineExceeded) holds, and the socket stays usable
// once the deadline is moved.
//
// Errors are shaped as package net shapes them: a *net.OpError (Op "read",
// "write", Net "tcp", "unix", ...) wrapping an *os.SyscallError when the
// kernel refused, ErrClosed (which matches net.ErrClosed) after Close, or
// os.ErrDeadlineExceeded; io.EOF is returned bare.
type Socket struct {
	fd    int
	fr    *FdReady // owns fd: its close(true) closes it
	read  ioWait   // the reading side (and read.tcp, read.kind)
	write ioWait   // the writing side
}

// NewSocket registers an fd with the driver's pool, making it nonblocking. The
// Socket owns fd from then on: Close closes it.
func (d *Driver) NewSocket(fd int) (*Socket, error) {
	if err := setNonblock(fd); err != nil {
		return nil, err
	}
	kind, tcp := probeSocket(fd)
	return newSocket(d, fd, tcp, kind, PollIn|PollOut, true)
}

// setNonblock makes a caller's fd nonblocking (NewSocket, NewNetConn); the
// package's own sockets are made so (SOCK_NONBLOCK), sparing two fcntl
// calls per accept, dial and listen.
func setNonblock(fd int) error {
	if err := unix.SetNonblock(fd, true); err != nil {
		return wrapError(os.NewSyscallError("fcntl", err), "NewSocket fd %d", fd)
	}
	return nil
}

// probeSocket asks the kernel what fd is: its kind, and whether it is a
// TCP stream, the one fd whose short reads prove it empty (see doRead).
// A pipe, tty or tun is not a socket (ENOTSOCK): kindOther; an SCTP or
// MPTCP stream is kindTCP but not tcp.
func probeSocket(fd int) (kind sockKind, tcp bool) {
	typ, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TYPE)
	if err != nil {
		return kindOther, false
	}
	domain, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_DOMAIN)
	if err != nil {
		return kindOther, false
	}
	kind = sockKindOf(domain, typ)
	if kind != kindTCP {
		return kind, false
	}
	proto, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_PROTOCOL)
	return kind, err == nil && proto == unix.IPPROTO_TCP
}

// newSocket is NewSocket for a caller that knows what fd is (Listen,
// Accept, Dial and ListenPacket made it), sparing the getsockopt calls.
// The sides in ready make their first call at once (ioWait.tryNext): both
// for an fd that may have data or room, not the write side of a connect
// in progress, whose first edge says it is done. Without register, the fd
// stays out of the pool's epoll set: a socket made for goroutines, which
// wait in the runtime's poller (goPoll). fd is nonblocking already.
func newSocket(drv *Driver, fd int, tcp bool, kind sockKind, ready PollEvents, register bool) (*Socket, error) {
	fr, err := drv.newFdReady(fd, register)
	if err != nil {
		return nil, err
	}
	s := &Socket{fd: fd, fr: fr}
	s.read = ioWait{fr: fr, slot: SlotRead, tcp: tcp, kind: kind, tryNext: ready&PollIn != 0, events: PollIn | PollRdHup}
	s.write = ioWait{fr: fr, slot: SlotWrite, tcp: tcp, kind: kind, tryNext: ready&PollOut != 0, events: PollOut}
	return s, nil
}

// Fd returns the socket's fd.
func (s *Socket) Fd() int { return s.fd }

// Read reads up to len(p) bytes into p inside task t, waiting while no data
// is available. It returns io.EOF at the end of the stream; a reset
// connection gives an error wrapping ECONNRESET.
//
// Read makes the read system call only when the kernel has signaled data
// since the socket was last found empty: after EAGAIN it waits for the next
// edge, and after a short read where the package documentation's
// short-read rule proves the receive queue empty (a TCP stream without
// urgent data); a hang-up that came with the data is kept, so the read
// after it returns EOF at once.
func (s *Socket) Read(t *Task, p []byte) (int, error) {
	// The one I/O path without a waiter (as TryRead), and the wait here,
	// at the top: a task suspended in Read keeps every frame between its
	// function and the suspension on its goroutine stack, and a waiter
	// passed down would suspend it below doRead and ioLoop (about 270
	// bytes deeper), past what the smallest stack (2 KiB) holds.
	// TestRegressionTaskInReadFitsTheSmallestStack pins it.
	for {
		n, err := s.doRead(waiter{}, p)
		if err == ErrWouldBlock {
			if err = s.read.wait(t); err == nil {
				continue
			}
		}
		return n, s.opError("read", err)
	}
}

// TryRead reads up to len(p) bytes into p without waiting, from any
// goroutine or from code running on the loop (a Waker, a poll function).
// When the socket has no data it returns 0 and ErrWouldBlock itself
// (unwrapped, so that a caller polling many sockets pays no allocation);
// the caller waits for readiness and tries again. It follows Read's rules
// (io.EOF, the short-read rule, errors), but one read at a time: reads of
// one socket must not run concurrently.
func (s *Socket) TryRead(p []byte) (int, error) {
	n, err := s.doRead(waiter{}, p)
	return n, s.opError("read", err)
}

// WaitReadable suspends task t until the socket has data (or a hang-up or
// error) to read, without a buffer: a server can wait on many idle
// connections and take a read buffer only for the one that is ready. It
// makes no system call: on a new socket it waits for the kernel to report
// data (at the loop's next cycle, if data is there already).
func (s *Socket) WaitReadable(t *Task) error {
	return s.opError("read", s.read.wait(t))
}

// Write writes all of p inside task t, waiting while the fd is full. It
// returns len(p) or an error with the count written before it. Like Read,
// it makes the write system call only while the socket is known writable;
// a short write means the send buffer filled, and the next write waits for
// room.
func (s *Socket) Write(t *Task, p []byte) (int, error) {
	done := 0
	for { // waits at the top, as Read does
		n, err := s.doWrite(waiter{}, p[done:])
		done += n
		if err == ErrWouldBlock {
			if err = s.write.wait(t); err == nil {
				continue
			}
		}
		return done, s.opError("write", err)
	}
}

// TryWrite writes as much of p as the socket takes now, without waiting:
// it returns len(p) and nil, or the count written and ErrWouldBlock itself
// (unwrapped) once the socket is full; the caller waits for the socket to
// be writable and writes the rest. Writes of one socket must not run
// concurrently.
func (s *Socket) TryWrite(p []byte) (int, error) {
	n, err := s.doWrite(waiter{}, p)
	return n, s.opError("write", err)
}

// opError wraps err as package net does for op on s: a *net.OpError with
// the socket's network and addresses. io.EOF and ErrWouldBlock are
// returned bare.
func (s *Socket) opError(op string, err error) error {
	if err == nil || err == io.EOF || err == ErrWouldBlock {
		return err
	}
	return &net.OpError{Op: op, Net: s.read.kind.network(), Source: s.LocalAddr(), Addr: s.RemoteAddr(), Err: err}
}

// SetReadDeadline sets the time after which Read fails (zero: never). Safe
// from any goroutine; a Read waiting now is woken if the deadline moved
// earlier than its wait.
func (s *Socket) SetReadDeadline(t time.Time) error {
	if gp := s.fr.gp.Load(); gp != nil {
		return gp.setDeadline(SlotRead, t) // the runtime's poller keeps it
	}
	s.read.setDeadline(t)
	return nil
}

// SetWriteDeadline sets the time after which Write fails (zero: never).
func (s *Socket) SetWriteDeadline(t time.Time) error {
	if gp := s.fr.gp.Load(); gp != nil {
		return gp.setDeadline(SlotWrite, t)
	}
	s.write.setDeadline(t)
	return nil
}

// SetDeadline sets both deadlines.
func (s *Socket) SetDeadline(t time.Time) error {
	_ = s.SetReadDeadline(t)
	return s.SetWriteDeadline(t)
}

// CloseWrite shuts down the writing half (the peer reads EOF). For an fd
// that is not a socket (a pipe end) it returns the kernel's ENOTSOCK: close
// the pipe's write end instead.
//
// After Close it returns an error wrapping ErrClosed, without a syscall:
// the fd number may name another connection by then.
func (s *Socket) CloseWrite() error {
	err := s.fr.withFd(func(fd int) error {
		return syscallErr("shutdown", sys.Shutdown(s.fr.p.be.faults, fd, unix.SHUT_WR))
	})
	return s.opError("close", err)
}

// Close removes the registration and closes the fd. Closing twice is a
// no-op. Tasks and goroutines waiting on the socket are woken and fail with
// ErrClosed without another syscall on the fd; the fd is closed once the
// reads, writes or accepts in flight (on other goroutines) have returned
// from their syscalls, and Close returns after that.
func (s *Socket) Close() error {
	err := s.fr.close(true)
	s.read.stop()
	s.write.stop()
	return err
}

// LocalAddr returns the socket's local address, as package net reports it
// for the same socket, or nil if it has none.
func (s *Socket) LocalAddr() net.Addr { return s.addr(unix.Getsockname) }

// RemoteAddr returns the peer's address, as package net reports it, or nil
// if there is none.
func (s *Socket) RemoteAddr() net.Addr { return s.addr(unix.Getpeername) }

func (s *Socket) addr(name func(fd int) (unix.Sockaddr, error)) net.Addr {
	var sa unix.Sockaddr
	if s.fr.withFd(func(fd int) (err error) { sa, err = name(fd); return err }) != nil {
		return nil
	}
	return sockaddrToAddr(sa, s.read.kind)
}

// Reader returns an io.Reader that reads from s inside task t, so bufio,
// io.Copy and encoding/* work in a task. Use it only in t.
func (s *Socket) Reader(t *Task) io.Reader { return taskReader{s, t} }

// Writer returns an io.Writer that writes to s inside task t.
func (s *Socket) Writer(t *Task) io.Writer { return taskWriter{s, t} }

type taskReader struct {
	s *Socket
	t *Task
}

func (r taskReader) Read(p []byte) (int, error) { return r.s.Read(r.t, p) }

type taskWriter struct {
	s *Socket
	t *Task
}

func (w taskWriter) Write(p []byte) (int, error) { return w.s.Write(w.t, p) }
