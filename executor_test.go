package iopool

import (
	"context"
	"errors"
	"runtime"

	"golang.org/x/sys/unix"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// newTestPool returns a pool closed at the end of the test.
func newTestPool(t *testing.T, opts ...Option) *Pool {
	t.Helper()
	requireNoLeaks(t) // registered first, so it runs after the Close below
	p, err := New(opts...)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, p.Close()) })
	return p
}

// flagFuture is ready once set; it keeps the last waker it was polled with.
type flagFuture struct {
	mu    sync.Mutex
	set   bool
	waker Waker
	polls int
}

func (f *flagFuture) Poll(cx *Context) (struct{}, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.polls++
	if f.set {
		return struct{}{}, true
	}
	f.waker = cx.Waker()
	return struct{}{}, false
}

func (f *flagFuture) fire() {
	f.mu.Lock()
	f.set = true
	w := f.waker
	f.mu.Unlock()
	if w != nil {
		w.Wake()
	}
}

// Seed scenario: a waker stored by a pending future is woken from another
// goroutine and the task completes.
func TestWakerFromAnotherGoroutine(t *testing.T) {
	p := newTestPool(t)
	f := &flagFuture{}
	err := p.Run(func(tk *Task) error {
		go func() {
			time.Sleep(5 * time.Millisecond)
			f.fire()
		}()
		_, err := Await[struct{}](tk, f)
		return err
	})
	require.NoError(t, err)
	require.Equal(t, 2, f.polls, "the future is polled once pending and once after the wake")
	st := p.Stats()
	require.LessOrEqual(t, st.EventfdWrites, st.Sleeps, "at most one eventfd write per sleep")
}

// Seed scenario: tasks spawned from another goroutine while the pool is
// sleeping run, and their results come back through Wait and Join.
func TestRemoteSpawnWhileSleeping(t *testing.T) {
	p := newTestPool(t)
	drv := p.Driver()
	stop := NewOneshot[struct{}]()
	const n = 50
	results := make(chan int, n)
	sent := make(chan error, 1) // the goroutine's error, checked by the test's goroutine
	go func() {
		time.Sleep(2 * time.Millisecond) // let the loop go to sleep
		var wg sync.WaitGroup
		for i := range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				h := Spawn(drv, "remote", func(t *Task) (int, error) { return i * i, nil })
				v, err := h.Wait()
				if err == nil {
					results <- v
				}
			}()
		}
		wg.Wait()
		// Send fails only on a closed oneshot, which ends the Recv below.
		sent <- stop.Send(struct{}{})
	}()
	require.NoError(t, p.Run(func(tk *Task) error {
		_, err := stop.Recv(tk)
		return err
	}))
	require.NoError(t, <-sent)
	close(results)
	sum := 0
	for v := range results {
		sum += v
	}
	want := 0
	for i := range n {
		want += i * i
	}
	require.Equal(t, want, sum)
	st := p.Stats()
	require.GreaterOrEqual(t, st.Sleeps, uint64(1))
	require.LessOrEqual(t, st.EventfdWrites, st.Sleeps)
}

// Seed scenario: a timer created on the pool is polled from another
// goroutine (not a task) and fires; the sleeping loop sleeps for it.
func TestTimerPolledFromAnotherGoroutine(t *testing.T) {
	p := newTestPool(t)
	tm := p.Driver().NewTimer()
	done := NewOneshot[time.Duration]()
	go func() {
		start := time.Now()
		BlockOn[time.Time](tm.Future(start.Add(20 * time.Millisecond)))
		_ = done.Send(time.Since(start))
	}()
	var got time.Duration
	require.NoError(t, p.Run(func(tk *Task) error {
		var err error
		got, err = done.Recv(tk)
		return err
	}))
	require.GreaterOrEqual(t, got, 20*time.Millisecond)
}

func TestSpawnJoinValueAndError(t *testing.T) {
	p := newTestPool(t)
	drv := p.Driver()
	require.NoError(t, p.Run(func(tk *Task) error {
		h := Spawn(drv, "answer", func(st *Task) (int, error) {
			require.NoError(t, st.Sleep(time.Millisecond))
			return 42, nil
		})
		v, err := h.Join(tk)
		require.NoError(t, err)
		require.Equal(t, 42, v)

		boom := Spawn(drv, "fails", func(t *Task) (string, error) { return "", errTest })
		_, err = boom.Join(tk)
		require.ErrorIs(t, err, errTest)
		return nil
	}))
}

var errTest = errorString("test error")

type errorString string

func (e errorString) Error() string { return string(e) }

func TestSleepOrdersTasks(t *testing.T) {
	p := newTestPool(t)
	drv := p.Driver()
	var mu sync.Mutex
	var order []int
	require.NoError(t, p.Run(func(tk *Task) error {
		var hs []*Handle[struct{}]
		for _, ms := range []int{30, 10, 20, 0} {
			hs = append(hs, Spawn(drv, "sleeper", func(t *Task) (struct{}, error) {
				err := t.Sleep(time.Duration(ms) * time.Millisecond)
				mu.Lock()
				order = append(order, ms)
				mu.Unlock()
				return struct{}{}, err
			}))
		}
		for _, h := range hs {
			if _, err := h.Join(tk); err != nil {
				return err
			}
		}
		return nil
	}))
	require.Equal(t, []int{0, 10, 20, 30}, order)
}

func TestNegativeSleepIsReadyAtOnce(t *testing.T) {
	p := newTestPool(t)
	require.NoError(t, p.Run(func(tk *Task) error {
		start := time.Now()
		require.NoError(t, tk.Sleep(-time.Hour))
		require.NoError(t, tk.Sleep(0))
		require.Less(t, time.Since(start), 50*time.Millisecond)
		return nil
	}))
	require.Zero(t, p.Stats().Sleeps, "a ready sleep never blocks the loop")
}

func TestYieldLetsOtherTasksRun(t *testing.T) {
	p := newTestPool(t)
	var steps []string
	require.NoError(t, p.Run(func(tk *Task) error {
		h := Spawn(p.Driver(), "other", func(t *Task) (int, error) {
			steps = append(steps, "other")
			return 0, nil
		})
		steps = append(steps, "root-before")
		require.NoError(t, tk.Yield())
		steps = append(steps, "root-after")
		_, err := h.Join(tk)
		return err
	}))
	require.Equal(t, []string{"root-before", "other", "root-after"}, steps)
}

func TestCancelSleepingTask(t *testing.T) {
	p := newTestPool(t)
	require.NoError(t, p.Run(func(tk *Task) error {
		var ctxErr error
		h := Spawn(p.Driver(), "sleeper", func(st *Task) (int, error) {
			ctx := st.Context()
			err := st.Sleep(time.Hour)
			ctxErr = ctx.Err()
			// Later awaits fail too.
			_, err2 := Await[struct{}](st, &flagFuture{set: true})
			require.ErrorIs(t, err2, ErrCanceled)
			return 0, err
		})
		require.NoError(t, tk.Sleep(time.Millisecond))
		h.Cancel()
		_, err := h.Join(tk)
		require.ErrorIs(t, err, ErrCanceled)
		require.ErrorIs(t, err, context.Canceled)
		require.ErrorIs(t, ctxErr, context.Canceled)
		return nil
	}))
	require.Zero(t, p.timers.len(), "a canceled sleep disarms its timer")
}

func TestCancelBeforeStartDoesNotRun(t *testing.T) {
	p := newTestPool(t)
	ran := false
	h := Spawn(p.Driver(), "never", func(t *Task) (int, error) { ran = true; return 1, nil })
	h.Cancel()
	require.NoError(t, p.Run(func(tk *Task) error {
		_, err := h.Join(tk)
		require.ErrorIs(t, err, ErrCanceled)
		return nil
	}))
	require.False(t, ran)
}

func TestPanicInSpawnedTaskReachesJoin(t *testing.T) {
	p := newTestPool(t)
	require.NoError(t, p.Run(func(tk *Task) error {
		h := Spawn(p.Driver(), "panicky", func(t *Task) (int, error) { panic("kaboom") })
		_, err := h.Join(tk)
		var pe *PanicError
		require.ErrorAs(t, err, &pe)
		require.Equal(t, "kaboom", pe.Value)
		require.Equal(t, "panicky", pe.Task)
		require.Contains(t, string(pe.Stack), "TestPanicInSpawnedTaskReachesJoin")
		return nil
	}))
	// The pool keeps working after a task panicked.
	require.NoError(t, p.Run(func(tk *Task) error { return tk.Sleep(time.Millisecond) }))
}

func TestPanicInRootRepanicsFromRun(t *testing.T) {
	p := newTestPool(t)
	defer func() {
		v := recover()
		pe, ok := v.(*PanicError)
		require.True(t, ok, "Run re-panics with a *PanicError, got %#v", v)
		require.Equal(t, "root down", pe.Value)
		// The pool is usable again.
		require.NoError(t, p.Run(func(tk *Task) error { return nil }))
	}()
	_ = p.Run(func(tk *Task) error { panic("root down") })
}

func TestTasksOutliveRootAndContinueOnNextRun(t *testing.T) {
	p := newTestPool(t)
	var counter atomic.Int32
	var h *Handle[int]
	require.NoError(t, p.Run(func(tk *Task) error {
		h = Spawn(p.Driver(), "survivor", func(t *Task) (int, error) {
			for range 3 {
				if err := t.Sleep(time.Millisecond); err != nil {
					return 0, err
				}
				counter.Add(1)
			}
			return int(counter.Load()), nil
		})
		return nil
	}))
	require.Less(t, counter.Load(), int32(3))
	require.EqualValues(t, 1, p.Stats().TasksLive)
	require.NoError(t, p.Run(func(tk *Task) error {
		v, err := h.Join(tk)
		require.Equal(t, 3, v)
		return err
	}))
	require.Zero(t, p.Stats().TasksLive)
}

func TestCloseCancelsLeftoverTasks(t *testing.T) {
	p, err := New()
	require.NoError(t, err)
	var sawCancel atomic.Bool
	h := Spawn(p.Driver(), "forever", func(t *Task) (int, error) {
		err := t.Sleep(time.Hour)
		sawCancel.Store(errors.Is(err, ErrCanceled))
		return 7, err
	})
	require.NoError(t, p.Run(func(tk *Task) error { return tk.Yield() }))
	require.NoError(t, p.Close())
	require.True(t, sawCancel.Load(), "the task ran to completion with ErrCanceled")
	v, err := h.Wait()
	require.Equal(t, 7, v)
	require.ErrorIs(t, err, ErrCanceled)
	require.NoError(t, p.Close(), "Close twice is a no-op")
}

func TestCloseWhileRunReturnsErrClosed(t *testing.T) {
	p, err := New()
	require.NoError(t, err)
	started := make(chan struct{})
	runErr := make(chan error, 1)
	var rootSaw error
	go func() {
		runErr <- p.Run(func(tk *Task) error {
			close(started)
			rootSaw = tk.Sleep(time.Hour)
			return rootSaw
		})
	}()
	<-started
	time.Sleep(2 * time.Millisecond)
	require.NoError(t, p.Close())
	require.ErrorIs(t, <-runErr, ErrClosed)
	require.ErrorIs(t, rootSaw, ErrCanceled)
}

func TestRunMisuse(t *testing.T) {
	p := newTestPool(t)
	require.ErrorIs(t, p.Run(nil), ErrNilTask)

	release := make(chan struct{})
	inside := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		done <- p.Run(func(tk *Task) error {
			close(inside)
			_, err := BlockOnTask(tk, release)
			return err
		})
	}()
	<-inside
	require.ErrorIs(t, p.Run(func(tk *Task) error { return nil }), ErrRunning)
	close(release)
	require.NoError(t, <-done, "the first Run keeps running")

	q, err := New()
	require.NoError(t, err)
	require.NoError(t, q.Close())
	require.ErrorIs(t, q.Run(func(tk *Task) error { return nil }), ErrClosed)
	h := Spawn(q.Driver(), "late", func(t *Task) (int, error) { return 1, nil })
	_, err = h.Wait()
	require.ErrorIs(t, err, ErrClosed)
}

// BlockOnTask waits inside a task for a Go channel to close, polling it from
// a helper goroutine: a test utility.
func BlockOnTask(tk *Task, ch <-chan struct{}) (struct{}, error) {
	f := &flagFuture{}
	go func() { <-ch; f.fire() }()
	return Await[struct{}](tk, f)
}

func TestNewRejectsBadOptions(t *testing.T) {
	for _, n := range []int{0, -1, maxEventBuffer + 1} {
		_, err := New(WithEventBuffer(n))
		require.ErrorContains(t, err, "WithEventBuffer")
	}
	_, err := New(nil)
	require.Error(t, err)
}

func TestTaskUsedOutsideItsFunctionPanics(t *testing.T) {
	p := newTestPool(t)
	var leaked *Task
	require.NoError(t, p.Run(func(tk *Task) error {
		leaked = tk
		h := Spawn(p.Driver(), "other", func(*Task) (int, error) {
			require.PanicsWithValue(t,
				`iopool: *Task "root" used outside its own task function (from another goroutine, another task, or after it returned)`,
				func() { _ = leaked.Sleep(time.Millisecond) })
			return 0, nil
		})
		_, err := h.Join(tk)
		return err
	}))
	require.Panics(t, func() { _ = leaked.Yield() })
}

func TestCloseFromOwnTaskPanics(t *testing.T) {
	p := newTestPool(t)
	require.NoError(t, p.Run(func(tk *Task) error {
		require.PanicsWithValue(t, "iopool: Pool.Close called from one of the pool's own tasks; return from the root task instead",
			func() { _ = p.Close() })
		return nil
	}))
}

func TestWithLockOSThreadRunsOnOneThread(t *testing.T) {
	p := newTestPool(t, WithLockOSThread())
	require.NoError(t, p.Run(func(tk *Task) error {
		tid := unix.Gettid()
		for range 5 {
			h := Spawn(p.Driver(), "same-thread", func(t *Task) (int, error) {
				if err := t.Sleep(100 * time.Microsecond); err != nil {
					return 0, err
				}
				return unix.Gettid(), nil
			})
			got, err := h.Join(tk)
			require.NoError(t, err)
			require.Equal(t, tid, got)
		}
		return nil
	}))
}

// Regression: tasks left by a Run of a WithLockOSThread pool used to be
// resumed by Close on the (unlocked) closing goroutine, which the runtime
// rejects ("coro: OS thread locking must match locking at coroutine
// creation") by killing the process.
func TestRegressionLockedPoolCloseDrainsLeftoverTasks(t *testing.T) {
	p, err := New(WithLockOSThread())
	require.NoError(t, err)
	h := Spawn(p.Driver(), "leftover", func(t *Task) (int, error) { return 0, t.Sleep(time.Hour) })
	require.NoError(t, p.Run(func(tk *Task) error { return tk.Yield() }))
	require.NoError(t, p.Close())
	_, err = h.Wait()
	require.ErrorIs(t, err, ErrCanceled)
}

// Regression: the same when the caller locks its own goroutine, runs a
// plain pool, and another goroutine closes it.
func TestRegressionCallerLockedRunThenCloseElsewhere(t *testing.T) {
	p, err := New()
	require.NoError(t, err)
	var h *Handle[int]
	ran := make(chan error, 1) // Run's result, checked by the test's goroutine
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		h = Spawn(p.Driver(), "leftover", func(t *Task) (int, error) { return 0, t.Sleep(time.Hour) })
		ran <- p.Run(func(tk *Task) error { return tk.Yield() })
	}()
	require.NoError(t, <-ran)
	require.NoError(t, p.Close())
	_, err = h.Wait()
	require.ErrorIs(t, err, ErrCanceled)
}
