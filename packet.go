//go:build linux

package iopool

import (
	"errors"
	"fmt"
	"net"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// PacketSocket is a datagram socket (UDP or unixgram) registered with a
// pool. ReadFrom and WriteTo take the task they run in and suspend it while
// the socket is not ready. One task may read while another writes; read and
// write deadlines work as Socket's do. Errors are *net.OpError (Op "read",
// "write"), as package net's.
type PacketSocket struct {
	s       *Socket
	network string
	family  int
	laddr   net.Addr // read once at creation; nil for an unbound socket
}

// ListenPacket opens a datagram socket bound to addr on the driver's pool, for
// the networks udp, udp4, udp6 ("127.0.0.1:0", "[::1]:5353", ":9999") and
// unixgram (a path, "@name" for the abstract namespace, or "" for an
// unbound socket that only sends). A host name in addr is looked up
// without blocking the pool when ListenPacket is called from one of its
// tasks (as Dial does); from any other goroutine, on that goroutine.
func (d *Driver) ListenPacket(network, addr string) (*PacketSocket, error) {
	var sa unix.Sockaddr
	var family int
	fail := func(err error) (*PacketSocket, error) {
		var a net.Addr
		if sa != nil {
			a = sockaddrToAddr(sa, sockKindOf(family, unix.SOCK_DGRAM))
		}
		return nil, &net.OpError{Op: "listen", Net: network, Addr: a, Err: err}
	}
	switch network {
	case "unixgram":
		family = unix.AF_UNIX
		if addr != "" {
			sa = &unix.SockaddrUnix{Name: addr}
		}
	case "udp", "udp4", "udp6":
		as, err := lookup(d.p.callingTask(), network, addr)
		if err != nil {
			return fail(err)
		}
		a := preferIPv4(as)
		if sa, family, err = inetSockaddr(network, a.ip, a.port, a.zone); err != nil {
			return fail(err)
		}
	default:
		return fail(fmt.Errorf("unsupported network %q (want udp, udp4, udp6 or unixgram)", network))
	}
	fd, err := unix.Socket(family, unix.SOCK_DGRAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fail(os.NewSyscallError("socket", err))
	}
	if sa != nil {
		if err := unix.Bind(fd, sa); err != nil {
			unix.Close(fd)
			return fail(os.NewSyscallError("bind", err))
		}
	}
	kind := sockKindOf(family, unix.SOCK_DGRAM)
	s, err := newSocket(d, fd, false, kind, PollIn|PollOut, true)
	if err != nil {
		unix.Close(fd)
		return fail(err)
	}
	ps := &PacketSocket{s: s, network: network, family: family}
	if sa != nil {
		// An unbound unixgram socket has no address (getsockname would
		// give "@"): LocalAddr stays nil.
		ps.laddr = s.LocalAddr()
	}
	return ps, nil
}

// Fd returns the socket's fd.
func (ps *PacketSocket) Fd() int { return ps.s.fd }

// LocalAddr returns the bound address (a *net.UDPAddr with the port the
// kernel chose for port 0, or a *net.UnixAddr), or nil for an unbound
// unixgram socket.
func (ps *PacketSocket) LocalAddr() net.Addr { return ps.laddr }

// readFrom is ReadFrom for any waiter: one datagram into p, its length and
// sender, and ErrTruncated if it was larger than p. Errors are bare.
func (ps *PacketSocket) readFrom(how waiter, p []byte) (int, net.Addr, error) {
	n, from, err := ps.s.doRecvFrom(how, p)
	if err != nil {
		return 0, nil, err
	}
	addr := sockaddrToAddr(from, ps.s.read.kind)
	if n > len(p) {
		return len(p), addr, fmt.Errorf("%w: a %d-byte datagram from %v into a %d-byte buffer", ErrTruncated, n, addr, len(p))
	}
	return n, addr, nil
}

// writeTo is WriteTo for any waiter. Errors are bare.
func (ps *PacketSocket) writeTo(how waiter, p []byte, addr net.Addr) (int, error) {
	sa, err := addrToSockaddr(addr, ps.family, ps.network)
	if err != nil {
		return 0, err
	}
	if err := ps.s.doSendTo(how, p, sa); err != nil {
		if errors.Is(err, unix.EMSGSIZE) {
			err = fmt.Errorf("a %d-byte datagram is larger than the socket can send: %w", len(p), err)
		}
		return 0, err
	}
	return len(p), nil
}

// opError wraps err as package net does for op on ps, to or from addr.
func (ps *PacketSocket) opError(op string, addr net.Addr, err error) error {
	if err == nil {
		return nil
	}
	return &net.OpError{Op: op, Net: ps.network, Source: ps.laddr, Addr: addr, Err: err}
}

// ReadFrom waits inside task t for a datagram, copies it into p and
// returns its length and sender. A datagram larger than p fills p and
// returns an error wrapping ErrTruncated. An expired read deadline fails
// with an error for which errors.Is(err, os.ErrDeadlineExceeded) holds.
func (ps *PacketSocket) ReadFrom(t *Task, p []byte) (int, net.Addr, error) {
	n, addr, err := ps.readFrom(waiter{t: t}, p)
	return n, addr, ps.opError("read", nil, err)
}

// WriteTo sends p as one datagram to addr (a *net.UDPAddr or
// *net.UnixAddr) inside task t, waiting while the socket's send queue is
// full. A datagram larger than the socket can send is an error naming its
// size (EMSGSIZE); nothing is sent. A nil address, typed or not, is an
// error ("missing address"), as in package net.
func (ps *PacketSocket) WriteTo(t *Task, p []byte, addr net.Addr) (int, error) {
	n, err := ps.writeTo(waiter{t: t}, p, addr)
	return n, ps.opError("write", addr, err)
}

// SetReadDeadline sets the time after which ReadFrom fails (zero: never).
// Safe from any goroutine.
func (ps *PacketSocket) SetReadDeadline(t time.Time) error { return ps.s.SetReadDeadline(t) }

// SetWriteDeadline sets the time after which WriteTo fails (zero: never).
func (ps *PacketSocket) SetWriteDeadline(t time.Time) error { return ps.s.SetWriteDeadline(t) }

// SetDeadline sets both deadlines.
func (ps *PacketSocket) SetDeadline(t time.Time) error { return ps.s.SetDeadline(t) }

// SetReadBuffer sets the kernel's receive buffer size (SO_RCVBUF).
func (ps *PacketSocket) SetReadBuffer(bytes int) error { return ps.s.SetReadBuffer(bytes) }

// SetWriteBuffer sets the kernel's send buffer size (SO_SNDBUF).
func (ps *PacketSocket) SetWriteBuffer(bytes int) error { return ps.s.SetWriteBuffer(bytes) }

// Close removes the registration and closes the socket; tasks waiting on
// it wake and fail. A bound unixgram path stays in the file system, as
// with package net's unixgram sockets: remove it when done. Closing twice
// is a no-op.
func (ps *PacketSocket) Close() error { return ps.s.Close() }
