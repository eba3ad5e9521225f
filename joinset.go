//go:build linux

package iopool

import (
	"context"
	"errors"
	"fmt"
	"sync"
)

// ErrJoinSetEmpty is returned by JoinSet.Next when the set has no task
// left to wait for.
var ErrJoinSetEmpty = errors.New("iopool: JoinSet has no tasks")

// JoinSet is a group of spawned tasks whose results are taken in the order
// they finish, like tokio's JoinSet:
//
//	set := iopool.NewJoinSet[int](drv)
//	for _, u := range urls {
//		set.Spawn("fetch", func(t *iopool.Task) (int, error) { return fetch(t, u) })
//	}
//	for set.Len() > 0 {
//		j, err := set.Next(t) // the first to finish, then the next...
//		...
//	}
//
// CancelAll cancels every task still running; Close does the same and
// refuses further spawns. A set made with NewJoinSetCancelOnError also
// cancels the others when one fails, like errgroup.WithContext. The tasks
// belong to the pool, not to the set: closing the pool cancels them too,
// and forgetting the set does not stop them. Spawn, CancelAll, Close, Len
// and Err are safe from any goroutine; Next is for one task at a time.
type JoinSet[T any] struct {
	drv *Driver
	// ctx is done once the set is closed; every task is spawned with
	// SpawnContext under it, so a task spawned after Close is canceled
	// before it is queued and never runs.
	ctx    context.Context
	cancel context.CancelCauseFunc

	mu      sync.Mutex
	running map[*joinEntry[T]]struct{} // mu: spawned, not finished
	done    []*joinEntry[T]            // mu: finished, not taken, in finishing order
	failed  error                      // mu: the first task error (cancelOnError sets only)
	// cancelOnError: the first task to fail cancels the others and ctx.
	cancelOnError bool
	waiter        Waker // mu: Next's waker while it waits
}

// Joined is a finished task of a JoinSet and its outcome.
type Joined[T any] struct {
	Task  *Task // the task, for its Name
	Value T     // the task function's value
	Err   error // its error: ErrCanceled if canceled, a *PanicError if it panicked
}

// joinEntry is one task of the set; it is the Waker its handle wakes when
// the task finishes.
type joinEntry[T any] struct {
	set *JoinSet[T]
	h   *Handle[T]
}

// keepsNoResult: the entry keeps the result for Next, so the task table
// lists the task as finished until Next takes it.
func (e *joinEntry[T]) keepsNoResult() {}

// NewJoinSet returns an empty set spawning on drv's pool.
func NewJoinSet[T any](drv *Driver) *JoinSet[T] {
	s := &JoinSet[T]{drv: drv, running: make(map[*joinEntry[T]]struct{})}
	s.ctx, s.cancel = context.WithCancelCause(context.Background())
	return s
}

// NewJoinSetCancelOnError returns an empty set, spawning on drv's pool,
// that cancels all its tasks as soon as one of them fails, as
// errgroup.WithContext does for goroutines. The first task to finish with
// a non-nil error (a panic, or a cancel, counts as one) cancels every task
// still running and every task spawned after it (those never run), with
// that error as the cause: their awaits return an error for which both
// errors.Is(err, ErrCanceled) and errors.Is(err, first) hold, and their
// Context is canceled with it (context.Cause). Err returns the first error.
// Next still returns every task, the failed one included, in finishing
// order.
func NewJoinSetCancelOnError[T any](drv *Driver) *JoinSet[T] {
	s := NewJoinSet[T](drv)
	s.cancelOnError = true
	return s
}

// Spawn starts fn as a task of the set and returns its handle (to cancel
// it alone; its result is also returned by Next). On a closed set the task
// is canceled before it runs and finishes with ErrCanceled.
func (s *JoinSet[T]) Spawn(name string, fn func(t *Task) (T, error)) *Handle[T] {
	// Canceled before it is queued if the set is closed already; canceled
	// by Close otherwise (through ctx, and by CancelAll if it is running
	// by then).
	h := SpawnContext(s.drv, s.ctx, name, fn)
	e := &joinEntry[T]{set: s, h: h}
	s.mu.Lock()
	s.running[e] = struct{}{}
	s.mu.Unlock()
	// Registers e with the handle, or, if the task already finished (a
	// closed pool), moves it to done at once.
	if h.watch(e) {
		e.Wake()
	}
	return h
}

// Wake moves the entry from running to done and wakes Next. The handle
// calls it once, when the task finishes; a second call finds it gone.
func (e *joinEntry[T]) Wake() {
	s := e.set
	s.mu.Lock()
	if _, ok := s.running[e]; !ok {
		s.mu.Unlock()
		return
	}
	delete(s.running, e)
	s.done = append(s.done, e)
	w := s.waiter
	s.waiter = nil
	var cause error
	var rest []*Handle[T]
	if s.cancelOnError && s.failed == nil {
		if _, err := e.h.outcome(); err != nil {
			s.failed = err
			cause = fmt.Errorf("JoinSet task %q failed: %w", e.h.Task().Name(), err)
			rest = s.runningHandlesLocked()
		}
	}
	s.mu.Unlock()
	if cause != nil {
		s.cancel(cause) // tasks spawned from now on never run
		for _, h := range rest {
			h.task.cancelWithCause(cause)
		}
	}
	if w != nil {
		w.Wake()
	}
}

// runningHandlesLocked returns the handles of the tasks still running.
func (s *JoinSet[T]) runningHandlesLocked() []*Handle[T] {
	hs := make([]*Handle[T], 0, len(s.running))
	for e := range s.running {
		hs = append(hs, e.h)
	}
	return hs
}

// Err returns the error of the first task of the set that failed, for a
// set made with NewJoinSetCancelOnError, or nil while none has. For a set
// made with NewJoinSet it is always nil.
func (s *JoinSet[T]) Err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.failed
}

// Len returns the number of tasks in the set: running, or finished and not
// yet taken by Next.
func (s *JoinSet[T]) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.running) + len(s.done)
}

// Poll is ready with the next finished task, in finishing order. An empty
// set is pending, like one whose tasks all still run: it never wins a
// Select, and the poller is woken when a task spawned into it later
// finishes. (Next tells an empty set apart: it returns ErrJoinSetEmpty.)
func (s *JoinSet[T]) Poll(cx *PollContext) (Joined[T], error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.done) > 0 {
		e := s.done[0]
		s.done[0] = nil
		s.done = s.done[1:]
		v, _, err := e.h.Result()
		return Joined[T]{Task: e.h.Task(), Value: v, Err: err}, nil
	}
	s.waiter = cx.waker
	return Joined[T]{}, ErrPending
}

// Next waits inside task t for the next task of the set to finish, in
// finishing order, and returns it with its value and error. It returns
// ErrJoinSetEmpty when the set is empty, and ErrCanceled if t is canceled
// while waiting (the set is left intact).
func (s *JoinSet[T]) Next(t *Task) (Joined[T], error) {
	if s.Len() == 0 {
		return Joined[T]{}, ErrJoinSetEmpty
	}
	return Await[Joined[T]](t, s)
}

// CancelAll cancels every task still running. They stay in the set and
// Next returns them, typically with ErrCanceled.
func (s *JoinSet[T]) CancelAll() {
	s.mu.Lock()
	hs := s.runningHandlesLocked()
	s.mu.Unlock()
	for _, h := range hs {
		h.Cancel()
	}
}

// Close cancels every running task and refuses further spawns (they are
// canceled before they run). It does not wait: call Next until Len is 0 to
// wait for the tasks to finish. Closing twice is a no-op.
func (s *JoinSet[T]) Close() {
	s.cancel(nil)
	s.CancelAll()
}
