//go:build linux

package iopool

import (
	"fmt"
	"sync"
)

// Handle is the result of a spawned task. It is a Future of the task's value,
// so it can be awaited from another task (Join), waited for from a plain
// goroutine (Wait), or polled.
type Handle[T any] struct {
	task   Task // the task itself: one allocation for both
	fn     func(t *Task) (T, error)
	value  T              // valid once done
	err    error          // valid once done
	waiter Waker          // mu: the first poller to wake when done
	more   *handleWaiters // mu: the other waiters, rarely any
	mu     sync.Mutex
	done   bool // mu: the task finished
	joined bool // mu: its result was taken (Join, Wait, Result, Poll ready, JoinSet.Next)
}

// handleWaiters are the waiters of a handle beyond its first poller: more
// pollers, and the goroutines in Wait. Few handles have any, so they cost a
// pointer until then.
type handleWaiters struct {
	wakers []Waker
	doneCh chan struct{} // created by Wait, closed when done
}

// Spawn starts fn as a new task on drv's pool. It is safe from any goroutine.
// On a closed pool the handle resolves at once to ErrClosed.
//
// Unlike a goroutine, a task runs only while its pool's loop runs (during
// Run, or from Pool.Start until Close), and belongs to the pool, not to
// whoever spawned it. A task nobody joins stops where it is when the root
// task given to Run returns (Run does not wait for it; it goes on at the
// next Run or Start), and Pool.Close cancels it: its awaits return
// ErrCanceled and it finishes then. To have spawned tasks finish, Join
// their handles (or take them from a JoinSet) before the root returns.
func Spawn[T any](drv *Driver, name string, fn func(t *Task) (T, error)) *Handle[T] {
	if fn == nil {
		panic("iopool: Spawn called with a nil function")
	}
	h := &Handle[T]{fn: fn}
	h.task.init(drv.p, name, h)
	drv.p.enqueueNew(&h.task)
	return h
}

func (h *Handle[T]) run(t *Task) error {
	v, err := h.fn(t)
	h.value = v
	return err
}

func (h *Handle[T]) complete(err error, pe *PanicError, wakers *WakerList) (unclaimed bool) {
	if pe != nil {
		err = pe
	}
	if isPending(err) {
		// As the handle's result it would read as "still running".
		err = fmt.Errorf("iopool: task %q returned ErrPending, which only a future's Poll may return", h.task.name)
	}
	h.mu.Lock()
	h.done = true
	h.err = err
	w, more := h.waiter, h.more
	h.waiter, h.more = nil, nil
	h.fn = nil
	// Nobody waits to take the result now: no Join or Select is polling
	// it, no goroutine is in Wait; or a JoinSet holds it for Next.
	unclaimed = !takesResult(w)
	if more != nil {
		unclaimed = unclaimed && more.doneCh == nil
		for _, o := range more.wakers {
			unclaimed = unclaimed && !takesResult(o)
		}
		if more.doneCh != nil {
			close(more.doneCh)
		}
	}
	h.mu.Unlock()
	if wakers == nil {
		wakers = new(WakerList)
		defer wakers.WakeAll()
	}
	wakers.Add(w)
	if more != nil {
		for _, w := range more.wakers {
			wakers.Add(w)
		}
	}
	return unclaimed
}

// bookkeepingWaker marks the wakers a handle wakes that do not take the
// task's result: a JoinSet's entry (it keeps the result for Next) and
// SpawnContext's unregistering of its context.
type bookkeepingWaker interface{ keepsNoResult() }

// takesResult reports whether w, a waiter of a handle, will take the
// result when woken (a Join, a Select).
func takesResult(w Waker) bool {
	_, bookkeeping := w.(bookkeepingWaker)
	return w != nil && !bookkeeping
}

func (h *Handle[T]) unjoined() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.done && !h.joined
}

// outcome returns the result of a finished task without taking it (for a
// JoinSet deciding whether to cancel the rest).
func (h *Handle[T]) outcome() (T, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.value, h.err
}

// Task returns the spawned task, to cancel it or read its name.
func (h *Handle[T]) Task() *Task { return &h.task }

// Cancel cancels the task (see Task.Cancel).
func (h *Handle[T]) Cancel() { h.task.Cancel() }

// Poll is ready with the task's value and error once it has finished. A
// nil waker (NewPollContext(nil)) is not stored, as with every future of
// this package: the poller polls again on its own.
func (h *Handle[T]) Poll(cx *PollContext) (T, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.done {
		h.joined = true
		return h.value, h.err
	}
	h.addWaiterLocked(cx.waker)
	var zero T
	return zero, ErrPending
}

// watch registers w, a bookkeepingWaker, to be woken when the task
// finishes, or reports that it has, without taking the result.
func (h *Handle[T]) watch(w Waker) (done bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if !h.done {
		h.addWaiterLocked(w)
	}
	return h.done
}

// addWaiterLocked stores w (if not nil and not stored already) to be woken
// when the task finishes. With h.mu held.
func (h *Handle[T]) addWaiterLocked(w Waker) {
	if w == nil {
		return
	}
	switch {
	case h.waiter == nil:
		h.waiter = w
	case sameWaker(h.waiter, w):
		return
	default:
		m := h.waitersLocked()
		for _, o := range m.wakers {
			if sameWaker(o, w) {
				return
			}
		}
		m.wakers = append(m.wakers, w)
	}
	h.task.pool.notePark(w)
}

// waitersLocked returns h.more, allocating it on first use. With h.mu held.
func (h *Handle[T]) waitersLocked() *handleWaiters {
	if h.more == nil {
		h.more = new(handleWaiters)
	}
	return h.more
}

// Result reports whether the task has finished and, if it has, returns its
// value and error (before it has, the zero value and nil).
func (h *Handle[T]) Result() (value T, done bool, err error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if !h.done {
		// run may be writing h.value on the task's goroutine: only done
		// (set under h.mu after it) publishes it.
		var zero T
		return zero, false, nil
	}
	h.joined = true
	return h.value, true, h.err
}

// Join waits, inside task t, for the spawned task to finish and returns its
// value and error (a *PanicError if it panicked, an error wrapping ErrGoexit
// if it called runtime.Goexit).
func (h *Handle[T]) Join(t *Task) (T, error) {
	return Await[T](t, h)
}

// Wait blocks the calling plain goroutine until the task finishes, and
// returns its value and error. If the pool's loop is not running (no Run or
// Start), Wait waits at most one second for one and then returns an error
// wrapping ErrNotRunning. Called from a task of the same pool while the
// task is unfinished, it panics: the pool could not run the task it waits
// for; use Join.
func (h *Handle[T]) Wait() (T, error) {
	h.mu.Lock()
	if !h.done {
		h.mu.Unlock()
		// A task of the pool can be calling only while the pool runs one.
		if p := h.task.pool; p.current.Load() != nil && callerPool() == p {
			panic(fmt.Sprintf("iopool: Handle.Wait called from a task of the same pool as task %q, which could then never run: use Join(t)", h.task.name))
		}
		h.mu.Lock()
	}
	if !h.done {
		m := h.waitersLocked()
		if m.doneCh == nil {
			m.doneCh = make(chan struct{})
		}
		ch := m.doneCh
		h.mu.Unlock()
		if err := h.task.pool.parkUntilClosed(ch); err != nil {
			var zero T
			return zero, err
		}
		h.mu.Lock()
	}
	defer h.mu.Unlock()
	h.joined = true
	return h.value, h.err
}
