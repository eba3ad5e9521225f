//go:build linux

package iopool

import (
	"net"
	"os"

	"golang.org/x/sys/unix"
)

// Dial connects to a tcp, tcp4, tcp6 or unix address inside task t,
// without blocking the loop. A host name ("localhost:8080") is looked up
// by net.DefaultResolver on a goroutine of its own, with t's Context, while
// t waits; canceling t cancels the lookup. The addresses found are tried in
// turn (an IPv4 one first), and the first connection made is returned, or
// the first address's error. As with package net, dialing a unix listener
// whose accept queue is full fails at once with an error wrapping EAGAIN.
// Errors are *net.OpError with Op "dial", as package net's (a refused
// connection is one wrapping a connect *os.SyscallError with
// ECONNREFUSED).
func Dial(t *Task, network, addr string) (*Socket, error) {
	sas, err := resolveAll(t, network, addr)
	if err != nil {
		return nil, &net.OpError{Op: "dial", Net: network, Err: err}
	}
	var first error
	for _, ra := range sas {
		s, err := dialSockaddr(t, ra.sa, ra.family)
		if err == nil {
			return s, nil
		}
		if first == nil {
			kind := sockKindOf(ra.family, unix.SOCK_STREAM)
			first = &net.OpError{Op: "dial", Net: network, Addr: sockaddrToAddr(ra.sa, kind), Err: err}
		}
		if t.Canceled() {
			break
		}
	}
	return nil, first
}

// dialSockaddr connects a new socket of family to sa inside task t.
func dialSockaddr(t *Task, sa unix.Sockaddr, family int) (*Socket, error) {
	fd, err := unix.Socket(family, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, os.NewSyscallError("socket", err)
	}
	// The fd is not registered yet and nobody else has it: the connect
	// needs no reference.
	err = unix.Connect(fd, sa)
	for err == unix.EINTR {
		err = unix.Connect(fd, sa)
	}
	ready := PollIn | PollOut
	switch err {
	case nil:
	case unix.EINPROGRESS:
		// Connecting: the first PollOut edge says it is done. (A unix
		// socket never gets here: it connects at once, or fails with
		// EAGAIN when the listener's queue is full, which is returned as
		// package net does, not waited for.)
		ready = PollIn
	default:
		unix.Close(fd)
		return nil, os.NewSyscallError("connect", err)
	}
	s, err := newSocket(t.Driver(), fd, family != unix.AF_UNIX, sockKindOf(family, unix.SOCK_STREAM), ready, true)
	if err != nil {
		unix.Close(fd)
		return nil, err
	}
	if ready&PollOut == 0 {
		if err := s.doConnectWait(waiter{t: t}); err != nil {
			s.Close()
			return nil, err
		}
	}
	if family != unix.AF_UNIX {
		setConnOptions(fd)
	}
	return s, nil
}
