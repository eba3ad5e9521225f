package iopool

import (
	"bufio"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/iopool/iopool/internal/sys"
)

// runPool runs fn as the root task of a new pool, closes the pool, and
// checks that no fd or goroutine is left.
func runPool(t *testing.T, fn func(tk *Task) error, opts ...Option) *Pool {
	t.Helper()
	requireNoLeaks(t)
	p, err := New(opts...)
	require.NoError(t, err)
	require.NoError(t, p.Run(fn))
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

func TestReadinessOfEachFdKind(t *testing.T) {
	runPool(t, func(tk *Task) error {
		drv := tk.Driver()
		check := func(name string, fd int, trigger func()) {
			fr, err := drv.NewFdReady(fd)
			require.NoError(t, err, name)
			defer fr.Close()
			go trigger()
			ev, err := fr.WaitReady(tk, SlotRead, PollIn)
			require.NoError(t, err, name)
			require.NotZero(t, ev&PollIn, "%s: %v", name, ev)
		}
		var p [2]int
		require.NoError(t, unix.Pipe2(p[:], unix.O_NONBLOCK|unix.O_CLOEXEC))
		check("pipe", p[0], func() { unix.Write(p[1], []byte("x")) })
		unix.Close(p[0])
		unix.Close(p[1])

		sp := socketpair(t)
		check("socketpair", sp[0], func() { unix.Write(sp[1], []byte("x")) })
		unix.Close(sp[0])
		unix.Close(sp[1])

		efd, err := unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
		require.NoError(t, err)
		check("eventfd", efd, func() { sys.EventfdSignal(efd) })
		unix.Close(efd)

		tfd, err := unix.TimerfdCreate(unix.CLOCK_MONOTONIC, unix.TFD_NONBLOCK|unix.TFD_CLOEXEC)
		require.NoError(t, err)
		check("timerfd", tfd, func() {
			spec := unix.ItimerSpec{Value: unix.NsecToTimespec(int64(time.Millisecond))}
			unix.TimerfdSettime(tfd, 0, &spec, nil)
		})
		unix.Close(tfd)

		// The write slot of a fresh socket is ready at once.
		fresh := socketpair(t)
		fr, err := drv.NewFdReady(fresh[0])
		require.NoError(t, err)
		ev, err := fr.WaitReady(tk, SlotWrite, PollOut)
		require.NoError(t, err)
		require.NotZero(t, ev&PollOut)
		require.NoError(t, fr.Close())
		unix.Close(fresh[0])
		unix.Close(fresh[1])
		return nil
	})
}

// Seed scenario: an eventfd signaled from another goroutine wakes a task
// waiting on it.
func TestWaitOnEventfdSignaledFromAnotherGoroutine(t *testing.T) {
	runPool(t, func(tk *Task) error {
		efd, err := unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
		require.NoError(t, err)
		defer unix.Close(efd)
		w, err := tk.Driver().NewWait(efd, 8)
		require.NoError(t, err)
		defer w.Close()
		for range 3 {
			go func() {
				time.Sleep(time.Millisecond)
				sys.EventfdSignal(efd)
			}()
			require.NoError(t, w.Wait(tk))
		}
		require.False(t, w.Cancel())
		// The signal was consumed: the counter is zero again.
		_, err = unix.Read(efd, make([]byte, 8))
		require.ErrorIs(t, err, unix.EAGAIN)
		_, err = tk.Driver().NewWait(efd, 9)
		require.ErrorContains(t, err, "readSize 9")
		return nil
	})
}

func TestNewFdReadyBadInput(t *testing.T) {
	runPool(t, func(tk *Task) error {
		drv := tk.Driver()
		_, err := drv.NewFdReady(987654)
		require.ErrorIs(t, err, unix.EBADF)
		require.ErrorContains(t, err, "fd 987654")

		sp := socketpair(t)
		defer unix.Close(sp[0])
		defer unix.Close(sp[1])
		fr, err := drv.NewFdReady(sp[0])
		require.NoError(t, err)
		defer fr.Close()
		_, err = drv.NewFdReady(sp[0])
		require.ErrorIs(t, err, unix.EEXIST)
		require.ErrorContains(t, err, "fd "+strconv.Itoa(sp[0]))

		f, err := os.CreateTemp(t.TempDir(), "regular")
		require.NoError(t, err)
		defer f.Close()
		_, err = drv.NewFdReady(int(f.Fd()))
		require.ErrorIs(t, err, unix.EPERM)
		require.ErrorContains(t, err, "fd "+strconv.Itoa(int(f.Fd())))

		// The pool keeps running.
		require.NoError(t, tk.Sleep(time.Millisecond))
		require.EqualValues(t, 1, tk.Driver().Pool().Stats().FdsRegistered)
		return nil
	})
}

// Closing an fd before its FdReady must not remove the registration of the
// file that reuses its number.
func TestRegressionStaleFdReadyCloseKeepsReusedRegistration(t *testing.T) {
	runPool(t, func(tk *Task) error {
		drv := tk.Driver()
		a := socketpair(t)
		stale, err := drv.NewFdReady(a[0])
		require.NoError(t, err)
		unix.Close(a[0]) // the caller bug: fd closed first (a[1] keeps the pair alive)

		b := socketpair(t) // reuses a[0]'s number
		defer unix.Close(b[1])
		defer unix.Close(b[0])
		require.Equal(t, a[0], b[0], "the fd number is reused")
		fresh, err := drv.NewFdReady(b[0])
		require.NoError(t, err)
		defer fresh.Close()

		err = stale.Close()
		require.ErrorIs(t, err, ErrFdClosedFirst)
		require.ErrorContains(t, err, "fd "+strconv.Itoa(a[0]))

		_, err = unix.Write(b[1], []byte("still here"))
		require.NoError(t, err)
		ev, err := fresh.WaitReady(tk, SlotRead, PollIn)
		require.NoError(t, err)
		require.NotZero(t, ev&PollIn, "the new registration still receives events")
		unix.Close(a[1])
		return nil
	})
}

func TestSocketDeadlines(t *testing.T) {
	runPool(t, func(tk *Task) error {
		sp := socketpair(t)
		defer unix.Close(sp[1])
		s, err := tk.Driver().NewSocket(sp[0])
		require.NoError(t, err)
		defer s.Close()
		buf := make([]byte, 8)

		require.NoError(t, s.SetReadDeadline(time.Now().Add(5*time.Millisecond)))
		start := time.Now()
		_, err = s.Read(tk, buf)
		require.ErrorIs(t, err, os.ErrDeadlineExceeded)
		require.GreaterOrEqual(t, time.Since(start), 5*time.Millisecond)

		// Past deadline: fails at once even with data waiting.
		unix.Write(sp[1], []byte("data"))
		_, err = s.Read(tk, buf)
		require.ErrorIs(t, err, os.ErrDeadlineExceeded)

		// A new deadline (or none) makes the socket usable again.
		require.NoError(t, s.SetDeadline(time.Time{}))
		n, err := s.Read(tk, buf)
		require.NoError(t, err)
		require.Equal(t, "data", string(buf[:n]))

		// A deadline moved earlier from another goroutine wakes the reader.
		require.NoError(t, s.SetReadDeadline(time.Now().Add(time.Hour)))
		go func() {
			time.Sleep(3 * time.Millisecond)
			s.SetReadDeadline(time.Now())
		}()
		_, err = s.Read(tk, buf)
		require.ErrorIs(t, err, os.ErrDeadlineExceeded)

		// Write deadline: fill the buffer until it expires.
		require.NoError(t, s.SetWriteDeadline(time.Now().Add(5*time.Millisecond)))
		big := make([]byte, 1<<20)
		_, err = s.Write(tk, big)
		require.ErrorIs(t, err, os.ErrDeadlineExceeded)
		return nil
	})
}

func TestSocketResetAndEOF(t *testing.T) {
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

func TestAcceptBacksOffUnderEMFILE(t *testing.T) {
	var failures atomic.Int32
	sys.SetFaults(func(c sys.Call) error {
		if c == sys.CallAccept && failures.Add(1) <= 3 {
			return unix.EMFILE
		}
		return nil
	})
	defer func() { sys.SetFaults(nil) }()
	runPool(t, func(tk *Task) error {
		l, err := tk.Driver().Listen("tcp", "127.0.0.1:0")
		require.NoError(t, err)
		defer l.Close()
		accepted := Spawn(tk.Driver(), "accept", func(t *Task) (*Socket, error) { return l.Accept(t) })
		c, err := Dial(tk, "tcp", l.Addr().String())
		require.NoError(t, err)
		defer c.Close()
		s, err := accepted.Join(tk)
		require.NoError(t, err, "the listener keeps working after EMFILE")
		require.NoError(t, s.Close())
		require.GreaterOrEqual(t, failures.Load(), int32(4))
		return nil
	})
}

func TestListenAndDialErrorsNameTheAddress(t *testing.T) {
	runPool(t, func(tk *Task) error {
		l, err := tk.Driver().Listen("tcp", "127.0.0.1:0")
		require.NoError(t, err)
		defer l.Close()
		_, err = tk.Driver().Listen("tcp", l.Addr().String())
		require.ErrorIs(t, err, unix.EADDRINUSE)
		require.ErrorContains(t, err, l.Addr().String())
		_, err = tk.Driver().Listen("udp", "127.0.0.1:0")
		require.ErrorContains(t, err, `unsupported network "udp"`)
		_, err = Dial(tk, "unix", filepath.Join(t.TempDir(), "nobody.sock"))
		require.ErrorIs(t, err, unix.ENOENT)
		return nil
	})
}

func TestWaitProcess(t *testing.T) {
	runPool(t, func(tk *Task) error {
		var ticks atomic.Int32
		ticker := Spawn(tk.Driver(), "ticker", func(t *Task) (int, error) {
			for !t.Canceled() {
				if err := t.Sleep(time.Millisecond); err != nil {
					return 0, nil
				}
				ticks.Add(1)
			}
			return 0, nil
		})
		for _, tc := range []struct {
			args []string
			code int
		}{{[]string{"true"}, 0}, {[]string{"sh", "-c", "exit 3"}, 3}, {[]string{"sleep", "0.05"}, 0}} {
			cmd := exec.Command(tc.args[0], tc.args[1:]...)
			require.NoError(t, cmd.Start())
			st, err := WaitProcess(tk, cmd.Process)
			require.NoError(t, err, "%v", tc.args)
			require.Equal(t, tc.code, st.ExitCode(), "%v", tc.args)
		}
		require.Greater(t, ticks.Load(), int32(10), "the pool kept running while waiting")
		ticker.Cancel()
		_, err := ticker.Join(tk)
		return err
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

func TestRegressionFdReadyCloseAfterPoolClose(t *testing.T) {
	requireNoLeaks(t)
	p, err := New()
	require.NoError(t, err)
	sp := socketpair(t)
	defer unix.Close(sp[0])
	defer unix.Close(sp[1])
	fr, err := p.Driver().NewFdReady(sp[0])
	require.NoError(t, err)
	require.NoError(t, p.Close())

	// A new pool likely reuses the old epoll fd's number; register the same
	// fd there and check that closing the stale FdReady leaves it alone.
	q := newTestPool(t)
	fresh, err := q.Driver().NewFdReady(sp[0])
	require.NoError(t, err)
	defer fresh.Close()
	require.NoError(t, fr.Close())
	require.NoError(t, q.Run(func(tk *Task) error {
		unix.Write(sp[1], []byte("x"))
		_, err := fresh.WaitReady(tk, SlotRead, PollIn)
		return err
	}))
}
