//go:build linux

package iopool

import (
	"fmt"
	"io"
	"net"
	"os"

	"golang.org/x/sys/unix"

	"github.com/iopool/iopool/internal/sys"
)

// The one I/O path. Each socket operation (read, write, accept, recvfrom,
// sendto, connect completion) is written once, here, as Go's internal/poll
// writes FD.Read over pollDesc.waitRead: the syscall loop, the fd reference
// (withFd, the one door to the number), EAGAIN and EINTR, the edge
// bookkeeping and the short-read rule. The caller says only how to wait
// (see waiter): Socket's methods pass their task, the net adapters
// (NetConn, NetListener, NetPacketConn) their goroutine's side of the
// runtime's poller (goSide), TryRead and TryWrite nobody. Socket.Read and
// Socket.Write pass nobody too and wait themselves (ioWait.wait) when told
// ErrWouldBlock: a task suspended there keeps a shallower stack (see
// Socket.Read). Errors leave these functions bare (an *os.SyscallError,
// ErrClosed, os.ErrDeadlineExceeded, ErrCanceled, io.EOF, ErrWouldBlock);
// each caller wraps them in the *net.OpError it reports.
//
// A task makes a syscall only while the side's readiness is recorded, or
// when the side's hint says to try at once (ioWait.tryNext: the side's
// first call, the call after a wait that ended ready, a write after a
// write that took everything); after EAGAIN (or a short read, see doRead)
// the side waits for the kernel's next edge. A hinted try is the syscall
// path's alone: it is not recorded as readiness, so a wait without a
// syscall (WaitReadable) waits for the kernel's word. A task runs on the
// loop, which records the edges, so its record is current. TryRead and
// TryWrite trust the record: they are called after a wait on the pool's
// readiness (or on a new socket), when it is current.
//
// A goroutine's socket is out of the pool's epoll set: it tries the
// syscall first and waits in the runtime's poller after EAGAIN, as package
// net's goroutines do; the runtime resets its readiness before the first
// try, so no edge is lost between a try and the wait. The loop's readiness
// record plays no part there.

// ioArgs are one socket operation's arguments and results, passed by
// pointer from the operation (doRead, doAccept, ...) through ioLoop to its
// system call (Socket.call): no closure is made per operation, and a
// task's ioArgs stay on its stack (a goroutine's wait copies them, see
// goSide.loop).
type ioArgs struct {
	p   []byte                // read, write, recvfrom, sendto: the buffer
	sa  unix.Sockaddr         // sendto: the destination; recvfrom: the sender
	raw func(fd uintptr) bool // RawConn.Read and Write: the caller's function
	n   int                   // the bytes moved; accept: the new fd
}

// ioCall names an operation's system call (see ioLoop). It is a number,
// not a function value: a call through a function value would make its
// *ioArgs escape to the heap.
type ioCall uint8

const (
	callRead     ioCall = iota // read(2) into a.p
	callWrite                  // write(2) of a.p
	callAccept                 // accept4(2); a.n is the new fd, a.sa its peer
	callRecvFrom               // recvfrom(2) into a.p; a.sa is the sender
	callSendTo                 // sendto(2) of a.p to a.sa
	callRaw                    // a RawConn's function: not done is EAGAIN
)

// ioLoop makes the nonblocking system call c on side w, with a's arguments
// and into a's results, until it does something other than fail with
// EAGAIN or EINTR, waiting as how says for the side's readiness before
// each try. It is the package's one call site of each of these system
// calls (of read(2), through readFd). It returns the call's error as the
// kernel gave it (a unix.Errno), or why it could not make the call.
//
// A goroutine's wait (how.g) calls back here once per try of the runtime's
// poller, with how.now: the call is made at once, and EAGAIN ends the try
// with ErrWouldBlock (the goroutine then waits in the poller).
func (s *Socket) ioLoop(w *ioWait, how waiter, c ioCall, a *ioArgs) error {
	if how.g != nil {
		return how.g.loop(c, a)
	}
	try := how.now || w.tryNext
	for {
		if err := w.await(how, try); err != nil {
			return err
		}
		if !how.now {
			w.tryNext = false // spent by this call (a wait in await set it again)
		}
		// The door to the number (as withFd, written out: the closure
		// and withFd's frame would sit at the deepest point of a task's
		// read, see sys.Read). Only a RawConn's function, the caller's
		// code, can panic between acquire and releaseRef; callRaw drops
		// the reference itself then.
		if !s.fr.acquire() {
			return s.fr.closedErr()
		}
		var err error
		switch fd := s.fr.fd; c {
		case callRead:
			a.n, err = s.fr.readFd(fd, a.p)
		case callWrite:
			a.n, err = sys.Write(s.fr.p.be.faults, fd, a.p)
		default:
			err = s.callOther(c, fd, a)
		}
		s.fr.releaseRef()
		switch err {
		case unix.EINTR:
			// A signal arrived before any data moved: try again.
			try = true
		case unix.EAGAIN:
			if how.now {
				return ErrWouldBlock
			}
			// The edge is spent: wait for the next one.
			w.fr.ClearReady(w.slot)
			try = false
		default:
			return err
		}
	}
}

// callOther is ioLoop's system call for what is not a read or a write, out
// of line so that the frames of a task's read stay small (see
// TestRegressionTaskInReadFitsTheSmallestStack).
func (s *Socket) callOther(c ioCall, fd int, a *ioArgs) (err error) {
	faults := s.fr.p.be.faults
	switch c {
	case callAccept:
		a.n, a.sa, err = sys.Accept4(faults, fd, unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC)
	case callRecvFrom:
		// MSG_TRUNC makes the kernel return a datagram's real length.
		a.n, a.sa, err = sys.Recvfrom(faults, fd, a.p, unix.MSG_TRUNC)
	case callSendTo:
		err = sys.Sendto(faults, fd, a.p, 0, a.sa)
	case callRaw:
		err = s.callRaw(fd, a)
	default:
		panic(fmt.Sprintf("iopool: unknown ioCall %d", c))
	}
	return err
}

// callRaw runs a RawConn's function with the number ioLoop holds a
// reference on. The function is the caller's code: if it panics or calls
// runtime.Goexit, the reference is dropped here on the way out (ioLoop
// drops it otherwise).
func (s *Socket) callRaw(fd int, a *ioArgs) error {
	returned := false
	defer func() {
		if !returned {
			s.fr.releaseRef()
		}
	}()
	done := a.raw(uintptr(fd))
	returned = true
	if !done {
		return unix.EAGAIN
	}
	return nil
}

// readFd is read(2) on fd, the fd of fr, through the pool's fault seam:
// the package's one call of it, for sockets (doRead) and for the counter of
// an FdSignal. The caller holds a reference on fd.
func (fr *FdReady) readFd(fd int, p []byte) (int, error) {
	return sys.Read(fr.p.be.faults, fd, p)
}

// syscallErr wraps a kernel error as package net does; other errors (a
// closed socket, a deadline) are returned as they are. Out of line: the
// error path's frame stays off the read's and write's (see
// TestRegressionTaskEchoFitsTheSmallestStack).
//
//go:noinline
func syscallErr(call string, err error) error {
	if errno, ok := err.(unix.Errno); ok {
		return os.NewSyscallError(call, errno)
	}
	return err
}

// doRead reads once into p. It returns io.EOF at the end of a stream (a
// zero-byte read: on a datagram socket, an empty datagram is not the end).
//
// The short-read rule: on a TCP stream (read.tcp), a read that returns
// less than len(p) proves the receive queue empty, so the data edge is
// spent (spendDataEdge, which says why that is safe and why not at an
// urgent mark) and the next read waits for the next edge instead of paying
// for a read that would fail with EAGAIN; a hang-up that came with the
// data stays ready, so the read after it returns EOF at once. Every other
// fd reads until EAGAIN (the package documentation says why).
func (s *Socket) doRead(how waiter, p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	a := ioArgs{p: p}
	err := s.ioLoop(&s.read, how, callRead, &a)
	n := a.n
	switch {
	case err != nil:
		return 0, syscallErr("read", err)
	case n == 0 && s.read.kind != kindUDP && s.read.kind != kindUnixgram:
		return 0, io.EOF
	case n < len(p) && s.read.tcp && how.g == nil:
		s.fr.spendDataEdge()
	}
	return n, nil
}

// doWrite writes all of p, or as much as the socket takes before the wait
// (how) fails, and returns the count written.
//
// The short-write rule: on a socket, a write that takes less than it was
// given means the send buffer filled, so PollOut is forgotten and the next
// write waits for room instead of failing with EAGAIN. The kernel owes
// that wait an edge: a stream socket that runs out of send space sets
// SOCK_NOSPACE on the way out of sendmsg (tcp_sendmsg_locked,
// sock_alloc_send_pskb), and freed space then calls sk_write_space
// (sk_stream_write_space, unix_write_space), a new EPOLLOUT edge. Any
// other fd (a pipe, a tty) writes until EAGAIN.
func (s *Socket) doWrite(how waiter, p []byte) (int, error) {
	done := 0
	for done < len(p) {
		a := ioArgs{p: p[done:]}
		if err := s.ioLoop(&s.write, how, callWrite, &a); err != nil {
			return done, syscallErr("write", err)
		}
		done += a.n
		if done < len(p) && s.write.kind != kindOther && how.g == nil {
			s.fr.ClearEvents(SlotWrite, PollOut) // full: wait for room
		}
	}
	if len(p) > 0 && how.g == nil {
		// It took everything: the next write tries at once (tryNext).
		s.write.tryNext = true
	}
	return done, nil
}

// doAccept accepts one connection on listening socket s and returns it
// registered on s's pool, of s's kind, with its peer's address as accept4
// gave it (a NetConn keeps it, sparing a getpeername). When the process or system is out
// of fds (EMFILE, ENFILE, or out of memory) it logs, pauses (10 ms
// doubling to 1 s; Close ends the pause) and tries again, so the listener
// keeps working once fds are freed.
func (s *Socket) doAccept(how waiter, addr net.Addr) (*Socket, unix.Sockaddr, error) {
	backoff := acceptBackoffMin
	for {
		var a ioArgs
		err := s.ioLoop(&s.read, how, callAccept, &a)
		switch err {
		case nil:
			nfd := a.n
			if s.read.kind == kindTCP {
				setConnOptions(nfd)
			}
			// A connection accepted by a goroutine is served by goroutines,
			// through the runtime's poller: it never joins the pool's
			// epoll set (see goPoll).
			c, err := newSocket(&s.fr.p.drv, nfd, s.read.tcp, s.read.kind, PollIn|PollOut, how.g == nil)
			if err != nil {
				unix.Close(nfd)
				return nil, nil, err
			}
			return c, a.sa, nil
		case unix.ECONNABORTED:
			// Reset while it waited in the queue: take the next one.
		case unix.EMFILE, unix.ENFILE, unix.ENOBUFS, unix.ENOMEM:
			s.fr.p.logAcceptBackoff(addr, err, backoff)
			if err := s.read.pause(how, backoff); err != nil {
				return nil, nil, err
			}
			backoff = min(2*backoff, acceptBackoffMax)
		default:
			return nil, nil, syscallErr("accept4", err)
		}
	}
}

// doConnectWait waits for a nonblocking connect that returned EINPROGRESS
// to finish, and returns how it ended (SO_ERROR).
func (s *Socket) doConnectWait(how waiter) error {
	// Writable when done (the deadline of a new socket's write side is
	// none); SO_ERROR says how it ended.
	if err := s.write.await(how, false); err != nil {
		return err
	}
	return s.fr.withFd(func(fd int) error {
		soerr, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ERROR)
		if err == nil && soerr != 0 {
			err = unix.Errno(soerr)
		}
		return syscallErr("connect", err)
	})
}

// doRecvFrom receives one datagram into p. MSG_TRUNC makes the kernel
// return the datagram's real length; n > len(p) means it was cut.
func (s *Socket) doRecvFrom(how waiter, p []byte) (n int, from unix.Sockaddr, err error) {
	a := ioArgs{p: p}
	err = s.ioLoop(&s.read, how, callRecvFrom, &a)
	return a.n, a.sa, syscallErr("recvfrom", err)
}

// doSendTo sends p as one datagram to sa.
func (s *Socket) doSendTo(how waiter, p []byte, sa unix.Sockaddr) error {
	a := ioArgs{p: p, sa: sa}
	return syscallErr("sendto", s.ioLoop(&s.write, how, callSendTo, &a))
}
