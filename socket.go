package iopool

import (
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/iopool/iopool/internal/sys"
)

// Socket is a nonblocking fd (TCP or unix socket, socketpair, pipe end,
// tty, tun; seqpacket and datagram sockets read a message per Read)
// registered with a pool. Its Read and Write take the task they run in and
// suspend it, not the thread, while the fd is not ready.
//
// One task may read while another writes. Read and write deadlines use the
// pool's timers; an expired deadline fails the call with an error for which
// errors.Is(err, os.ErrDeadlineExceeded) holds, and the socket stays usable
// once the deadline is moved.
type Socket struct {
	fd    int
	fr    *FdReady // owns fd: its close(true) closes it
	read  ioWait   // task-only state of the reading side (and read.tcp)
	write ioWait   // task-only state of the writing side
}

// ioWait waits for one side's readiness or its deadline, whichever first.
//
// The deadline is kept on the pool's clock (nanoseconds since the pool's
// epoch, monotonic), converted once when it is set: a wall-clock step (NTP,
// suspend and resume) does not move it, and a time past what the clock can
// count (after the year 2262, time.Now().Add(math.MaxInt64)) means never,
// as in package net.
type ioWait struct {
	fr   *FdReady
	slot InterestSlot
	// tcp (a Socket's read side only): the fd is a TCP stream socket, the
	// one kind of fd on which a short read proves the receive queue empty
	// (see Socket.Read). Decided once, when the Socket is made. It sits in
	// the padding after slot, costing no memory per connection.
	tcp      bool
	events   PollEvents
	deadline atomic.Int64 // pool clock ns; 0 = none; set from any goroutine

	mu     sync.Mutex
	timer  *Timer // mu: created with the first deadline; read after deadline
	waiter Waker  // mu: the last pending poller, woken when the deadline moves
}

// Poll is ready with nil when the fd is ready, or with an error when the
// deadline passes first.
func (w *ioWait) Poll(cx *Context) (error, bool) {
	if _, ok := w.fr.PollReady(cx, w.slot, w.events); ok {
		return nil, true
	}
	if d := w.recordWaiter(cx); d != 0 {
		// The timer was created before the deadline was stored.
		if _, fired := w.timer.poll(cx, d, true); fired {
			return os.ErrDeadlineExceeded, true
		}
	}
	return nil, false
}

// recordWaiter records cx's waker as the side's waiter and then returns the
// deadline (0: none). In that order, so that a deadline set from now on
// wakes the poll.
func (w *ioWait) recordWaiter(cx *Context) int64 {
	w.mu.Lock()
	w.waiter = cx.waker
	w.mu.Unlock()
	return w.deadline.Load()
}

// expired reports whether the side's deadline has passed.
func (w *ioWait) expired() bool {
	d := w.deadline.Load()
	return d != 0 && w.fr.p.monoNow() >= d
}

// deadlineOnPoolClock converts a user's deadline to the pool's clock, once:
// from its monotonic reading while it has one (time.Time.Sub), saturating.
// It returns 0 for none (the zero time, or a time too far ahead to count:
// never), and a negative value for a time at or before the pool's epoch.
func (p *Pool) deadlineOnPoolClock(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	d := p.mono(t) // saturates at ±292 years
	switch {
	case d == math.MaxInt64:
		return 0 // beyond the clock: never
	case d <= 0:
		return -1 // passed (0 would mean none)
	}
	return d
}

// setDeadline sets the side's deadline from any goroutine and wakes the
// side's waiter, which polls again against the new deadline.
func (w *ioWait) setDeadline(drv *Driver, t time.Time) {
	d := drv.p.deadlineOnPoolClock(t)
	w.mu.Lock()
	if d == 0 {
		w.deadline.Store(0)
		if w.timer != nil {
			w.timer.Stop()
		}
	} else {
		if w.timer == nil {
			w.timer = NewTimer(drv)
		}
		w.deadline.Store(d)
		w.timer.setDeadline(d)
	}
	waiter := w.waiter
	w.mu.Unlock()
	if waiter != nil {
		waiter.Wake() // at worst a spurious wake: the poller polls again
	}
}

// stop stops the side's deadline timer.
func (w *ioWait) stop() {
	w.mu.Lock()
	if w.timer != nil {
		w.timer.Stop()
	}
	w.waiter = nil
	w.mu.Unlock()
}

// ready suspends t until the side has readiness recorded (at once if it
// has) or its deadline passes.
func (w *ioWait) ready(t *Task, op string, fd int) error {
	if w.expired() {
		return fmt.Errorf("iopool: %s fd %d: %w", op, fd, os.ErrDeadlineExceeded)
	}
	err, cerr := Await[error](t, w)
	if cerr != nil {
		return cerr
	}
	if err != nil {
		return fmt.Errorf("iopool: %s fd %d: %w", op, fd, err)
	}
	return nil
}

// wait forgets the side's readiness after EAGAIN and waits for the next.
func (w *ioWait) wait(t *Task, op string, fd int) error {
	w.fr.ClearReady(w.slot)
	return w.ready(t, op, fd)
}

// NewSocket registers a stream fd with drv's pool, making it nonblocking.
// The Socket owns fd from then on: Close closes it.
func NewSocket(drv *Driver, fd int) (*Socket, error) {
	return newSocket(drv, fd, isTCPStream(fd))
}

// isTCPStream reports whether fd is a TCP stream socket. Any other fd (a
// pipe, tty or tun, which are not sockets; a unix, SCTP or MPTCP socket; a
// datagram or seqpacket one) reads until EAGAIN.
func isTCPStream(fd int) bool {
	typ, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TYPE)
	if err != nil || typ != unix.SOCK_STREAM {
		return false // ENOTSOCK for a pipe, tty or tun
	}
	proto, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_PROTOCOL)
	return err == nil && proto == unix.IPPROTO_TCP
}

// newSocket is NewSocket for a caller that knows whether fd is a TCP
// stream (Listen, Accept and Dial made it), sparing the getsockopt calls.
func newSocket(drv *Driver, fd int, tcp bool) (*Socket, error) {
	if err := unix.SetNonblock(fd, true); err != nil {
		return nil, fmt.Errorf("iopool: NewSocket fd %d: %w", fd, os.NewSyscallError("fcntl", err))
	}
	fr, err := drv.NewFdReady(fd)
	if err != nil {
		return nil, err
	}
	s := &Socket{fd: fd, fr: fr}
	s.read = ioWait{fr: fr, slot: SlotRead, tcp: tcp, events: PollIn | PollRdHup}
	s.write = ioWait{fr: fr, slot: SlotWrite, events: PollOut}
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
// edge. On a TCP stream a short read also proves the receive queue empty,
// so Read waits for the next edge then too instead of paying for a read
// that would fail with EAGAIN; a hang-up that came with the data is kept,
// so the read after it returns EOF at once.
//
// Every other fd reads until EAGAIN: there a short read does not mean
// empty. A terminal in canonical mode returns a line per read, a datagram,
// seqpacket or tun fd a message per read, a unix stream stops at a message
// that carries fds (SCM_RIGHTS) or other credentials, and TCP itself stops
// at an urgent mark (MSG_OOB), so a TCP socket that has signaled urgent
// data (PollPri) reads until EAGAIN from then on.
func (s *Socket) Read(t *Task, p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	for {
		if err := s.read.ready(t, "read", s.fd); err != nil {
			return 0, err
		}
		if !s.fr.acquire() {
			return 0, ErrClosed
		}
		n, err := sys.Read(s.fd, p)
		s.fr.releaseRef()
		switch {
		case err == nil && n == 0:
			return 0, io.EOF
		case err == nil:
			if n < len(p) && s.read.tcp {
				s.fr.spendDataEdge()
			}
			return n, nil
		case err == unix.EINTR:
		case err == unix.EAGAIN:
			s.fr.ClearReady(SlotRead)
		default:
			return 0, os.NewSyscallError("read", err)
		}
	}
}

// WaitReadable suspends task t until the socket has data (or a hang-up or
// error) to read, without a buffer: a server can wait on many idle
// connections and take a read buffer only for the one that is ready.
func (s *Socket) WaitReadable(t *Task) error {
	return s.read.ready(t, "read", s.fd)
}

// Write writes all of p inside task t, waiting while the fd is full. It
// returns len(p) or an error with the count written before it. Like Read,
// it makes the write system call only while the socket is known writable;
// a short write means the send buffer filled, and the next write waits for
// room.
func (s *Socket) Write(t *Task, p []byte) (int, error) {
	done := 0
	for done < len(p) {
		if err := s.write.ready(t, "write", s.fd); err != nil {
			return done, err
		}
		if !s.fr.acquire() {
			return done, ErrClosed
		}
		n, err := sys.Write(s.fd, p[done:])
		s.fr.releaseRef()
		switch {
		case err == nil:
			done += n
			if done < len(p) {
				s.fr.ClearEvents(SlotWrite, PollOut) // full: wait for room
			}
		case err == unix.EINTR:
		case err == unix.EAGAIN:
			s.fr.ClearReady(SlotWrite)
		default:
			return done, os.NewSyscallError("write", err)
		}
	}
	return done, nil
}

// SetReadDeadline sets the time after which Read fails (zero: never). Safe
// from any goroutine; a Read waiting now is woken if the deadline moved
// earlier than its wait.
func (s *Socket) SetReadDeadline(t time.Time) error {
	s.read.setDeadline(&s.fr.p.drv, t)
	return nil
}

// SetWriteDeadline sets the time after which Write fails (zero: never).
func (s *Socket) SetWriteDeadline(t time.Time) error {
	s.write.setDeadline(&s.fr.p.drv, t)
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
	if !s.fr.acquire() {
		return fmt.Errorf("iopool: CloseWrite fd %d: %w", s.fd, ErrClosed)
	}
	err := sys.Shutdown(s.fd, unix.SHUT_WR)
	s.fr.releaseRef()
	if err != nil {
		return fmt.Errorf("iopool: CloseWrite fd %d: %w", s.fd, os.NewSyscallError("shutdown", err))
	}
	return nil
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

// LocalAddr returns the socket's local address, or nil if it has none.
func (s *Socket) LocalAddr() net.Addr {
	if !s.fr.acquire() {
		return nil
	}
	sa, err := unix.Getsockname(s.fd)
	s.fr.releaseRef()
	if err != nil {
		return nil
	}
	return sockaddrToAddr(sa)
}

// RemoteAddr returns the peer's address, or nil if there is none.
func (s *Socket) RemoteAddr() net.Addr {
	if !s.fr.acquire() {
		return nil
	}
	sa, err := unix.Getpeername(s.fd)
	s.fr.releaseRef()
	if err != nil {
		return nil
	}
	return sockaddrToAddr(sa)
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
// (see Dial); from any other goroutine, on that goroutine.
func Listen(drv *Driver, network, addr string) (*Listener, error) {
	return ListenConfig{}.Listen(drv, network, addr)
}

// Listen listens with the configuration's options.
func (lc ListenConfig) Listen(drv *Driver, network, addr string) (*Listener, error) {
	sa, family, err := resolve(drv.p.callingTask(), network, addr)
	if err != nil {
		return nil, fmt.Errorf("iopool: listen %s %s: %w", network, addr, err)
	}
	fd, err := unix.Socket(family, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("iopool: listen %s %s: %w", network, addr, os.NewSyscallError("socket", err))
	}
	fail := func(call string, err error) (*Listener, error) {
		unix.Close(fd)
		return nil, fmt.Errorf("iopool: listen %s %s: %w", network, addr, os.NewSyscallError(call, err))
	}
	if family != unix.AF_UNIX {
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1); err != nil {
			return fail("setsockopt", err)
		}
		if lc.ReusePort {
			if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEPORT, 1); err != nil {
				return fail("setsockopt", err)
			}
		}
	}
	if err := unix.Bind(fd, sa); err != nil {
		return fail("bind", err)
	}
	backlog := lc.Backlog
	if backlog <= 0 {
		backlog = 4096
	}
	if err := unix.Listen(fd, backlog); err != nil {
		return fail("listen", err)
	}
	s, err := newSocket(drv, fd, family != unix.AF_UNIX)
	if err != nil {
		unix.Close(fd)
		return nil, err
	}
	return &Listener{sock: s, addr: s.LocalAddr()}, nil
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
// it backs off (10 ms doubling to 1 s) and tries again, so the listener
// keeps working once fds are freed.
func (l *Listener) Accept(t *Task) (*Socket, error) {
	backoff := acceptBackoffMin
	for {
		if !l.sock.fr.acquire() {
			return nil, ErrClosed
		}
		fd, _, err := sys.Accept4(l.sock.fd, unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC)
		l.sock.fr.releaseRef()
		switch {
		case err == nil:
			setAcceptedOptions(fd)
			s, err := newSocket(t.Driver(), fd, l.sock.read.tcp) // a listener's kind
			if err != nil {
				unix.Close(fd)
				return nil, err
			}
			return s, nil
		case err == unix.EINTR || err == unix.ECONNABORTED:
		case err == unix.EAGAIN:
			if err := l.sock.read.wait(t, "accept", l.sock.fd); err != nil {
				return nil, err
			}
		case err == unix.EMFILE || err == unix.ENFILE || err == unix.ENOBUFS || err == unix.ENOMEM:
			t.pool.logAcceptBackoff(l.addr, err, backoff)
			if err := t.Sleep(backoff); err != nil {
				return nil, err
			}
			backoff = min(2*backoff, acceptBackoffMax)
		default:
			return nil, fmt.Errorf("iopool: accept on %v: %w", l.addr, os.NewSyscallError("accept4", err))
		}
	}
}

// Dial connects to a tcp, tcp4, tcp6 or unix address inside task t,
// without blocking the loop. A host name ("localhost:8080") is looked up
// by net.DefaultResolver on a goroutine of its own, with t's Context, while
// t waits; canceling t cancels the lookup. The addresses found are tried in
// turn (an IPv4 one first), and the first connection made is returned, or
// the first address's error. As with package net, dialing a unix listener
// whose accept queue is full fails at once with an error wrapping EAGAIN.
func Dial(t *Task, network, addr string) (*Socket, error) {
	sas, err := resolveAll(t, network, addr)
	if err != nil {
		if errors.Is(err, ErrCanceled) {
			return nil, err
		}
		return nil, fmt.Errorf("iopool: dial %s %s: %w", network, addr, err)
	}
	var first error
	for _, ra := range sas {
		s, err := dialSockaddr(t, network, addr, ra.sa, ra.family)
		if err == nil {
			return s, nil
		}
		if first == nil {
			first = err
		}
		if t.Canceled() {
			break
		}
	}
	return nil, first
}

// dialSockaddr connects a new socket of family to sa inside task t.
func dialSockaddr(t *Task, network, addr string, sa unix.Sockaddr, family int) (*Socket, error) {
	fd, err := unix.Socket(family, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("iopool: dial %s %s: %w", network, addr, os.NewSyscallError("socket", err))
	}
	s, err := newSocket(t.Driver(), fd, family != unix.AF_UNIX)
	if err != nil {
		unix.Close(fd)
		return nil, err
	}
	err = unix.Connect(fd, sa)
	for err == unix.EINTR {
		err = unix.Connect(fd, sa)
	}
	if err == unix.EINPROGRESS {
		// Connecting: writable when done; SO_ERROR says how it ended. (A
		// unix socket never gets here: it connects at once, or fails with
		// EAGAIN when the listener's queue is full, which is returned like
		// package net does, not waited for: the socket stays unconnected.)
		if _, werr := Await[error](t, &s.write); werr != nil {
			s.Close()
			return nil, werr
		}
		var soerr int
		soerr, err = unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ERROR)
		if err == nil && soerr != 0 {
			err = unix.Errno(soerr)
		}
	}
	if err != nil {
		s.Close()
		return nil, fmt.Errorf("iopool: dial %s %s: %w", network, addr, os.NewSyscallError("connect", err))
	}
	if family != unix.AF_UNIX {
		_ = unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1)
	}
	return s, nil
}

func sockaddrToAddr(sa unix.Sockaddr) net.Addr {
	switch sa := sa.(type) {
	case *unix.SockaddrInet4:
		return &net.TCPAddr{IP: net.IP(sa.Addr[:]).To16(), Port: sa.Port}
	case *unix.SockaddrInet6:
		return &net.TCPAddr{IP: net.IP(sa.Addr[:]), Port: sa.Port}
	case *unix.SockaddrUnix:
		return &net.UnixAddr{Name: sa.Name, Net: "unix"}
	}
	return nil
}
