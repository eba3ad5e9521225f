//go:build linux

package iopool

import (
	"context"
)

// canceledError is the error of a task canceled with a cause: SpawnContext
// cancels a task with its context's cause. errors.Is matches ErrCanceled
// and context.Canceled, as for any canceled task, and the cause itself
// (context.DeadlineExceeded for a context that hit its deadline, or the
// error given to a context.CancelCauseFunc).
type canceledError struct {
	cause error
}

func (e *canceledError) Error() string { return "iopool: task canceled: " + e.cause.Error() }

func (e *canceledError) Is(target error) bool {
	return target == ErrCanceled || target == context.Canceled
}

func (e *canceledError) Unwrap() error { return e.cause }

// canceledErr is what the awaits of a canceled task return: ErrCanceled,
// or the error carrying the cause the task was canceled with.
func (t *Task) canceledErr() error {
	if e := t.ext.Load(); e != nil {
		if ce := e.cause.Load(); ce != nil {
			return ce
		}
	}
	return ErrCanceled
}

// cancelWithCause cancels t, recording cause (when it is not nil and not
// context.Canceled itself) for its awaits to return. The first cancel
// wins.
func (t *Task) cancelWithCause(cause error) {
	t.recordCause(cause)
	t.Cancel()
}

func (t *Task) recordCause(cause error) {
	if cause != nil && cause != context.Canceled && !t.canceled.Load() {
		t.extra().cause.CompareAndSwap(nil, &canceledError{cause: cause})
	}
}

// SpawnContext starts fn as a new task, like Spawn, that is canceled when
// ctx is done, with the cause surviving: the task's awaits then return an
// error for which errors.Is(err, ErrCanceled) holds and so does
// errors.Is(err, context.Cause(ctx)) (context.DeadlineExceeded for a
// context that hit its deadline). A ctx already done cancels the task
// before it runs. The task's Context is derived from ctx, so it carries
// ctx's values. A nil ctx panics. On a virtual pool the deadline is also
// kept on the pool's clock (see WithVirtualClock).
func SpawnContext[T any](drv *Driver, ctx context.Context, name string, fn func(t *Task) (T, error)) *Handle[T] {
	if ctx == nil {
		panic("iopool: SpawnContext called with a nil context.Context (use context.Background())")
	}
	if fn == nil {
		panic("iopool: SpawnContext called with a nil function")
	}
	h := &Handle[T]{fn: fn}
	task := &h.task
	task.init(drv.p, name, h)
	task.extra().parent = ctx
	if ctx.Err() != nil {
		// Done already: canceled before it is queued, so it never runs.
		task.recordCause(context.Cause(ctx))
		task.canceled.Store(true)
	}
	drv.p.enqueueNew(task)
	// Tied to ctx only once queued: a cancel that wakes the task before it
	// has joined the pool's live list would let it finish there first, and
	// the list would then keep a finished task that Close waits for forever.
	if ctx.Done() != nil && !task.canceled.Load() {
		stop := context.AfterFunc(ctx, func() { task.cancelWithCause(context.Cause(ctx)) })
		if testHookAfterFuncRegistered != nil {
			testHookAfterFuncRegistered()
		}
		// A virtual pool's clock enforces the deadline too (clock.go).
		timer := drv.p.cancelAtContextDeadline(ctx, task)
		// Unregistered from ctx when the task finishes, so that a
		// long-lived ctx does not keep every task it ever started.
		s := &afterFuncStopper{stop: stop, timer: timer}
		if h.watch(s) {
			s.Wake()
		}
	}
	return h
}

// testHookAfterFuncRegistered, if set by a test, runs right after
// SpawnContext has tied the task to its context.
var testHookAfterFuncRegistered func()

// afterFuncStopper unregisters a context.AfterFunc when woken (a pointer
// type, so that wakers compare by identity).
type afterFuncStopper struct {
	stop  func() bool
	timer *Timer // a virtual pool's deadline timer, or nil
}

func (s *afterFuncStopper) keepsNoResult() {}

func (s *afterFuncStopper) Wake() {
	s.stop()
	s.timer.Stop()
}
