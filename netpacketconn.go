package iopool

import (
	"fmt"
	"net"
	"os"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// NetPacketConn returns ps as a net.PacketConn for code that runs on plain
// goroutines. Its methods may be called from any goroutine and
// concurrently (reads are serialized among themselves, and so are writes);
// a call that must wait parks its goroutine on the pool, which must be
// running (inside Run) for it to wake. ReadFrom reports a datagram larger
// than p with an error wrapping ErrTruncated after filling p; deadlines
// and Close behave as NetConn's.
//
// The net.PacketConn takes over ps: do not use it from tasks as well.
func (ps *PacketSocket) NetPacketConn() net.PacketConn {
	return &netPacketConn{ps: ps, rpark: newParkWaker(), wpark: newParkWaker()}
}

// netPacketConn is a PacketSocket seen from plain goroutines. The fd is
// owned by the PacketSocket's Socket; each read and write holds a reference
// for its syscall, so Close never closes the number under one.
type netPacketConn struct {
	ps       *PacketSocket
	rmu, wmu sync.Mutex // serialize readers, writers
	rpark    *parkWaker // rmu
	wpark    *parkWaker // wmu
}

var _ net.PacketConn = (*netPacketConn)(nil)

func (c *netPacketConn) opError(op string, addr net.Addr, err error) error {
	return &net.OpError{Op: op, Net: c.ps.network, Source: c.ps.laddr, Addr: addr, Err: err}
}

// ReadFrom reads one datagram into p, waiting while none is queued.
func (c *netPacketConn) ReadFrom(p []byte) (int, net.Addr, error) {
	c.rmu.Lock()
	defer c.rmu.Unlock()
	s := c.ps.s
	cx := &Context{waker: c.rpark}
	for {
		if s.read.expired() && !s.fr.ref.closing() {
			return 0, nil, c.opError("read", nil, os.ErrDeadlineExceeded)
		}
		if !s.fr.acquire() {
			return 0, nil, c.opError("read", nil, s.closedErr())
		}
		n, from, err := unix.Recvfrom(s.fd, p, unix.MSG_TRUNC)
		s.fr.releaseRef()
		switch {
		case err == nil:
			n, addr, err := c.ps.received(n, p, from)
			if err != nil {
				err = c.opError("read", addr, err)
			}
			return n, addr, err
		case err == unix.EINTR:
		case err == unix.EAGAIN:
			s.fr.ClearReady(SlotRead)
			if err := s.parkReady(&s.read, c.rpark, cx); err != nil {
				return 0, nil, c.opError("read", nil, err)
			}
		default:
			return 0, nil, c.opError("read", nil, os.NewSyscallError("recvfrom", err))
		}
	}
}

// WriteTo sends p as one datagram to addr, waiting while the send queue is
// full.
func (c *netPacketConn) WriteTo(p []byte, addr net.Addr) (int, error) {
	sa, err := c.ps.sockaddrOf(addr)
	if err != nil {
		return 0, c.opError("write", addr, err)
	}
	c.wmu.Lock()
	defer c.wmu.Unlock()
	s := c.ps.s
	cx := &Context{waker: c.wpark}
	for {
		if s.write.expired() && !s.fr.ref.closing() {
			return 0, c.opError("write", addr, os.ErrDeadlineExceeded)
		}
		if !s.fr.acquire() {
			return 0, c.opError("write", addr, s.closedErr())
		}
		err := unix.Sendto(s.fd, p, 0, sa)
		s.fr.releaseRef()
		switch {
		case err == nil:
			return len(p), nil
		case err == unix.EINTR:
		case err == unix.EAGAIN:
			s.fr.ClearReady(SlotWrite)
			if err := s.parkReady(&s.write, c.wpark, cx); err != nil {
				return 0, c.opError("write", addr, err)
			}
		case err == unix.EMSGSIZE:
			return 0, c.opError("write", addr, fmt.Errorf("a %d-byte datagram is larger than the socket can send: %w", len(p), os.NewSyscallError("sendto", err)))
		default:
			return 0, c.opError("write", addr, os.NewSyscallError("sendto", err))
		}
	}
}

// Close wakes the waiting calls, which fail with net.ErrClosed, and closes
// the socket once no call is inside a syscall with it.
func (c *netPacketConn) Close() error { return c.ps.Close() }

// LocalAddr returns the bound address.
func (c *netPacketConn) LocalAddr() net.Addr { return c.ps.laddr }

// SetDeadline sets both deadlines; a call waiting now sees it at once.
func (c *netPacketConn) SetDeadline(t time.Time) error {
	if c.ps.s.fr.ref.closing() {
		return c.opError("set", nil, net.ErrClosed)
	}
	return c.ps.SetDeadline(t)
}

// SetReadDeadline sets the read deadline.
func (c *netPacketConn) SetReadDeadline(t time.Time) error {
	if c.ps.s.fr.ref.closing() {
		return c.opError("set", nil, net.ErrClosed)
	}
	return c.ps.SetReadDeadline(t)
}

// SetWriteDeadline sets the write deadline.
func (c *netPacketConn) SetWriteDeadline(t time.Time) error {
	if c.ps.s.fr.ref.closing() {
		return c.opError("set", nil, net.ErrClosed)
	}
	return c.ps.SetWriteDeadline(t)
}
