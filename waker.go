//go:build linux

package iopool

import (
	"reflect"
	"sync/atomic"
	"time"
)

// Waker is notified when a pending future may make progress.
//
// Wake may be called from any goroutine, any number of times; an
// implementation coalesces repeated wakes that arrive before the woken party
// polls again (a task woken twice before it runs is queued once).
type Waker interface {
	Wake()
}

// sameWaker reports whether a and b are the same waker. Wakers are compared
// to keep one registration per waiter, under the lock of what is polled;
// == on two interface values of one uncomparable dynamic type (a
// WakerFunc, a struct holding a slice) panics, and would leave that lock
// held. Such wakers count as different: at worst a waiter is kept twice
// and woken twice, which the Waker contract allows.
func sameWaker(a, b Waker) bool {
	if ta, ok := a.(*Task); ok { // the common case, without reflect
		tb, ok := b.(*Task)
		return ok && ta == tb
	}
	if a == nil || b == nil {
		return a == nil && b == nil
	}
	t := reflect.TypeOf(a)
	return t == reflect.TypeOf(b) && t.Comparable() && a == b
}

// WakerFunc adapts a plain function to the Waker interface.
type WakerFunc func()

// Wake calls f.
func (f WakerFunc) Wake() { f() }

// PollContext is what a poll function receives: the waker to store when it
// returns pending. A PollContext is valid only for the duration of one Poll
// call; keep the Waker, not the PollContext.
type PollContext struct {
	waker Waker
}

// NewPollContext returns a PollContext that carries w. A nil w is allowed: every
// future of this package then records no waker and nothing is woken, so
// the caller must poll again by itself.
func NewPollContext(w Waker) *PollContext { return &PollContext{waker: w} }

// Waker returns the waker to notify when the polled object becomes ready.
func (cx *PollContext) Waker() Waker { return cx.waker }

// Future is a value, or an error, that becomes ready later. Poll returns
// the value and a nil error once ready, or the error the future failed
// with; while it is not ready, it stores cx.Waker() and returns the error
// ErrPending itself (compared with ==, never wrapped), and the waker is
// called when polling again may succeed. Spurious wakes are allowed: a
// woken poller simply polls again.
//
// This is the one way a future reports failure: the error is Poll's last
// result, as Await, Select and BlockOn return it, and a future built on
// another passes ErrPending on like any error.
type Future[T any] interface {
	Poll(cx *PollContext) (T, error)
}

// PollFunc adapts a poll function to the Future interface.
type PollFunc[T any] func(cx *PollContext) (T, error)

// Poll calls f.
func (f PollFunc[T]) Poll(cx *PollContext) (T, error) { return f(cx) }

// pendingUnless is the error of a future built on a poll function that
// reports readiness (FdReady.PollReady, Timer.PollTimer): nil once ready,
// ErrPending before.
func pendingUnless(ready bool) error {
	if ready {
		return nil
	}
	return ErrPending
}

// WakerList collects wakers while a lock is held so that they can be woken
// after it is released: a Wake may re-enter the object that collected it.
// The zero value is ready to use; it keeps its storage between rounds.
type WakerList struct {
	wakers []Waker
}

// Add appends w; a nil waker is ignored.
func (l *WakerList) Add(w Waker) {
	if w != nil {
		l.wakers = append(l.wakers, w)
	}
}

// Len reports how many wakers are waiting to be woken.
func (l *WakerList) Len() int { return len(l.wakers) }

// WakeAll wakes every collected waker, in the order added, and empties the list.
func (l *WakerList) WakeAll() {
	for i, w := range l.wakers {
		l.wakers[i] = nil
		w.Wake()
	}
	l.wakers = l.wakers[:0]
}

// BlockOn drives fut from a plain goroutine until it is ready, parking the
// goroutine between polls, and returns its value and error. If fut waits
// on a pool's loop (a Timer, an FdReady or FdSignal, a Handle, an io_uring
// Completion, or a future built on them) while that loop is not running,
// BlockOn waits at most one second for a Run or Start and then returns an
// error wrapping ErrNotRunning (ErrClosed if the pool was closed). Called
// from inside a task when fut is pending, it panics instead of blocking
// the task's pool: use Await(t, fut).
func BlockOn[T any](fut Future[T]) (T, error) {
	return blockOn(fut, "BlockOn", "Await(t, fut)")
}

// blockOn is BlockOn for call, which names instead in its panic.
func blockOn[T any](fut Future[T], call, instead string) (T, error) {
	w := newParkWaker()
	cx := &PollContext{waker: w}
	checked := false
	for {
		if v, err := fut.Poll(cx); !isPending(err) {
			return v, checkPending(err)
		}
		if !checked {
			checked = true
			panicIfCalledFromTask(call, instead)
		}
		p := w.pool.Load()
		if p == nil {
			w.park()
			continue
		}
		if err := w.parkUntil(p, 0); err != nil {
			var zero T
			return zero, err
		}
	}
}

// parkWaker parks a plain goroutine until woken. A wake that arrives before
// park is remembered (the channel has room for one), so none is lost, and
// repeated wakes cost one channel send at most.
type parkWaker struct {
	ch    chan struct{}
	timer *time.Timer          // parkUntil's, created on first use; the parked goroutine only
	pool  atomic.Pointer[Pool] // the pool whose loop last took this waker (notePark), if any
}

func newParkWaker() *parkWaker { return &parkWaker{ch: make(chan struct{}, 1)} }

func (w *parkWaker) Wake() {
	select {
	case w.ch <- struct{}{}:
	default:
	}
}

func (w *parkWaker) park() { <-w.ch }

// parkUntil parks until woken, until p's clock reaches deadline (0: no
// deadline) on a Go timer that does not need p's loop to run, or until p's
// loop starts or stops; it returns an error wrapping ErrNotRunning when p's
// loop stayed stopped for the bound (see Pool.parkOn).
func (w *parkWaker) parkUntil(p *Pool, deadline int64) error {
	return p.parkOn(w.ch, deadline, &w.timer)
}

// notePark records on w, if it parks a goroutine, that p's loop is what
// will wake it, so that the goroutine does not wait for a loop that is not
// running (BlockOn). Called by p's futures when they store a waker.
func (p *Pool) notePark(w Waker) {
	if pw, ok := w.(*parkWaker); ok && pw.pool.Load() != p {
		pw.pool.Store(p)
	}
}
