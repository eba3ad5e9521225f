//go:build linux

package iopool

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/iopool/iopool/internal/sys"
)

// The io_uring scenarios of issue 13: each test failed on the code before
// the op table had one state per op and one release path.

// withWatchdog runs fn in a task of its own and cancels it after d, so that
// an operation that would hang fails the test instead.
func withWatchdog[T any](tk *Task, d time.Duration, fn func(t *Task) (T, error)) (T, error) {
	h := Spawn(tk.Driver(), "watched", fn)
	dog := Spawn(tk.Driver(), "watchdog", func(t *Task) (int, error) {
		if t.Sleep(d) == nil {
			h.Cancel()
		}
		return 0, nil
	})
	v, err := h.Join(tk)
	dog.Cancel()
	_, _ = dog.Join(tk)
	return v, err
}

func testCancelRacesCompletion(t *testing.T, kind, mode string) {
	path := filepath.Join(t.TempDir(), "f")
	require.NoError(t, os.WriteFile(path, []byte("x"), 0o600))
	lfd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	require.NoError(t, err)
	defer unix.Close(lfd)
	require.NoError(t, unix.Bind(lfd, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}))
	require.NoError(t, unix.Listen(lfd, 64))
	addr, err := unix.Getsockname(lfd)
	require.NoError(t, err)
	var refuse atomic.Bool
	fs := new(sys.Faults)
	fs.Set(func(c sys.Call) error {
		if c == sys.CallUringEnter && refuse.CompareAndSwap(true, false) {
			return unix.EBUSY
		}
		return nil
	})

	before := openFds(t)
	won, canceled := 0, 0
	runPool(t, func(tk *Task) error {
		u := requireUring(t, tk.Driver())
		for range 30 {
			completed := tk.Driver().Pool().Stats().UringCompleted
			target := Spawn(tk.Driver(), kind, func(t *Task) (int, error) {
				if kind == "openat" {
					return u.Openat(t, unix.AT_FDCWD, path, unix.O_RDONLY, 0)
				}
				return u.Accept(t, lfd)
			})
			canceler := Spawn(tk.Driver(), "canceler", func(t *Task) (int, error) {
				if mode == "abandoned" {
					// The target ran first in this cycle and queued its SQE.
					refuse.Store(true)
					target.Cancel()
					return 0, nil
				}
				for tk.Driver().Pool().Stats().UringCompleted == completed {
					if err := t.Yield(); err != nil {
						return 0, err
					}
				}
				target.Cancel()
				return 0, nil
			})
			if kind == "accept" {
				cfd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
				require.NoError(t, err)
				require.NoError(t, unix.Connect(cfd, addr))
				defer unix.Close(cfd)
			}
			fd, err := target.Join(tk)
			if err == nil {
				won++
				require.GreaterOrEqual(t, fd, 0)
				require.NoError(t, unix.Close(fd))
			} else {
				canceled++
				require.ErrorIs(t, err, ErrCanceled)
				require.Equal(t, -1, fd, "a canceled %s returns -1", kind)
			}
			_, err = canceler.Join(tk)
			require.NoError(t, err)
		}
		// The completions of abandoned operations arrive in later cycles.
		for i := 0; u.inflight > 0; i++ {
			require.Less(t, i, 1000, "an abandoned operation never completed")
			require.NoError(t, tk.Sleep(time.Millisecond))
		}
		return nil
	}, withFaults(fs))
	t.Logf("%d results won over the cancel, %d calls canceled", won, canceled)
	require.Equal(t, before, openFds(t), "fds leaked by canceled %ss", kind)
}

// Scenario 2: a prep function that panics, or is nil, in Submit, Start or a
// Batch entry leaves nothing behind: no op in flight, nothing pinned, and
// Close does not wait for a completion that never comes.
func TestRegressionUringPrepPanicLeavesNothing(t *testing.T) {
	skipIfKernelRefusesUring(t)
	requireNoLeaks(t)
	p, err := New()
	require.NoError(t, err)
	boom := func(*SQE) { panic("prep failed") }
	require.NoError(t, p.Run(func(tk *Task) error {
		u := requireUring(t, tk.Driver())
		b := u.NewBatch()
		for name, call := range map[string]func(){
			"Submit nil":         func() { _, _ = u.Submit(tk, nil, make([]byte, 8)) },
			"Submit panics":      func() { _, _ = u.Submit(tk, boom, make([]byte, 8)) },
			"Batch.Submit nil":   func() { _ = b.Submit(tk, nil, make([]byte, 8)) },
			"Batch.Submit panic": func() { _ = b.Submit(tk, boom, make([]byte, 8)) },
			"Start nil":          func() { _, _ = u.Start(nil, make([]byte, 8)) },
			"Start panics":       func() { _, _ = u.Start(boom, make([]byte, 8)) },
		} {
			require.Panics(t, call, name)
		}
		require.NoError(t, b.Await(tk))
		require.Zero(t, u.inflight, "ops left in flight")
		require.Len(t, u.free, len(u.ops), "every op is free, unpinned")
		require.NoError(t, u.Nop(tk), "the ring still works")
		return nil
	}))
	start := time.Now()
	require.NoError(t, p.Close())
	require.Less(t, time.Since(start), 500*time.Millisecond, "Close waited for an op that was never submitted")
}

// Scenario 3: a Batch whose task returned or panicked without Await, and a
// Start nobody waits for, all with reads that never complete: Close cancels
// every one of them, waits for their completions and returns promptly;
// nothing is left pinned or on the leaked list, and the Start's waiter sees
// ErrClosed.
func TestRegressionUringCloseCancelsOpsLeftBehind(t *testing.T) {
	skipIfKernelRefusesUring(t)
	requireNoLeaks(t)
	var fds [2]int
	require.NoError(t, unix.Pipe2(fds[:], unix.O_CLOEXEC))
	defer unix.Close(fds[0])
	defer unix.Close(fds[1])
	leakedOps.Lock()
	leakedBefore := len(leakedOps.ops)
	leakedOps.Unlock()

	p, err := New()
	require.NoError(t, err)
	var u *Uring
	var c *Completion
	require.NoError(t, p.Run(func(tk *Task) error {
		u = requireUring(t, tk.Driver())
		returns := Spawn(tk.Driver(), "returns", func(t *Task) (int, error) {
			b := u.NewBatch()
			return 0, b.Read(t, fds[0], make([]byte, 64), -1)
		})
		panics := Spawn(tk.Driver(), "panics", func(pt *Task) (int, error) {
			b := u.NewBatch()
			require.NoError(t, b.Read(pt, fds[0], make([]byte, 64), -1))
			panic("the task ends without Await")
		})
		_, err := returns.Join(tk)
		require.NoError(t, err)
		_, err = panics.Join(tk)
		require.ErrorContains(t, err, "without Await")
		buf := make([]byte, 64)
		c, err = u.Start(func(s *SQE) {
			s.Opcode, s.Fd, s.Off = OpRead, int32(fds[0]), ^uint64(0)
			s.SetBuffer(buf)
		}, buf)
		require.NoError(t, err)
		return tk.Sleep(5 * time.Millisecond) // everything reaches the kernel
	}))
	start := time.Now()
	require.NoError(t, p.Close())
	require.Less(t, time.Since(start), 500*time.Millisecond, "Close stalled on operations left behind")
	leakedOps.Lock()
	leaked := len(leakedOps.ops) - leakedBefore
	leakedOps.Unlock()
	require.Zero(t, leaked, "operations on the leaked list")
	require.Zero(t, u.inflight, "operations still in flight")
	require.Len(t, u.free, len(u.ops), "every op is free, unpinned")
	_, err = c.Wait()
	require.ErrorIs(t, err, ErrClosed)
	require.ErrorIs(t, err, unix.ECANCELED)
	runtime.GC() // a Pinner collected while pinning would panic here
}

// Scenario 4: SQEs that post several completions (multishot poll, recv and
// accept, multishot timeouts) or none (IOSQE_CQE_SKIP_SUCCESS), or that tie
// their fate to the next SQE in the ring (IOSQE_IO_LINK), are refused by
// Submit, Batch.Submit and Start with an error naming the flag, before
// anything is taken. (Before, the first of several CQEs freed the slot and
// the next completed whatever op reused it; a skipped CQE hung the task.)
func TestRegressionUringRefusesMultishotAndLinks(t *testing.T) {
	var efd int
	cases := []struct {
		flag string
		prep func(s *SQE)
	}{
		{"IORING_POLL_ADD_MULTI", func(s *SQE) {
			s.Opcode, s.Fd, s.OpFlags, s.Len = OpPollAdd, int32(efd), uint32(PollIn), 1
		}},
		{"IORING_RECV_MULTISHOT", func(s *SQE) { s.Opcode, s.Fd, s.Ioprio = OpRecv, int32(efd), 1<<1 }},
		{"IORING_ACCEPT_MULTISHOT", func(s *SQE) { s.Opcode, s.Fd, s.Ioprio = OpAccept, int32(efd), 1 }},
		{"IORING_TIMEOUT_MULTISHOT", func(s *SQE) { s.Opcode, s.OpFlags = OpTimeout, 1<<6 }},
		{"IOSQE_IO_LINK", func(s *SQE) { s.Opcode, s.Flags = OpNop, 1<<2 }},
		{"IOSQE_IO_HARDLINK", func(s *SQE) { s.Opcode, s.Flags = OpNop, 1<<3 }},
		{"IOSQE_CQE_SKIP_SUCCESS", func(s *SQE) { s.Opcode, s.Flags = OpNop, 1<<6 }},
	}
	runPool(t, func(tk *Task) error {
		var err error
		efd, err = unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
		require.NoError(t, err)
		defer unix.Close(efd)
		u := requireUring(t, tk.Driver())
		for _, tc := range cases {
			_, err := withWatchdog(tk, time.Second, func(t *Task) (int32, error) { return u.Submit(t, tc.prep) })
			require.ErrorIs(t, err, ErrUnsupportedSQE, "Submit %s", tc.flag)
			require.ErrorContains(t, err, tc.flag)
			_, err = withWatchdog(tk, time.Second, func(t *Task) (int, error) {
				b := u.NewBatch()
				if err := b.Submit(t, tc.prep); err != nil {
					return 0, err
				}
				return 0, b.Await(t)
			})
			require.ErrorIs(t, err, ErrUnsupportedSQE, "Batch.Submit %s", tc.flag)
			_, err = u.Start(tc.prep)
			require.ErrorIs(t, err, ErrUnsupportedSQE, "Start %s", tc.flag)
			require.ErrorContains(t, err, tc.flag)
		}
		require.Zero(t, u.inflight)
		require.Len(t, u.free, len(u.ops))
		return nil
	})
}

// Scenario 5: a ring created while the pool closes (Driver.Uring paused
// just before it registers the ring fd with epoll, while Close runs) is
// seen and closed by Close: no syscall on a closed epoll fd, no fd leaks,
// and an operation started on it completes with ErrClosed rather than
// waiting forever for a loop that is gone.
func TestRegressionUringCreatedWhileClosing(t *testing.T) {
	skipIfKernelRefusesUring(t)
	requireNoLeaks(t)
	fs := new(sys.Faults)
	p, err := New(withFaults(fs))
	require.NoError(t, err)
	entered, resume := make(chan struct{}), make(chan struct{})
	var once sync.Once
	fs.Set(func(c sys.Call) error {
		if c == sys.CallEpollCtl {
			once.Do(func() { close(entered) })
			<-resume
		}
		return nil
	})
	defer func() { fs.Set(nil) }()
	var u *Uring
	var uerr error
	created := make(chan struct{})
	go func() {
		defer close(created)
		u, uerr = p.Driver().Uring()
	}()
	<-entered
	closed := make(chan error, 1)
	go func() { closed <- p.Close() }()
	for !p.isClosing() {
		time.Sleep(100 * time.Microsecond)
	}
	time.Sleep(20 * time.Millisecond) // a Close that does not wait for the creation gets ahead now
	close(resume)
	<-created
	select {
	case err := <-closed:
		require.NoError(t, err)
	case <-time.After(5 * time.Second):
		t.Fatal("Close never returned")
	}
	if uerr != nil {
		require.ErrorIs(t, uerr, ErrClosed)
		return
	}
	c, err := u.Start(func(s *SQE) { s.Opcode = OpNop })
	if err != nil {
		require.ErrorIs(t, err, ErrClosed)
		return
	}
	waited := make(chan error, 1)
	go func() { _, err := c.Wait(); waited <- err }()
	select {
	case err := <-waited:
		require.ErrorIs(t, err, ErrClosed)
	case <-time.After(2 * time.Second):
		t.Fatal("Completion.Wait on a ring created while the pool closed never returned")
	}
}

// Scenario 6: a task of pool B using pool A's Uring would write A's
// submission queue from B's loop, and wait for a loop that never submits
// it. Every task-layer entry point panics with a clear message instead.
func TestRegressionUringTaskOfAnotherPool(t *testing.T) {
	a, err := New()
	require.NoError(t, err)
	defer a.Close()
	ua := requireUring(t, a.Driver())
	var fds [2]int
	require.NoError(t, unix.Pipe2(fds[:], unix.O_CLOEXEC))
	defer unix.Close(fds[0])
	defer unix.Close(fds[1])
	runPool(t, func(tk *Task) error {
		for name, call := range map[string]func(t *Task) error{
			"Nop":  func(t *Task) error { return ua.Nop(t) },
			"Read": func(t *Task) error { _, err := ua.Read(t, fds[0], make([]byte, 8), -1); return err },
			"Submit": func(t *Task) error {
				_, err := ua.Submit(t, func(s *SQE) { s.Opcode = OpNop })
				return err
			},
			"Batch": func(t *Task) error {
				b := ua.NewBatch()
				if err := b.Nop(t); err != nil {
					return err
				}
				return b.Await(t)
			},
		} {
			got, err := withWatchdog(tk, time.Second, func(t *Task) (any, error) {
				var got any
				func() {
					defer func() { got = recover() }()
					err := call(t)
					got = fmt.Sprintf("no panic; returned %v", err)
				}()
				return got, nil
			})
			require.NoError(t, err)
			require.Contains(t, fmt.Sprint(got), "io_uring of another pool", name)
		}
		return nil
	})
}

// The last resort of Close: operations the kernel does not give back by
// the deadline (here every io_uring_enter is refused, so not even the
// cancels reach it) stay pinned and reachable on the leaked list rather than
// be freed under the kernel; a Completion's waiter still gets ErrClosed and
// Close returns.
func TestUringCloseLeaksWhatTheKernelKeeps(t *testing.T) {
	skipIfKernelRefusesUring(t)
	defer func(d time.Duration) { closeDeadline = d }(closeDeadline)
	closeDeadline = 50 * time.Millisecond
	var fds [2]int
	require.NoError(t, unix.Pipe2(fds[:], unix.O_CLOEXEC))
	defer unix.Close(fds[0])
	defer unix.Close(fds[1])
	leakedOps.Lock()
	leakedBefore := len(leakedOps.ops)
	leakedOps.Unlock()
	fs := new(sys.Faults)
	p, err := New(withFaults(fs))
	require.NoError(t, err)
	var c *Completion
	require.NoError(t, p.Run(func(tk *Task) error {
		u := requireUring(t, tk.Driver())
		b := u.NewBatch()
		require.NoError(t, b.Read(tk, fds[0], make([]byte, 8), -1))
		buf := make([]byte, 8)
		c, err = u.Start(func(s *SQE) {
			s.Opcode, s.Fd, s.Off = OpRead, int32(fds[0]), ^uint64(0)
			s.SetBuffer(buf)
		}, buf)
		require.NoError(t, err)
		return tk.Sleep(5 * time.Millisecond) // both reach the kernel
	}))
	fs.Set(func(c sys.Call) error {
		if c == sys.CallUringEnter {
			return unix.EBUSY
		}
		return nil
	})
	start := time.Now()
	require.NoError(t, p.Close())
	require.Less(t, time.Since(start), 2*time.Second)
	leakedOps.Lock()
	leaked := len(leakedOps.ops) - leakedBefore
	leakedOps.Unlock()
	require.Equal(t, 2, leaked, "the batch read and the Start's read are kept")
	_, err = c.Wait()
	require.ErrorIs(t, err, ErrClosed)
	runtime.GC() // the leaked ops' Pinners are reachable: no finalizer panic
}

// Issue 19, bug 5: an io_uring operation of a task canceled with a cause
// (SpawnContext with context.WithCancelCause, or a context deadline)
// returned plain ErrCanceled, dropping the cause that Sleep, Chan.Recv and
// Batch.Await keep: the ring had its own copy of the await. Checked for an
// operation in the kernel when the cancel lands, for one started after it
// (refused before it reaches the ring), and for a Batch; every canceled
// operation is still released at its completion.
func TestRegressionUringCancelKeepsCause(t *testing.T) {
	runPool(t, func(tk *Task) error {
		u := requireUring(t, tk.Driver())
		var fds [2]int
		require.NoError(t, unix.Pipe2(fds[:], unix.O_CLOEXEC))
		defer unix.Close(fds[0])
		defer unix.Close(fds[1])

		type outcome struct{ inKernel, after, batch error }
		run := func(ctx context.Context, cancel func()) outcome {
			var o outcome
			h := SpawnContext(tk.Driver(), ctx, "reader", func(t *Task) (int, error) {
				_, o.inKernel = u.Read(t, fds[0], make([]byte, 16), -1)
				o.after = u.Nop(t)
				b := u.NewBatch()
				if err := b.Nop(t); err != nil {
					o.batch = err
				} else {
					o.batch = b.Await(t)
				}
				return 0, nil
			})
			for i := 0; u.inflight == 0; i++ {
				require.Less(t, i, 1000, "the reader never started its read")
				require.NoError(t, tk.Yield())
			}
			cancel()
			_, err := h.Join(tk)
			require.NoError(t, err)
			requireCanceledOpsReleased(t, tk, u)
			return o
		}

		ctx, cancel := context.WithCancelCause(context.Background())
		o := run(ctx, func() { cancel(errShutdown{}) })
		for name, err := range map[string]error{"in the kernel": o.inKernel, "after the cancel": o.after, "batch": o.batch} {
			require.ErrorIs(t, err, errShutdown{}, "%s: the cause survives", name)
			require.ErrorIs(t, err, ErrCanceled, name)
		}

		dctx := &manualDeadline{Context: context.Background(), done: make(chan struct{})}
		o = run(dctx, func() { close(dctx.done) })
		for name, err := range map[string]error{"in the kernel": o.inKernel, "after the cancel": o.after, "batch": o.batch} {
			require.ErrorIs(t, err, context.DeadlineExceeded, "%s: the deadline survives", name)
			require.ErrorIs(t, err, ErrCanceled, name)
		}
		return nil
	})
}

// manualDeadline is a context that reaches its deadline when its done
// channel is closed: a deadline at a moment the test chooses.
type manualDeadline struct {
	context.Context
	done chan struct{}
}

func (c *manualDeadline) Done() <-chan struct{} { return c.done }

func (c *manualDeadline) Err() error {
	select {
	case <-c.done:
		return context.DeadlineExceeded
	default:
		return nil
	}
}
