//go:build linux

package iopool

import (
	"net"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// Each option is read back from the kernel after it is set; bad values and
// a closed socket give errors that name the problem.
func TestSocketOptionsReadBack(t *testing.T) {
	parallel(t)
	runPool(t, func(tk *Task) error {
		l, err := tk.Driver().Listen("tcp", "127.0.0.1:0")
		require.NoError(t, err)
		defer l.Close()
		peer, dialErr := make(chan net.Conn, 1), make(chan error, 1)
		go func() {
			c, err := net.Dial("tcp", l.Addr().String())
			dialErr <- err // checked by the test's goroutine
			peer <- c
		}()
		require.NoError(t, <-dialErr)
		s, err := l.Accept(tk)
		require.NoError(t, err)
		defer func() { (<-peer).Close() }()
		fd := s.Fd()
		get := func(level, opt int) int {
			v, err := unix.GetsockoptInt(fd, level, opt)
			require.NoError(t, err)
			return v
		}

		require.NoError(t, s.SetNoDelay(false))
		require.Equal(t, 0, get(unix.IPPROTO_TCP, unix.TCP_NODELAY))
		require.NoError(t, s.SetNoDelay(true))
		require.Equal(t, 1, get(unix.IPPROTO_TCP, unix.TCP_NODELAY))

		require.NoError(t, s.SetKeepAlive(true))
		require.Equal(t, 1, get(unix.SOL_SOCKET, unix.SO_KEEPALIVE))
		require.NoError(t, s.SetKeepAlivePeriod(1500*time.Millisecond))
		require.Equal(t, 2, get(unix.IPPROTO_TCP, unix.TCP_KEEPIDLE), "rounded up to whole seconds")
		require.Equal(t, 2, get(unix.IPPROTO_TCP, unix.TCP_KEEPINTVL))
		require.ErrorContains(t, s.SetKeepAlivePeriod(0), "want a period > 0")

		require.NoError(t, s.SetReadBuffer(64<<10))
		require.GreaterOrEqual(t, get(unix.SOL_SOCKET, unix.SO_RCVBUF), 64<<10)
		require.NoError(t, s.SetWriteBuffer(32<<10))
		require.GreaterOrEqual(t, get(unix.SOL_SOCKET, unix.SO_SNDBUF), 32<<10)
		require.ErrorContains(t, s.SetReadBuffer(-1), "want a size > 0")

		require.NoError(t, s.SetLinger(3))
		lg, err := unix.GetsockoptLinger(fd, unix.SOL_SOCKET, unix.SO_LINGER)
		require.NoError(t, err)
		require.Equal(t, unix.Linger{Onoff: 1, Linger: 3}, *lg)
		require.NoError(t, s.SetLinger(-1))
		lg, err = unix.GetsockoptLinger(fd, unix.SOL_SOCKET, unix.SO_LINGER)
		require.NoError(t, err)
		require.Zero(t, lg.Onoff)

		require.NoError(t, s.Close())
		require.ErrorIs(t, s.SetNoDelay(true), ErrClosed)
		require.ErrorIs(t, s.SetLinger(0), ErrClosed)
		return nil
	})
}

// A TCP socket from Dial has TCP_NODELAY set, as package net's dialer
// sets it: small writes (a request, a handshake record) go out at once
// instead of waiting up to 40 ms for the peer's delayed ACK (Nagle). Each
// address family that Dial makes a TCP socket for is checked.
func TestDialedTCPHasNoDelay(t *testing.T) {
	parallel(t)
	runPool(t, func(tk *Task) error {
		for _, network := range []string{"tcp", "tcp4"} {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			require.NoError(t, err)
			defer ln.Close()
			s, err := Dial(tk, network, ln.Addr().String())
			require.NoError(t, err, network)
			v, err := unix.GetsockoptInt(s.Fd(), unix.IPPROTO_TCP, unix.TCP_NODELAY)
			require.NoError(t, s.Close())
			require.NoError(t, err, network)
			require.Equal(t, 1, v, "%s: a dialed TCP socket has TCP_NODELAY", network)
		}
		return nil
	})
}
