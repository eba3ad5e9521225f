//go:build linux

package iopool

import (
	"syscall"
)

// SyscallConn returns the connection as a syscall.RawConn, as
// *net.TCPConn's SyscallConn does, for code that makes its own system calls
// on the fd (socket options package net does not offer, sendmsg with
// control messages). The calls go through the connection's one door and
// one I/O path: Control runs f with the fd number while holding the
// reference that keeps Close from closing the number under f; Read and
// Write run f until it reports done, parking the goroutine for the
// socket's readiness in between, as the NetConn's Read and Write do. After
// Close they fail with an error matching net.ErrClosed and do not call f.
// f must not block.
func (c *NetConn) SyscallConn() (syscall.RawConn, error) { return rawConn{c}, nil }

// rawConn is a NetConn seen as a syscall.RawConn.
type rawConn struct{ c *NetConn }

var _ syscall.RawConn = rawConn{}

// Control runs f with the fd number.
func (rc rawConn) Control(f func(fd uintptr)) error {
	err := rc.c.s.fr.withFd(func(fd int) error { f(uintptr(fd)); return nil })
	return rc.c.opError("raw-control", err)
}

// Read runs f until it returns true, waiting for the socket to be readable
// each time it returns false.
func (rc rawConn) Read(f func(fd uintptr) (done bool)) error {
	c := rc.c
	if c.err != nil {
		return c.opError("raw-read", c.err)
	}
	c.rmu.Lock()
	defer c.rmu.Unlock()
	a := ioArgs{raw: f}
	return c.opError("raw-read", c.s.ioLoop(&c.s.read, waiter{g: &c.gp.read}, callRaw, &a))
}

// Write runs f until it returns true, waiting for the socket to be
// writable each time it returns false.
func (rc rawConn) Write(f func(fd uintptr) (done bool)) error {
	c := rc.c
	if c.err != nil {
		return c.opError("raw-write", c.err)
	}
	c.wmu.Lock()
	defer c.wmu.Unlock()
	a := ioArgs{raw: f}
	return c.opError("raw-write", c.s.ioLoop(&c.s.write, waiter{g: &c.gp.write}, callRaw, &a))
}
