//go:build linux

package iopool

import (
	"runtime"

	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

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

func (f *flagFuture) Poll(cx *PollContext) (struct{}, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.polls++
	if f.set {
		return struct{}{}, nil
	}
	f.waker = cx.Waker()
	return struct{}{}, ErrPending
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

var errTest = errorString("test error")

type errorString string

func (e errorString) Error() string { return string(e) }

// BlockOnTask waits inside a task for a Go channel to close, polling it from
// a helper goroutine: a test utility.
func BlockOnTask(tk *Task, ch <-chan struct{}) (struct{}, error) {
	f := &flagFuture{}
	go func() { <-ch; f.fire() }()
	return Await[struct{}](tk, f)
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
