//go:build linux

package iopool

import (
	"fmt"
	"time"

	"golang.org/x/sys/unix"
)

// Socket options with the meaning they have on Go's *net.TCPConn. Each
// returns a *net.OpError (Op "set") over the setsockopt *os.SyscallError;
// on a closed socket it wraps ErrClosed, without a syscall (the fd number
// may already name another file). Options that only TCP has fail with the kernel's EOPNOTSUPP or
// ENOPROTOOPT on a unix socket.

// setConnOptions gives an accepted or dialed connection the options Go's
// net package gives it: TCP_NODELAY, so small writes go out at once. It
// fails harmlessly (ignored) on a unix socket.
func setConnOptions(fd int) {
	_ = unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1)
}

func (s *Socket) setsockoptInt(level, opt int, name string, v int) error {
	return s.setsockopt(func(fd int) error { return unix.SetsockoptInt(fd, level, opt, v) })
}

// setsockopt makes set through the fd's door and shapes its error as
// package net does: a *net.OpError with Op "set" over an *os.SyscallError.
func (s *Socket) setsockopt(set func(fd int) error) error {
	err := s.fr.withFd(func(fd int) error { return syscallErr("setsockopt", set(fd)) })
	return s.opError("set", err)
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// SetNoDelay turns Nagle's algorithm off (true, the default for sockets
// from Dial and Accept, as in package net) or on (false, to coalesce small
// writes).
func (s *Socket) SetNoDelay(noDelay bool) error {
	return s.setsockoptInt(unix.IPPROTO_TCP, unix.TCP_NODELAY, "TCP_NODELAY", boolInt(noDelay))
}

// SetKeepAlive turns TCP keep-alive probes on or off.
func (s *Socket) SetKeepAlive(keepAlive bool) error {
	return s.setsockoptInt(unix.SOL_SOCKET, unix.SO_KEEPALIVE, "SO_KEEPALIVE", boolInt(keepAlive))
}

// SetKeepAlivePeriod sets both the idle time before the first keep-alive
// probe and the interval between probes, rounded up to whole seconds (the
// kernel's unit), as net.TCPConn.SetKeepAlivePeriod does. A period ≤ 0 is
// an error.
func (s *Socket) SetKeepAlivePeriod(d time.Duration) error {
	if d <= 0 {
		return fmt.Errorf("iopool: SetKeepAlivePeriod(%v) on fd %d: want a period > 0", d, s.fd)
	}
	secs := int((d + time.Second - 1) / time.Second)
	if err := s.setsockoptInt(unix.IPPROTO_TCP, unix.TCP_KEEPIDLE, "TCP_KEEPIDLE", secs); err != nil {
		return err
	}
	return s.setsockoptInt(unix.IPPROTO_TCP, unix.TCP_KEEPINTVL, "TCP_KEEPINTVL", secs)
}

// SetReadBuffer sets the size of the kernel's receive buffer (SO_RCVBUF;
// the kernel doubles it for bookkeeping and caps it at net.core.rmem_max).
func (s *Socket) SetReadBuffer(bytes int) error {
	if bytes <= 0 {
		return fmt.Errorf("iopool: SetReadBuffer(%d) on fd %d: want a size > 0", bytes, s.fd)
	}
	return s.setsockoptInt(unix.SOL_SOCKET, unix.SO_RCVBUF, "SO_RCVBUF", bytes)
}

// SetWriteBuffer sets the size of the kernel's send buffer (SO_SNDBUF).
func (s *Socket) SetWriteBuffer(bytes int) error {
	if bytes <= 0 {
		return fmt.Errorf("iopool: SetWriteBuffer(%d) on fd %d: want a size > 0", bytes, s.fd)
	}
	return s.setsockoptInt(unix.SOL_SOCKET, unix.SO_SNDBUF, "SO_SNDBUF", bytes)
}

// SetLinger sets what Close does with unsent data, as
// net.TCPConn.SetLinger: sec < 0 (the default) sends it in the background;
// sec == 0 discards it and resets the connection; sec > 0 sends it in the
// background and resets the connection after sec seconds.
func (s *Socket) SetLinger(sec int) error {
	l := unix.Linger{}
	if sec >= 0 {
		l.Onoff, l.Linger = 1, int32(sec)
	}
	return s.setsockopt(func(fd int) error { return unix.SetsockoptLinger(fd, unix.SOL_SOCKET, unix.SO_LINGER, &l) })
}

// The same options on a NetConn, as on *net.TCPConn, for code that holds
// the net.Conn (an http.Server's ConnState hook, a custom listener).

// SetNoDelay turns Nagle's algorithm off (true) or on; see Socket.SetNoDelay.
func (c *NetConn) SetNoDelay(noDelay bool) error { return c.s.SetNoDelay(noDelay) }

// SetKeepAlive turns TCP keep-alive probes on or off.
func (c *NetConn) SetKeepAlive(keepAlive bool) error { return c.s.SetKeepAlive(keepAlive) }

// SetKeepAlivePeriod sets the keep-alive idle time and interval; see
// Socket.SetKeepAlivePeriod.
func (c *NetConn) SetKeepAlivePeriod(d time.Duration) error { return c.s.SetKeepAlivePeriod(d) }

// SetReadBuffer sets the kernel's receive buffer size (SO_RCVBUF).
func (c *NetConn) SetReadBuffer(bytes int) error { return c.s.SetReadBuffer(bytes) }

// SetWriteBuffer sets the kernel's send buffer size (SO_SNDBUF).
func (c *NetConn) SetWriteBuffer(bytes int) error { return c.s.SetWriteBuffer(bytes) }

// SetLinger sets what Close does with unsent data; see Socket.SetLinger.
func (c *NetConn) SetLinger(sec int) error { return c.s.SetLinger(sec) }
