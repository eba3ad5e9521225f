//go:build linux

package iopool

// Regression tests of issue 11, "Ownership and close": no syscall on a number
// someone may have closed, no waiter left behind. A closed fd number is
// reused at once by the next socket, accept, eventfd or epoll_create in the
// process, so each test closes an object, lets a new file take its number
// (takeNumber), and checks that nothing reaches that file. Races are made
// reliable with the fault-injection seam: pauseFirst stops a goroutine just
// before a syscall while the test closes things under it.

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/iopool/iopool/internal/sys"
)

// watchdog is how long a test waits for something that hangs when the bug
// is back (a goroutine parked forever, a loop spinning inside Poll).
const watchdog = 5 * time.Second

// takeNumber calls open until one of the fds it returns has number want, and
// returns that call's fds; the fds of the other calls are closed. The fds
// returned are closed when the test ends.
func takeNumber(t *testing.T, want int, open func() ([]int, error)) []int {
	t.Helper()
	var spare []int
	defer func() {
		for _, fd := range spare {
			unix.Close(fd)
		}
	}()
	for range 512 {
		fds, err := open()
		require.NoError(t, err)
		for _, fd := range fds {
			if fd == want {
				t.Cleanup(func() {
					for _, fd := range fds {
						unix.Close(fd)
					}
				})
				return fds
			}
		}
		spare = append(spare, fds...)
	}
	t.Fatalf("no new file got fd number %d", want)
	return nil
}

func openSocketpair() ([]int, error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	return fds[:], err
}

func openEventfd() ([]int, error) {
	fd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	return []int{fd}, err
}

// other returns the fd of a pair that is not n.
func other(pair []int, n int) int {
	if pair[0] == n {
		return pair[1]
	}
	return pair[0]
}

// pause holds the first injected call of one kind until released.
type pause struct {
	reached chan struct{} // closed when a call stopped at the pause
	release chan struct{} // closed to let it go on
	once    sync.Once
}

// pauseFirst stops the first call of kind c that consults fs from now on
// (the calls of the pool made with withFaults(fs)) before it reaches the
// kernel, until the test calls release (or ends).
func pauseFirst(t *testing.T, fs *sys.Faults, c sys.Call) *pause {
	pa := &pause{reached: make(chan struct{}), release: make(chan struct{})}
	var taken atomic.Bool
	old := fs.Set(func(got sys.Call) error {
		if got == c && taken.CompareAndSwap(false, true) {
			close(pa.reached)
			<-pa.release
		}
		return nil
	})
	t.Cleanup(func() {
		pa.let()
		fs.Set(old)
	})
	return pa
}

func (pa *pause) let() { pa.once.Do(func() { close(pa.release) }) }

func (pa *pause) waitReached(t *testing.T) {
	t.Helper()
	select {
	case <-pa.reached:
	case <-time.After(watchdog):
		t.Fatal("the call never reached its pause")
	}
}

// closeWhilePaused closes p from another goroutine while a call is held at
// pa. If Close finishes while the call is held (the bug: nothing waited for
// the call), reuse runs before the call goes on, to let a new file take the
// number the call is about to use. The call is let go either way, and
// closeWhilePaused returns once Close has returned.
func closeWhilePaused(t *testing.T, p *Pool, pa *pause, reuse func()) {
	t.Helper()
	closed := make(chan error, 1)
	go func() { closed <- p.Close() }()
	select {
	case err := <-closed:
		reuse()
		pa.let()
		require.NoError(t, err)
	case <-time.After(200 * time.Millisecond):
		// Close waits for the call in flight, as it should.
		pa.let()
		select {
		case err := <-closed:
			require.NoError(t, err)
		case <-time.After(watchdog):
			t.Fatal("Pool.Close hangs after the paused call went on")
		}
	}
}

// Scenario 1: a task waiting in Socket.Read when another task closes the
// socket and a new socketpair takes its number (and is written to) in the
// same cycle returns ErrClosed and reads nothing. It used to read the new
// socket's data.
func TestRegressionReadAfterCloseDoesNotReadReusedFd(t *testing.T) {
	pair := socketpair(t)
	defer unix.Close(pair[1])
	runPool(t, func(tk *Task) error {
		s, err := tk.Driver().NewSocket(pair[0])
		require.NoError(t, err)
		reader := Spawn(tk.Driver(), "reader", func(t *Task) (int, error) {
			return s.Read(t, make([]byte, 64))
		})
		require.NoError(t, tk.Yield()) // the reader waits in Read
		num := s.Fd()
		require.NoError(t, s.Close())
		stolen := takeNumber(t, num, openSocketpair)
		_, err = unix.Write(other(stolen, num), []byte("someone else's data"))
		require.NoError(t, err)

		n, err := reader.Join(tk)
		require.ErrorIs(t, err, ErrClosed)
		require.Zero(t, n)
		buf := make([]byte, 64)
		n, err = unix.Read(num, buf)
		require.NoError(t, err, "the data stays for the file that owns the number")
		require.Equal(t, "someone else's data", string(buf[:n]))
		return nil
	})
}

// Scenario 1, writing: a task waiting in Socket.Write when the socket is
// closed and its number reused returns ErrClosed and writes nothing into the
// new file. It used to write the rest of its buffer there.
func TestRegressionWriteAfterCloseDoesNotWriteReusedFd(t *testing.T) {
	pair := socketpair(t)
	defer unix.Close(pair[1])
	var leaked atomic.Int64
	stop := make(chan struct{})
	drained := make(chan struct{})
	runPool(t, func(tk *Task) error {
		s, err := tk.Driver().NewSocket(pair[0])
		require.NoError(t, err)
		writer := Spawn(tk.Driver(), "writer", func(t *Task) (int, error) {
			return s.Write(t, make([]byte, 1<<20)) // more than the socket holds
		})
		require.NoError(t, tk.Yield()) // the writer waits in Write
		num := s.Fd()
		require.NoError(t, s.Close())
		stolen := takeNumber(t, num, openSocketpair)
		go func() { // the new file's reader: counts whatever arrives
			defer close(drained)
			buf := make([]byte, 64<<10)
			for {
				n, _ := unix.Read(other(stolen, num), buf)
				if n > 0 {
					leaked.Add(int64(n))
					continue
				}
				select {
				case <-stop:
					return
				case <-time.After(time.Millisecond):
				}
			}
		}()
		_, err = writer.Join(tk)
		require.ErrorIs(t, err, ErrClosed)
		return nil
	})
	close(stop)
	<-drained
	require.Zero(t, leaked.Load(), "bytes written into the file that took the closed socket's number")
}

// Scenario 1, accepting: a task waiting in Listener.Accept when the
// listener is closed and a new listener takes its number returns ErrClosed;
// it used to accept the other listener's connection.
func TestRegressionAcceptAfterCloseDoesNotAcceptFromReusedFd(t *testing.T) {
	dir := t.TempDir()
	runPool(t, func(tk *Task) error {
		l, err := tk.Driver().Listen("unix", filepath.Join(dir, "closed.sock"))
		require.NoError(t, err)
		acceptor := Spawn(tk.Driver(), "acceptor", func(t *Task) (*Socket, error) {
			return l.Accept(t)
		})
		require.NoError(t, tk.Yield()) // the acceptor waits in Accept
		num := l.sock.fd
		require.NoError(t, l.Close())
		stolen := takeNumber(t, num, func() ([]int, error) {
			fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
			return []int{fd}, err
		})
		other := filepath.Join(dir, "other.sock")
		require.NoError(t, unix.Bind(stolen[0], &unix.SockaddrUnix{Name: other}))
		require.NoError(t, unix.Listen(stolen[0], 8))
		client, err := net.Dial("unix", other)
		require.NoError(t, err)
		defer client.Close()

		s, err := acceptor.Join(tk)
		if s != nil {
			s.Close()
		}
		require.ErrorIs(t, err, ErrClosed)
		fd, _, err := unix.Accept4(stolen[0], unix.SOCK_CLOEXEC)
		require.NoError(t, err, "the connection stays queued on the listener that owns the number")
		unix.Close(fd)
		return nil
	})
}

// Scenario 1, half-closing: CloseWrite after Close fails with ErrClosed and
// does not shut down the connection that took the number; it used to
// half-close it.
func TestRegressionCloseWriteAfterCloseDoesNotShutDownReusedFd(t *testing.T) {
	p := newTestPool(t)
	pair := socketpair(t)
	defer unix.Close(pair[1])
	s, err := p.Driver().NewSocket(pair[0])
	require.NoError(t, err)
	num := s.Fd()
	require.NoError(t, s.Close())
	stolen := takeNumber(t, num, openSocketpair)

	require.ErrorIs(t, s.CloseWrite(), ErrClosed)
	_, err = unix.Read(other(stolen, num), make([]byte, 1))
	require.ErrorIs(t, err, unix.EAGAIN, "the new connection's peer must not see EOF")
}

// Scenario 1, NetConn: a CloseWrite that passed its closed check when Close
// runs on another goroutine (held just before shutdown) shuts down its own
// connection or nothing; it used to shut down the connection that took the
// number, since CloseWrite held nothing that Close waits for.
func TestRegressionNetConnCloseWriteRacingCloseSparesReusedFd(t *testing.T) {
	fs := new(sys.Faults)
	_, a, _ := netConnPair(t, withFaults(fs))
	num := a.Fd()
	pa := pauseFirst(t, fs, sys.CallShutdown)
	cwDone := make(chan error, 1)
	go func() { cwDone <- a.CloseWrite() }()
	pa.waitReached(t)

	closed := make(chan error, 1)
	go func() { closed <- a.Close() }()
	var stolen []int
	select {
	case err := <-closed:
		require.NoError(t, err)
		stolen = takeNumber(t, num, openSocketpair)
		pa.let()
	case <-time.After(200 * time.Millisecond):
		pa.let() // Close waits for the shutdown in flight, as it should
		require.NoError(t, <-closed)
		stolen = takeNumber(t, num, openSocketpair)
	}
	<-cwDone
	_, err := unix.Read(other(stolen, num), make([]byte, 1))
	require.ErrorIs(t, err, unix.EAGAIN, "the new connection's peer must not see EOF")
}

// newPoolWithEpollFd creates pools until one has epoll fd number want (the
// number a closed pool just gave back) and closes the others.
func newPoolWithEpollFd(t *testing.T, want int) *Pool {
	t.Helper()
	var spare []*Pool
	defer func() {
		for _, p := range spare {
			p.Close()
		}
	}()
	for range 64 {
		p, err := New()
		require.NoError(t, err)
		if poolEpollFd(p) == want {
			return p
		}
		spare = append(spare, p)
	}
	t.Fatalf("no new pool got epoll fd number %d", want)
	return nil
}

// epollTargets lists the fds an epoll instance watches, from its fdinfo.
func epollTargets(t *testing.T, epfd int) []int {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/self/fdinfo/%d", epfd))
	require.NoError(t, err)
	var fds []int
	for _, line := range strings.Split(string(b), "\n") {
		var fd int
		if _, err := fmt.Sscanf(line, "tfd: %d", &fd); err == nil {
			fds = append(fds, fd)
		}
	}
	return fds
}

// Scenario 4: a wake decided under the lock whose eventfd write is held
// until after Pool.Close (and a new eventfd took the number) writes nothing
// into the new eventfd. It used to add one to its counter.
func TestRegressionWakeAfterCloseDoesNotWriteReusedEventfd(t *testing.T) {
	requireNoLeaks(t)
	fs := new(sys.Faults)
	p, err := New(withFaults(fs))
	require.NoError(t, err)
	wakefd := poolWakeFd(p)
	ran := make(chan error, 1)
	go func() {
		ran <- p.Run(func(tk *Task) error {
			for { // wakes the loop by its timer every few milliseconds
				if err := tk.Sleep(5 * time.Millisecond); err != nil {
					return err
				}
			}
		})
	}()
	pa := pauseFirst(t, fs, sys.CallEventfdWrite)
	spawned := make(chan struct{})
	go func() { // wakes a sleeping loop: the first eventfd write is held
		defer close(spawned)
		for {
			select {
			case <-pa.reached:
				return
			default:
			}
			Spawn(p.Driver(), "nop", func(t *Task) (int, error) { return 0, nil })
			time.Sleep(time.Millisecond)
		}
	}()
	pa.waitReached(t)

	var stolen []int
	closeWhilePaused(t, p, pa, func() { stolen = takeNumber(t, wakefd, openEventfd) })
	<-spawned
	require.ErrorIs(t, <-ran, ErrClosed)
	if stolen == nil {
		stolen = takeNumber(t, wakefd, openEventfd)
	}
	var buf [8]byte
	_, err = unix.Read(stolen[0], buf[:])
	require.ErrorIs(t, err, unix.EAGAIN, "the closed pool's wake was written into the eventfd that took its number")
}

// Scenario 5: Close releases every waiter, not only fd waiters. A plain
// goroutine blocked on a pool timer through BlockOn, or on an FdSignal, when the
// pool closes gets ErrClosed, and a timer armed on a closed pool reports
// ErrClosed instead of never firing. The goroutines used to park forever.
func TestRegressionCloseReleasesTimerAndWaitWaiters(t *testing.T) {
	requireNoLeaks(t)
	efd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	require.NoError(t, err)
	defer unix.Close(efd)
	p, err := New()
	require.NoError(t, err)
	drv := p.Driver()
	w, err := drv.NewFdSignal(efd, 8)
	require.NoError(t, err)
	defer w.Close()

	tm := drv.NewTimer()
	timerDone := make(chan error, 1)
	go func() {
		BlockOn(tm.Future(time.Now().Add(time.Hour)))
		timerDone <- tm.Err()
	}()
	waitDone := make(chan error, 1)
	go func() {
		_, err := BlockOn[struct{}](w)
		waitDone <- err
	}()
	time.Sleep(10 * time.Millisecond) // both goroutines park
	require.NoError(t, p.Close())

	for name, ch := range map[string]chan error{"timer": timerDone, "wait": waitDone} {
		select {
		case err := <-ch:
			require.ErrorIs(t, err, ErrClosed, name)
		case <-time.After(watchdog):
			t.Fatalf("a goroutine blocked on a %s stays parked after Pool.Close", name)
		}
	}

	late := drv.NewTimer()
	lateDone := make(chan error, 1)
	go func() {
		BlockOn(late.Future(time.Now().Add(time.Hour)))
		lateDone <- late.Err()
	}()
	select {
	case err := <-lateDone:
		require.ErrorIs(t, err, ErrClosed)
	case <-time.After(watchdog):
		t.Fatal("a timer armed on a closed pool never fires")
	}
}

// Scenario 6: a call that panics on an invalid slot leaves no lock held.
// PollReady, ClearReady and ClearEvents used to panic with the op's mutex
// locked: the panicking task was reported, but the next event on the fd
// blocked the loop forever in deliver, and Close hung.
func TestRegressionInvalidSlotPanicLeavesNoLockHeld(t *testing.T) {
	const bad = InterestSlot(7)
	calls := map[string]func(fr *FdReady, cx *PollContext){
		"PollReady":   func(fr *FdReady, cx *PollContext) { fr.PollReady(cx, bad, PollIn) },
		"ClearReady":  func(fr *FdReady, cx *PollContext) { fr.ClearReady(bad) },
		"ClearEvents": func(fr *FdReady, cx *PollContext) { fr.ClearEvents(bad, PollIn) },
	}
	for name, call := range calls {
		t.Run(name, func(t *testing.T) {
			pair := socketpair(t)
			defer unix.Close(pair[0])
			defer unix.Close(pair[1])
			p, err := New()
			require.NoError(t, err)
			done := make(chan error, 1)
			go func() {
				done <- p.Run(func(tk *Task) error {
					fr, err := tk.Driver().NewFdReady(pair[0])
					if err != nil {
						return err
					}
					defer fr.Close()
					h := Spawn(tk.Driver(), "misuse", func(t *Task) (int, error) {
						call(fr, &t.cx)
						return 0, nil
					})
					var pe *PanicError
					if _, err := h.Join(tk); !errors.As(err, &pe) || !strings.Contains(pe.Error(), "invalid InterestSlot") {
						return fmt.Errorf("misuse: got %v, want a panic naming the invalid slot", err)
					}
					if _, err := unix.Write(pair[1], []byte("x")); err != nil {
						return err
					}
					_, err = fr.WaitReady(tk, SlotRead, PollIn) // the event is delivered
					return err
				})
			}()
			select {
			case err := <-done:
				require.NoError(t, err)
			case <-time.After(watchdog):
				t.Fatal("the loop blocked on the lock the panic left held")
			}
			require.NoError(t, p.Close())
		})
	}
}

// TestStressCloseRacingReadsNeverCrossFiles closes NetConns and Sockets
// from plain goroutines while goroutines or tasks read from them, with fd
// numbers reused at once by the other workers' new socketpairs. Each worker's peer writes only its own byte value, so a
// read that reached a reused number would return another worker's bytes.
func TestStressCloseRacingReadsNeverCrossFiles(t *testing.T) {
	p := newTestPool(t)
	servePool(t, p)
	const workers = 8
	deadline := time.Now().Add(stressDuration(t))
	var wg sync.WaitGroup
	var rounds atomic.Int64
	errs := make(chan error, workers)
	for w := range workers {
		mine := byte('A' + w)
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, 256)
			msg := []byte(strings.Repeat(string(mine), 64))
			for time.Now().Before(deadline) {
				fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
				if err != nil {
					errs <- err
					return
				}
				// Even workers read from a NetConn on a goroutine, odd ones
				// from a Socket in a task; either way Close comes from here.
				var closer interface{ Close() error }
				read := make(chan error, 1)
				check := func(n int, err error) bool {
					for _, b := range buf[:n] {
						if b != mine {
							read <- fmt.Errorf("worker %c read %q: another file's data", mine, b)
							return false
						}
					}
					if err != nil {
						read <- nil
						return false
					}
					return true
				}
				if w%2 == 0 {
					c, err := p.Driver().NewNetConn(fds[0])
					if err != nil {
						unix.Close(fds[1])
						errs <- err
						return
					}
					closer = c
					go func() {
						for check(c.Read(buf)) {
						}
					}()
				} else {
					s, err := p.Driver().NewSocket(fds[0])
					if err != nil {
						unix.Close(fds[1])
						errs <- err
						return
					}
					closer = s
					Spawn(p.Driver(), "reader", func(t *Task) (int, error) {
						for check(s.Read(t, buf)) {
						}
						return 0, nil
					})
				}
				_, _ = unix.Write(fds[1], msg)
				if rounds.Add(1)%2 == 0 {
					runtime.Gosched() // let the read run first half of the time
				}
				_ = closer.Close() // races with the read
				unix.Close(fds[1])
				if err := <-read; err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	t.Logf("%d connections closed under their readers", rounds.Load())
}
