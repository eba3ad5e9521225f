//go:build linux

package iopool

import (
	"context"
	"fmt"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"
)

// Task is a coroutine running on a pool. Its function is ordinary Go code
// that calls blocking-looking methods (t.Sleep, sock.Read, h.Join); each of
// them polls a future and, while it is pending, switches back to the loop,
// which resumes the task when the future's waker fires. All tasks of a pool
// run one at a time on the loop's goroutine.
//
// A *Task may be used only by its own task function, while it runs: using it
// from another goroutine or another task panics.
//
// # Thread locking
//
// A task must not be suspended while it holds runtime.LockOSThread (or has
// undone, with runtime.UnlockOSThread, the lock of a WithLockOSThread pool):
// every await, Sleep, Yield, Join, Read or Write that has to wait switches
// coroutines, and the Go runtime then ends the whole process with "fatal
// error: coro: OS thread locking must match locking at coroutine creation",
// which cannot be recovered. The runtime gives no way to see a goroutine's
// lock state that is cheap enough to check at every await, so this is not
// detected. Locking and unlocking between two awaits is fine (a syscall that
// must run on one thread); for thread-bound state that must outlast an
// await, create the pool WithLockOSThread, which runs every task on the
// pool's own locked thread.
//
// Task states (fields guarded as noted):
//
//	created  --first resume-->  running  --await pending-->  suspended
//	suspended --waker fires--> queued --loop resumes--> running
//	running  --function returns, panics or calls runtime.Goexit-->  finished
//	any      --Cancel-->  canceled flag set; every await returns ErrCanceled
//	created + canceled: finishes with ErrCanceled without running
type Task struct {
	pool     *Pool
	runner   taskRunner
	cx       PollContext // waker = the task itself
	co       *coroutine  // loop only: the coroutine running it, from its first run to its end
	name     string
	wake     atomic.Uint64 // wakes since it was last idle: 0 idle, else queued or running (Wake)
	canceled atomic.Bool   // Cancel was called
	finished bool          // loop only: the function returned
	prev     *Task         // pool.mu: live list
	nextLive *Task         // pool.mu: live list
	_        [0]func()     // not comparable by value

	ext atomic.Pointer[taskExt] // what few tasks use, allocated on first use (extra)
}

// taskOutcome is how a task's function ended: its error, or its panic. The
// coroutine writes it (coroutine.body) as the function ends, and the loop, to
// which the coroutine then switches, takes it at once (taskEnded): one per
// pool, not one per task, since one task runs at a time.
type taskOutcome struct {
	err      error
	panicked *PanicError
}

// taskExt holds the parts of a Task that most tasks never use, so that an
// idle task costs little: its timer, its io_uring result, its context, and
// its stall bookkeeping.
type taskExt struct {
	cause    atomic.Pointer[canceledError] // set before canceled when canceled with a cause
	sleep    timerFuture                   // task only: t.Sleep's timer
	uringRes opResult                      // loop only: the result of the task's io_uring operation in flight (uring_ops.go)
	parent   context.Context               // SpawnContext's ctx, or nil; set before the task starts
	stall    *stallState                   // loop/task: where it suspended; only WithStallReport
	site     *spawnSite                    // WithTaskTracking: where it was spawned; set before the task is queued
	ctxMu    sync.Mutex                    // guards ctx and cancel
	ctx      context.Context               // created by Context()
	cancel   context.CancelFunc            // cancels ctx
}

// extra returns t's taskExt, allocating it on first use. Safe from any
// goroutine: concurrent first uses agree on one.
func (t *Task) extra() *taskExt {
	if e := t.ext.Load(); e != nil {
		return e
	}
	e := new(taskExt)
	if t.ext.CompareAndSwap(nil, e) {
		return e
	}
	return t.ext.Load()
}

// taskRunner is what a task runs and whom it tells when it finishes.
type taskRunner interface {
	run(t *Task) error
	// complete is told the result once. wakers, when not nil, is the
	// loop's list: the waiters are added to it, and woken in the loop's
	// next cycle, without the pool's lock for its own tasks. It reports
	// whether the result is left for nobody in particular (no Join or Wait
	// was waiting for it), for the task table's finished tasks.
	complete(err error, panicked *PanicError, wakers *WakerList) (unclaimed bool)
	// unjoined reports whether the task has finished and nobody has taken
	// its result yet.
	unjoined() bool
}

// PanicError is the error of a task whose function panicked: Join and Wait
// return it, and Run re-panics with it for the root task.
type PanicError struct {
	Task  string // the task's name
	Value any    // the value passed to panic
	Stack []byte // the task's stack at the panic
}

func (e *PanicError) Error() string {
	return fmt.Sprintf("iopool: task %q panicked: %v\n\n%s", e.Task, e.Value, e.Stack)
}

// Unwrap returns the panic value if it is an error.
func (e *PanicError) Unwrap() error {
	err, _ := e.Value.(error)
	return err
}

func newTask(p *Pool, name string, r taskRunner) *Task {
	t := new(Task)
	t.init(p, name, r)
	return t
}

func (t *Task) init(p *Pool, name string, r taskRunner) {
	t.pool, t.name, t.runner = p, name, r
	t.cx.waker = t
	if p.opts.trackTasks {
		t.recordSpawnSite() // tasktable.go
	}
}

// Name returns the name the task was spawned with.
func (t *Task) Name() string { return t.name }

// Driver returns the driver of the task's pool.
func (t *Task) Driver() *Driver { return &t.pool.drv }

// Wake queues the task to run. It is the task's Waker and may be called from
// any goroutine; a task woken several times before it runs is queued once.
// A task woken while it runs (Yield, a future that wakes its poller at once)
// runs again in a later cycle: the loop sees the wake when the task
// suspends (runBatch) and queues it again without the pool's lock.
func (t *Task) Wake() {
	if t.wake.Add(1) == 1 { // it was idle: queue it
		t.pool.stats.wakes.Add(1)
		t.pool.mu.Lock()
		t.pool.pushReadyAndUnlock(t)
	}
}

// The wake word of a task (Task.wake) counts its wakes since it was last
// idle; it is 0 when the task is idle (suspended, not queued), and not 0
// while it is on a queue of the loop or running. One atomic add per wake:
//
//	transition         by                       when
//	0 → 1              Wake, markQueued         the task was idle: the caller queues it
//	n → n+1            Wake                     queued or running already: nothing else to do
//	n → 0              the loop, after a run    no wake during the run (CAS from the value before it)
//	n, moved → kept    the loop, after a run    woken while it ran: queued again, without the lock

// markQueued counts a wake from the loop and reports whether the task was
// idle: the caller, the loop, must then queue it.
func (t *Task) markQueued() bool { return t.wake.Add(1) == 1 }

// coroutine is a task coroutine: a goroutine that iter.Pull switches to and
// from. It runs one task at a time; after a task returns, the pool may keep
// it idle and run another task on it (sched.go), so that a spawn usually
// needs no new goroutine and none of iter.Pull's allocations. Loop only,
// except yield, which its running task calls to suspend.
type coroutine struct {
	next  func() (bool, bool) // resumes it; true once its task returned
	stop  func()              // ends it; never while a task runs on it
	yield func(bool) bool     // suspends it: true when its task has returned
	task  *Task               // the task it runs, set by the loop before that task's first run

	labelName string // coroutine only

	// For the task table (tasktable.go), of the task it runs; loop only.
	awaiting any    // the future of the task's await in progress
	polls    uint32 // times the task was resumed

	labeled bool // its goroutine carries the pprof labels of a task named labelName
	watched bool // WithStallReport: its task records where it suspends (set at creation)
}

// body returns the coroutine's function: it runs its task, and then the
// next one the loop gives it, until the loop stops it, and records how
// each task's function ended, whichever of the ways a Go function can end.
//
//   - It returned: the pool's ended.err is its error.
//   - It panicked: the panic is recovered into ended.panicked.
//   - It called runtime.Goexit (a test's t.FailNow, require.*): ended.err says
//     so. Nothing can stop a Goexit, and iter.Pull would re-raise it on
//     the loop goroutine, ending the loop.
//
// So unless the function returned, the coroutine ends by panicking with
// taskEndEscape (endedWithoutReturn): iter.Pull recovers that panic in its
// own deferred call and re-raises it from next, on the loop goroutine,
// where the loop recovers it (runBatch; runTask for a watched task). A
// Goexit under way (the function's own, or one below a panic that a
// deferred call raised during it, which body cannot tell apart from a
// plain panic) then completes on this coroutine goroutine alone: a panic
// recovered during a Goexit does not cancel the Goexit. The loop finishes
// the task like any other, and the coroutine is not reused.
//
// Every frame here lies under every task's code, for as long as the task
// lives, and a task's goroutine keeps the 2 KiB stack it starts with only
// while its deepest call fits (see TestRegressionTaskEchoFitsTheSmallestStack):
// so the function is a literal (the method value c.body would add its
// wrapper's frame), and the recording defer is the coroutine's, not one
// per task in a frame of its own.
func (c *coroutine) body() func(yield func(bool) bool) {
	return func(yield func(bool) bool) {
		c.yield = yield
		if c.watched {
			// WithStallReport: where the task suspends is where it resumes.
			c.yield = func(returned bool) bool {
				c.task.ext.Load().stall.recordSuspend()
				return yield(returned)
			}
		}
		var t *Task
		returned := true
		defer func() {
			if !returned {
				t.endedWithoutReturn(recover())
			}
		}()
		for {
			t = c.task
			if !c.labeled || c.labelName != t.name {
				// A task named like the previous one here has its labels
				// already (pprof.Do restores them when it returns).
				t.setTaskLabels()
				c.labeled, c.labelName = true, t.name
			}
			returned = false
			t.pool.ended.err = t.runner.run(t)
			returned = true
			if !yield(true) {
				return
			}
		}
	}
}

// endedWithoutReturn records how t's function ended when it did not
// return: a panic (v, recovered) or runtime.Goexit (v nil). It panics with
// taskEndEscape (see body).
func (t *Task) endedWithoutReturn(v any) {
	if v != nil {
		t.pool.ended.panicked = &PanicError{Task: t.name, Value: v, Stack: debug.Stack()}
	} else {
		t.pool.ended.err = fmt.Errorf("iopool: task %q ended: %w (t.FailNow and require.* in a test do that)", t.name, ErrGoexit)
	}
	panic(taskEndEscape{})
}

// taskEndEscape carries the end of a task that did not return (a panic or
// runtime.Goexit) out of its coroutine as a panic that the loop recovers
// (see coroutine.body).
type taskEndEscape struct{}

// runOutcome is how a run of a task's coroutine ended.
type runOutcome uint8

const (
	runSuspended runOutcome = iota // the task awaits; its coroutine holds it
	runReturned                    // the task returned; its coroutine may run another
	runEscaped                     // the task panicked or called runtime.Goexit; its coroutine is over
)

// runTask resumes c until its task suspends or ends, for resumeWatched,
// which measures the run around it (runBatch resumes the other tasks
// itself). A task that panicked or called runtime.Goexit arrives here as
// taskEndEscape, which is recovered; any other panic from next is a bug in
// the scheduler and is re-raised.
func runTask(c *coroutine) (out runOutcome) {
	defer func() {
		if v := recover(); v != nil {
			if _, ok := v.(taskEndEscape); !ok {
				panic(v)
			}
			out = runEscaped
		}
	}()
	if returned, _ := c.next(); returned {
		return runReturned
	}
	return runSuspended
}

// suspend switches from the task back to the loop. It is inlined into
// every await: the one call it makes is the switch.
func (t *Task) suspend() {
	t.co.yield(false) // a watched coroutine's yield records where (body)
}

// checkCurrent panics unless t is the task running now. Inlined; the panic
// is out of line.
func (t *Task) checkCurrent() {
	if t.pool.current.Load() != t {
		t.usedOutside()
	}
}

// usedOutside is checkCurrent's panic.
//
//go:noinline
func (t *Task) usedOutside() {
	panic(fmt.Sprintf("iopool: *Task %q used outside its own task function (from another goroutine, another task, or after it returned)", t.name))
}

// Cancel cancels the task: its current and every later await returns
// ErrCanceled, and its Context is canceled. A task that has not started yet
// finishes with ErrCanceled without running. Safe from any goroutine.
func (t *Task) Cancel() {
	if t.canceled.Swap(true) {
		return
	}
	t.cancelContext()
	t.Wake()
}

// cancelContext cancels the task's context.Context, if one was created.
func (t *Task) cancelContext() {
	e := t.ext.Load()
	if e == nil {
		return // Context, if it runs now, sees canceled or finished
	}
	e.ctxMu.Lock()
	if e.cancel != nil {
		e.cancel()
	}
	e.ctxMu.Unlock()
}

// Canceled reports whether the task has been canceled.
func (t *Task) Canceled() bool { return t.canceled.Load() }

// Context returns a context.Context that is canceled when the task is
// canceled or finishes, for passing to APIs that take one. For a task from
// SpawnContext it is derived from the context given there. It carries the
// task's pprof labels, so pprof.Do(t.Context(), ...) adds to them.
func (t *Task) Context() context.Context {
	e := t.extra()
	e.ctxMu.Lock()
	defer e.ctxMu.Unlock()
	if e.ctx == nil {
		parent := e.parent
		if parent == nil {
			parent = context.Background()
		}
		e.ctx, e.cancel = context.WithCancel(t.withLabels(parent))
		if t.canceled.Load() || t.finished {
			e.cancel()
		}
	}
	return e.ctx
}

// Await polls fut with the task's waker until it is ready and returns its
// value and error, as Poll returned them. While fut is pending the task is
// suspended and the loop runs other work. If the task is canceled, Await
// returns ErrCanceled at once, without polling.
func Await[T any](t *Task, fut Future[T]) (T, error) {
	t.checkCurrent()
	for {
		if t.canceled.Load() {
			var zero T
			return zero, t.canceledErr()
		}
		if v, err := fut.Poll(&t.cx); !isPending(err) {
			if err != nil {
				err = checkPending(err)
			}
			return v, err
		}
		t.co.awaiting = fut // for Pool.Tasks: what it waits on
		t.suspend()
	}
}

// Yield lets the other ready tasks and the loop run, then continues. It
// returns ErrCanceled if the task is canceled.
func (t *Task) Yield() error {
	t.checkCurrent()
	if t.canceled.Load() {
		return t.canceledErr()
	}
	t.Wake()
	t.suspend()
	if t.canceled.Load() {
		return t.canceledErr()
	}
	return nil
}

// Sleep suspends the task for d (a zero or negative d returns at once). It
// returns ErrCanceled if the task is canceled first.
func (t *Task) Sleep(d time.Duration) error {
	return t.sleepUntil(t.pool.monoAfter(d)) // on the pool's clock (clock.go)
}

// SleepUntil suspends the task until the deadline passes on the pool's
// clock (see WithVirtualClock for a virtual one).
func (t *Task) SleepUntil(deadline time.Time) error {
	return t.sleepUntil(t.pool.mono(deadline)) // once, from its monotonic reading
}

// sleepUntil is SleepUntil with the deadline on the pool's clock.
func (t *Task) sleepUntil(deadline int64) error {
	f := &t.extra().sleep
	if f.timer == nil {
		f.timer = (&t.pool.drv).NewTimer()
	}
	f.deadline = deadline
	_, err := Await[time.Time](t, f)
	if err != nil {
		f.timer.Stop()
	}
	return err
}
