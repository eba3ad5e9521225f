//go:build linux

package iopool

import (
	"bufio"
	"io"
	"net"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// runPool runs fn as the root task of a new pool, closes the pool, and
// checks that no fd or goroutine is left. A skip inside fn (requireUring on
// a kernel that refuses io_uring) ends only the task: runPool closes the
// pool and skips the test from the test's goroutine, instead of failing it
// on the task's Goexit.
func runPool(t *testing.T, fn func(tk *Task) error, opts ...Option) *Pool {
	t.Helper()
	requireNoLeaks(t)
	p, err := New(opts...)
	require.NoError(t, err)
	err = p.Run(fn)
	if t.Skipped() {
		require.NoError(t, p.Close())
		t.SkipNow()
	}
	require.NoError(t, err)
	require.NoError(t, p.Close())
	return p
}

func socketpair(t *testing.T) [2]int {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	require.NoError(t, err)
	return fds
}

// Seed scenario: a socket is connected, written and read back.
func TestSocketEchoOverTCPAndUnix(t *testing.T) {
	parallel(t)
	for _, tc := range []struct{ network, addr string }{
		{"tcp", "127.0.0.1:0"},
		{"unix", filepath.Join(t.TempDir(), "echo.sock")},
	} {
		t.Run(tc.network, func(t *testing.T) {
			runPool(t, func(tk *Task) error {
				l, err := tk.Driver().Listen(tc.network, tc.addr)
				require.NoError(t, err)
				defer l.Close()
				srv := Spawn(tk.Driver(), "server", func(t *Task) (int64, error) {
					c, err := l.Accept(t)
					if err != nil {
						return 0, err
					}
					defer c.Close()
					return io.Copy(c.Writer(t), c.Reader(t))
				})
				network := tc.network
				c, err := Dial(tk, network, l.Addr().String())
				require.NoError(t, err)
				defer c.Close()
				require.NotNil(t, c.LocalAddr())
				require.Equal(t, l.Addr().String(), c.RemoteAddr().String())
				msg := []byte("hello over the pool\n")
				for range 3 {
					n, err := c.Write(tk, msg)
					require.NoError(t, err)
					require.Equal(t, len(msg), n)
					line, err := bufio.NewReader(io.LimitReader(c.Reader(tk), int64(len(msg)))).ReadString('\n')
					require.NoError(t, err)
					require.Equal(t, string(msg), line)
				}
				require.NoError(t, c.CloseWrite())
				_, err = c.Read(tk, make([]byte, 10))
				require.ErrorIs(t, err, io.EOF)
				copied, err := srv.Join(tk)
				require.NoError(t, err)
				require.EqualValues(t, 3*len(msg), copied)
				return nil
			})
		})
	}
}

func TestSocketResetAndEOF(t *testing.T) {
	parallel(t)
	runPool(t, func(tk *Task) error {
		l, err := tk.Driver().Listen("tcp4", "127.0.0.1:0")
		require.NoError(t, err)
		defer l.Close()
		accepted := Spawn(tk.Driver(), "accept", func(t *Task) (*Socket, error) { return l.Accept(t) })
		c, err := Dial(tk, "tcp", l.Addr().String())
		require.NoError(t, err)
		defer c.Close()
		srv, err := accepted.Join(tk)
		require.NoError(t, err)
		// Reset: SO_LINGER 0 then close sends RST.
		require.NoError(t, unix.SetsockoptLinger(srv.Fd(), unix.SOL_SOCKET, unix.SO_LINGER, &unix.Linger{Onoff: 1, Linger: 0}))
		require.NoError(t, srv.Close())
		_, err = c.Read(tk, make([]byte, 4))
		require.ErrorIs(t, err, syscall.ECONNRESET)
		require.NoError(t, srv.Close(), "Close twice is a no-op")
		return nil
	})
}

// BenchmarkSocketpairPingPong: a client task sends 64 bytes over a
// socketpair and waits for them to come back from an echo task of the same
// pool; both read into 4 KiB buffers, as servers do. Compare with
// BenchmarkRawEpollLoopPingPong, the same work in a raw edge-triggered
// epoll loop, and BenchmarkRawSequentialPingPong, the syscall floor.
func BenchmarkSocketpairPingPong(b *testing.B) {
	b.ReportAllocs()
	p, err := New()
	require.NoError(b, err)
	defer p.Close()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	require.NoError(b, err)
	require.NoError(b, p.Run(func(tk *Task) error {
		a, err := tk.Driver().NewSocket(fds[0])
		if err != nil {
			return err
		}
		defer a.Close()
		c, err := tk.Driver().NewSocket(fds[1])
		if err != nil {
			return err
		}
		defer c.Close()
		echo := Spawn(tk.Driver(), "echo", func(t *Task) (int, error) {
			buf := make([]byte, 4096)
			for {
				n, err := c.Read(t, buf)
				if err != nil {
					return 0, nil
				}
				if _, err := c.Write(t, buf[:n]); err != nil {
					return 0, err
				}
			}
		})
		msg, got := make([]byte, 64), make([]byte, 4096)
		b.ResetTimer()
		for range b.N {
			if _, err := a.Write(tk, msg); err != nil {
				return err
			}
			for n := 0; n < len(msg); {
				m, err := a.Read(tk, got)
				if err != nil {
					return err
				}
				n += m
			}
		}
		b.StopTimer()
		a.CloseWrite()
		_, err = echo.Join(tk)
		return err
	}))
}

// rawEpollPair returns a nonblocking socketpair whose ends are registered
// edge-triggered, with their index as data, in a new epoll set; all are
// closed when the benchmark ends.
func rawEpollPair(b *testing.B) ([2]int, int) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	require.NoError(b, err)
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	require.NoError(b, err)
	b.Cleanup(func() { unix.Close(fds[0]); unix.Close(fds[1]); unix.Close(epfd) })
	for i, fd := range fds {
		ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLOUT | unix.EPOLLRDHUP | unix.EPOLLET, Fd: int32(i)}
		require.NoError(b, unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, fd, &ev))
	}
	return fds, epfd
}

// BenchmarkRawEpollLoopPingPong is BenchmarkSocketpairPingPong written as a
// raw edge-triggered epoll loop with x/sys/unix: the client and echo
// handlers run on the readiness epoll_wait reports and use the same rules
// as Socket (read only when readable; a short read or EAGAIN means empty
// until the next edge).
func BenchmarkRawEpollLoopPingPong(b *testing.B) {
	b.ReportAllocs()
	fds, epfd := rawEpollPair(b)
	var readable [2]bool
	events := make([]unix.EpollEvent, 8)
	msg, cbuf, ebuf := make([]byte, 64), make([]byte, 4096), make([]byte, 4096)
	b.ResetTimer()
	got := 0
	unix.Write(fds[0], msg)
	for round := 0; round < b.N; {
		n, err := unix.EpollWait(epfd, events, -1)
		if err != nil && err != unix.EINTR {
			b.Fatal(err)
		}
		for _, ev := range events[:max(n, 0)] {
			if ev.Events&(unix.EPOLLIN|unix.EPOLLRDHUP|unix.EPOLLHUP|unix.EPOLLERR) != 0 {
				readable[ev.Fd] = true
			}
		}
		for readable[1] { // the echo handler
			m, err := unix.Read(fds[1], ebuf)
			if err != nil || m < len(ebuf) {
				readable[1] = false
			}
			if m > 0 {
				unix.Write(fds[1], ebuf[:m])
			}
		}
		for readable[0] && round < b.N { // the client handler
			m, err := unix.Read(fds[0], cbuf)
			if err != nil || m < len(cbuf) {
				readable[0] = false
			}
			if got += max(m, 0); got == len(msg) {
				got = 0
				round++
				unix.Write(fds[0], msg)
			}
		}
	}
}

// BenchmarkRawSequentialPingPong knows the protocol's order and never asks
// epoll when a read will succeed: the floor of four syscalls per round
// trip that no event loop reaches.
func BenchmarkRawSequentialPingPong(b *testing.B) {
	b.ReportAllocs()
	fds, epfd := rawEpollPair(b)
	events := make([]unix.EpollEvent, 8)
	msg, buf := make([]byte, 64), make([]byte, 4096)
	b.ResetTimer()
	for range b.N {
		unix.Write(fds[0], msg)
		// The echo side: wait readable, read, write back.
		for {
			if n, _ := unix.Read(fds[1], buf); n > 0 {
				unix.Write(fds[1], buf[:n])
				break
			}
			unix.EpollWait(epfd, events, -1)
		}
		// The client side: wait readable, read the echo.
		for {
			if n, _ := unix.Read(fds[0], buf); n > 0 {
				break
			}
			unix.EpollWait(epfd, events, -1)
		}
	}
}

// Every socket the package makes or takes is nonblocking: its own (Listen,
// Dial, Accept from a task and from a NetListener, ListenPacket) are made
// so by the kernel (SOCK_NONBLOCK), which spares the fcntl calls, and a
// caller's fd given to NewSocket or NewNetConn is made so.
func TestEverySocketIsNonblocking(t *testing.T) {
	nonblocking := func(fd int) bool {
		fl, err := unix.FcntlInt(uintptr(fd), unix.F_GETFL, 0)
		require.NoError(t, err)
		return fl&unix.O_NONBLOCK != 0
	}
	runPool(t, func(tk *Task) error {
		drv := tk.Driver()
		l, err := drv.Listen("tcp", "127.0.0.1:0")
		require.NoError(t, err)
		defer l.Close()
		require.True(t, nonblocking(l.sock.Fd()), "Listen")
		c, err := Dial(tk, "tcp", l.Addr().String())
		require.NoError(t, err)
		defer c.Close()
		require.True(t, nonblocking(c.Fd()), "Dial")
		a, err := l.Accept(tk)
		require.NoError(t, err)
		defer a.Close()
		require.True(t, nonblocking(a.Fd()), "Accept")
		ps, err := drv.ListenPacket("udp", "127.0.0.1:0")
		require.NoError(t, err)
		defer ps.Close()
		require.True(t, nonblocking(ps.Fd()), "ListenPacket")
		for _, mk := range []string{"NewSocket", "NewNetConn"} {
			fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
			require.NoError(t, err)
			defer unix.Close(fds[1])
			require.False(t, nonblocking(fds[0]))
			if mk == "NewSocket" {
				s, err := drv.NewSocket(fds[0])
				require.NoError(t, err)
				defer s.Close()
			} else {
				nc, err := drv.NewNetConn(fds[0])
				require.NoError(t, err)
				defer nc.Close()
			}
			require.True(t, nonblocking(fds[0]), mk)
		}
		return nil
	})
	l, err := newTestPool(t).Driver().Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	nl := l.NetListener()
	defer nl.Close()
	client, err := net.Dial("tcp", nl.Addr().String())
	require.NoError(t, err)
	defer client.Close()
	nc, err := nl.Accept()
	require.NoError(t, err)
	defer nc.Close()
	require.True(t, nonblocking(nc.(*NetConn).Fd()), "NetListener.Accept")
}
