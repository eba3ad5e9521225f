package iopool

import (
	"context"
	"errors"
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
// refuses further spawns. The tasks belong to the pool: closing the pool
// cancels them too. Spawn, CancelAll, Close and Len are safe from any
// goroutine; Next is for one task at a time.
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
	waiter  Waker                      // mu: Next's waker while it waits
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

// NewJoinSet returns an empty set spawning on drv's pool.
func NewJoinSet[T any](drv *Driver) *JoinSet[T] {
	s := &JoinSet[T]{drv: drv, running: make(map[*joinEntry[T]]struct{})}
	s.ctx, s.cancel = context.WithCancelCause(context.Background())
	return s
}

// Spawn starts fn as a task of the set and returns its handle (to cancel
// it alone; its result is also returned by Next). On a closed set the task
// is canceled before it runs and finishes with ErrCanceled.
func (s *JoinSet[T]) Spawn(name string, fn func(t *Task) (T, error)) *Handle[T] {
	// Canceled before it is queued if the set is closed already; canceled
	// by Close otherwise (through ctx, and by CancelAll if it is running
	// by then).
	h := SpawnContext(s.ctx, s.drv, name, fn)
	e := &joinEntry[T]{set: s, h: h}
	s.mu.Lock()
	s.running[e] = struct{}{}
	s.mu.Unlock()
	// Registers e with the handle, or, if the task already finished (a
	// closed pool), moves it to done at once.
	if _, ok := h.Poll(&Context{waker: e}); ok {
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
	s.mu.Unlock()
	if w != nil {
		w.Wake()
	}
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
func (s *JoinSet[T]) Poll(cx *Context) (Joined[T], bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.done) > 0 {
		e := s.done[0]
		s.done[0] = nil
		s.done = s.done[1:]
		v, err, _ := e.h.Result()
		return Joined[T]{Task: e.h.Task(), Value: v, Err: err}, true
	}
	s.waiter = cx.waker
	return Joined[T]{}, false
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
	hs := make([]*Handle[T], 0, len(s.running))
	for e := range s.running {
		hs = append(hs, e.h)
	}
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
