package iopool

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"time"

	"golang.org/x/sys/unix"
)

// ErrTruncated is returned (wrapped) by ReadFrom when a datagram was larger
// than the buffer: the buffer holds its first len(p) bytes, the rest is
// lost, and the error says how large the datagram was. Package net cuts
// such a datagram silently; here the caller learns to use a larger buffer.
var ErrTruncated = errors.New("iopool: datagram truncated")

// PacketSocket is a datagram socket (UDP or unixgram) registered with a
// pool. ReadFrom and WriteTo take the task they run in and suspend it while
// the socket is not ready. One task may read while another writes; read and
// write deadlines work as Socket's do.
type PacketSocket struct {
	s       *Socket
	network string
	family  int
	laddr   net.Addr // read once at creation
}

// ListenPacket opens a datagram socket bound to addr on drv's pool, for
// the networks udp, udp4, udp6 ("127.0.0.1:0", "[::1]:5353", ":9999") and
// unixgram (a path, "@name" for the abstract namespace, or "" for an
// unbound socket that only sends). A host name in addr is looked up
// without blocking the pool when ListenPacket is called from one of its
// tasks (as Dial does); from any other goroutine, on that goroutine.
func ListenPacket(drv *Driver, network, addr string) (*PacketSocket, error) {
	fail := func(err error) (*PacketSocket, error) {
		return nil, fmt.Errorf("iopool: listen %s %s: %w", network, addr, err)
	}
	var sa unix.Sockaddr
	var family int
	switch network {
	case "unixgram":
		family = unix.AF_UNIX
		if addr != "" {
			sa = &unix.SockaddrUnix{Name: addr}
		}
	case "udp", "udp4", "udp6":
		as, err := lookup(drv.p.callingTask(), network, addr)
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
	s, err := NewSocket(drv, fd)
	if err != nil {
		unix.Close(fd)
		return nil, err
	}
	ps := &PacketSocket{s: s, network: network, family: family}
	// Nobody else has the socket yet: no reference needed.
	if lsa, err := unix.Getsockname(fd); err == nil {
		ps.laddr = ps.addrOf(lsa)
	}
	return ps, nil
}

// inetSockaddr builds the sockaddr for ip:port as network wants it: an IPv4
// socket for udp4, and for udp with an IPv4 or unspecified address; IPv6
// otherwise.
func inetSockaddr(network string, ip net.IP, port int, zone string) (unix.Sockaddr, int, error) {
	if ip4 := ip.To4(); network != "udp6" && network != "tcp6" && (ip4 != nil || ip == nil) {
		sa := &unix.SockaddrInet4{Port: port}
		if ip4 != nil {
			copy(sa.Addr[:], ip4)
		}
		return sa, unix.AF_INET, nil
	}
	if network == "udp4" || network == "tcp4" {
		return nil, 0, fmt.Errorf("%v is not an IPv4 address", ip)
	}
	sa := &unix.SockaddrInet6{Port: port}
	copy(sa.Addr[:], ip.To16())
	if zone != "" {
		if ifi, err := net.InterfaceByName(zone); err == nil {
			sa.ZoneId = uint32(ifi.Index)
		} else if n, err := strconv.ParseUint(zone, 10, 32); err == nil {
			sa.ZoneId = uint32(n) // "fe80::1%2": an interface index
		} else {
			return nil, 0, fmt.Errorf("unknown IPv6 zone %q (want an interface name or index)", zone)
		}
	}
	return sa, unix.AF_INET6, nil
}

// addrOf converts a sockaddr of this socket's family to a net.Addr.
func (ps *PacketSocket) addrOf(sa unix.Sockaddr) net.Addr {
	switch sa := sa.(type) {
	case *unix.SockaddrInet4:
		return &net.UDPAddr{IP: net.IP(sa.Addr[:]).To16(), Port: sa.Port}
	case *unix.SockaddrInet6:
		a := &net.UDPAddr{IP: net.IP(sa.Addr[:]), Port: sa.Port}
		if sa.ZoneId != 0 {
			if ifi, err := net.InterfaceByIndex(int(sa.ZoneId)); err == nil {
				a.Zone = ifi.Name
			}
		}
		return a
	case *unix.SockaddrUnix:
		return &net.UnixAddr{Name: sa.Name, Net: "unixgram"}
	}
	return nil
}

// sockaddrOf converts a destination to a sockaddr of this socket's family.
func (ps *PacketSocket) sockaddrOf(addr net.Addr) (unix.Sockaddr, error) {
	switch a := addr.(type) {
	case *net.UDPAddr:
		if ps.family == unix.AF_UNIX {
			return nil, fmt.Errorf("a %s socket cannot send to the UDP address %v", ps.network, a)
		}
		if ip4 := a.IP.To4(); ip4 != nil && ps.family == unix.AF_INET {
			sa := &unix.SockaddrInet4{Port: a.Port}
			copy(sa.Addr[:], ip4)
			return sa, nil
		}
		if ps.family == unix.AF_INET {
			return nil, fmt.Errorf("an IPv4 socket cannot send to the IPv6 address %v", a)
		}
		sa, _, err := inetSockaddr("udp6", a.IP, a.Port, a.Zone)
		return sa, err
	case *net.UnixAddr:
		if ps.family != unix.AF_UNIX {
			return nil, fmt.Errorf("a %s socket cannot send to the unix address %v", ps.network, a)
		}
		return &unix.SockaddrUnix{Name: a.Name}, nil
	case nil:
		return nil, errors.New("nil destination address")
	}
	return nil, fmt.Errorf("unsupported destination address type %T (want *net.UDPAddr or *net.UnixAddr)", addr)
}

// Fd returns the socket's fd.
func (ps *PacketSocket) Fd() int { return ps.s.fd }

// LocalAddr returns the bound address (a *net.UDPAddr with the port the
// kernel chose for port 0, or a *net.UnixAddr), or nil for an unbound
// unixgram socket.
func (ps *PacketSocket) LocalAddr() net.Addr { return ps.laddr }

// received turns a recvfrom result into ReadFrom's.
func (ps *PacketSocket) received(n int, p []byte, from unix.Sockaddr) (int, net.Addr, error) {
	addr := ps.addrOf(from)
	if n > len(p) {
		return len(p), addr, fmt.Errorf("%w: a %d-byte datagram from %v into a %d-byte buffer", ErrTruncated, n, addr, len(p))
	}
	return n, addr, nil
}

// ReadFrom waits inside task t for a datagram, copies it into p and
// returns its length and sender. A datagram larger than p fills p and
// returns an error wrapping ErrTruncated. An expired read deadline fails
// with an error for which errors.Is(err, os.ErrDeadlineExceeded) holds.
func (ps *PacketSocket) ReadFrom(t *Task, p []byte) (int, net.Addr, error) {
	s := ps.s
	for {
		if err := s.read.ready(t, "recvfrom", s.fd); err != nil {
			return 0, nil, err
		}
		if !s.fr.acquire() {
			return 0, nil, ErrClosed
		}
		// MSG_TRUNC: the kernel returns the datagram's real length.
		n, from, err := unix.Recvfrom(s.fd, p, unix.MSG_TRUNC)
		s.fr.releaseRef()
		switch {
		case err == nil:
			return ps.received(n, p, from)
		case err == unix.EINTR:
		case err == unix.EAGAIN:
			s.fr.ClearReady(SlotRead)
		default:
			return 0, nil, fmt.Errorf("iopool: recvfrom fd %d: %w", s.fd, os.NewSyscallError("recvfrom", err))
		}
	}
}

// WriteTo sends p as one datagram to addr (a *net.UDPAddr or
// *net.UnixAddr) inside task t, waiting while the socket's send queue is
// full. A datagram larger than the socket can send is an error naming its
// size (EMSGSIZE); nothing is sent.
func (ps *PacketSocket) WriteTo(t *Task, p []byte, addr net.Addr) (int, error) {
	s := ps.s
	sa, err := ps.sockaddrOf(addr)
	if err != nil {
		return 0, fmt.Errorf("iopool: sendto fd %d: %w", s.fd, err)
	}
	for {
		if err := s.write.ready(t, "sendto", s.fd); err != nil {
			return 0, err
		}
		if !s.fr.acquire() {
			return 0, ErrClosed
		}
		err := unix.Sendto(s.fd, p, 0, sa)
		s.fr.releaseRef()
		switch {
		case err == nil:
			return len(p), nil
		case err == unix.EINTR:
		case err == unix.EAGAIN:
			s.fr.ClearReady(SlotWrite)
		default:
			return 0, ps.sendError(addr, len(p), err)
		}
	}
}

func (ps *PacketSocket) sendError(addr net.Addr, n int, err error) error {
	if err == unix.EMSGSIZE {
		return fmt.Errorf("iopool: sendto %v: a %d-byte datagram is larger than the socket can send: %w", addr, n, os.NewSyscallError("sendto", err))
	}
	return fmt.Errorf("iopool: sendto %v: %w", addr, os.NewSyscallError("sendto", err))
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
