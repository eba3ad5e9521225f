package iopool

import "reflect"

import "time"

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

// Context is what a poll function receives: the waker to store when it
// returns pending. A Context is valid only for the duration of one Poll call;
// keep the Waker, not the Context.
type Context struct {
	waker Waker
}

// NewContext returns a Context that carries w. A nil w is allowed: every
// future of this package then records no waker and nothing is woken, so
// the caller must poll again by itself.
func NewContext(w Waker) *Context { return &Context{waker: w} }

// Waker returns the waker to notify when the polled object becomes ready.
func (cx *Context) Waker() Waker { return cx.waker }

// Future is a value that becomes ready later. Poll returns (value, true) once
// ready; otherwise it stores cx.Waker() and returns false, and the waker is
// called when polling again may succeed. Spurious wakes are allowed: a woken
// poller simply polls again.
type Future[T any] interface {
	Poll(cx *Context) (T, bool)
}

// PollFunc adapts a poll function to the Future interface.
type PollFunc[T any] func(cx *Context) (T, bool)

// Poll calls f.
func (f PollFunc[T]) Poll(cx *Context) (T, bool) { return f(cx) }

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
// goroutine between polls, and returns its value. Called from inside a task
// when fut is pending, it panics instead of blocking the task's pool: use
// Await(t, fut).
func BlockOn[T any](fut Future[T]) T {
	return blockOn(fut, "BlockOn", "Await(t, fut)")
}

// blockOn is BlockOn for call, which names instead in its panic.
func blockOn[T any](fut Future[T], call, instead string) T {
	w := newParkWaker()
	cx := &Context{waker: w}
	checked := false
	for {
		if v, ok := fut.Poll(cx); ok {
			return v
		}
		if !checked {
			checked = true
			panicIfCalledFromTask(call, instead)
		}
		w.park()
	}
}

// parkWaker parks a plain goroutine until woken. A wake that arrives before
// park is remembered (the channel has room for one), so none is lost, and
// repeated wakes cost one channel send at most.
type parkWaker struct {
	ch    chan struct{}
	timer *time.Timer // parkUntil's, created on first use; the parked goroutine only
}

func newParkWaker() *parkWaker { return &parkWaker{ch: make(chan struct{}, 1)} }

func (w *parkWaker) Wake() {
	select {
	case w.ch <- struct{}{}:
	default:
	}
}

func (w *parkWaker) park() { <-w.ch }

// parkUntil parks until woken or until p's clock reaches deadline (0: no
// deadline), on a Go timer that does not need p's loop to run.
func (w *parkWaker) parkUntil(p *Pool, deadline int64) {
	if deadline == 0 {
		w.park()
		return
	}
	left := time.Duration(deadline - p.monoNow())
	if left <= 0 {
		return
	}
	if w.timer == nil {
		w.timer = time.NewTimer(left)
	} else {
		w.timer.Reset(left) // since Go 1.23 no stale tick can be received
	}
	select {
	case <-w.ch:
		w.timer.Stop()
	case <-w.timer.C:
	}
}
