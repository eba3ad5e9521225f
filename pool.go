//go:build linux

package iopool

import (
	"errors"
	"fmt"
	"math"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// Pool is a single-threaded executor: one event loop that runs tasks,
// delivers fd readiness, fires timers and completes io_uring operations, all
// on the pool's loop goroutine, which runs while a Run is active or from
// Start until Close. Create one with New; it is safe to use from any
// goroutine through its Driver.
type Pool struct {
	be    epollBackend // the epoll fd and the wake eventfd (backend_epoll.go)
	opts  options      // set by New, read-only afterwards
	epoch time.Time    // origin of the pool's monotonic nanosecond clock; set by New
	clock poolClock    // a virtual clock's state (clock.go)
	drv   Driver

	// mu guards the fields of scheduler and lifecycle marked "mu".
	mu sync.Mutex
	scheduler
	lifecycle
	loopOnly               // loop.go
	uringSlot              // uring.go
	stats     poolStats    // observe.go
	obs       observeState // observe.go
}

// scheduler is what the loop and the goroutines that wake it share: the
// sleep/wake state, the armed timers, the queue of woken tasks and the
// registrations. Every field is guarded by Pool.mu, written by any goroutine
// that holds it (a waker, Spawn, NewFdReady, FdReady.Close, the loop).
type scheduler struct {
	state    poolState         // mu: the loop's sleep/wake state
	timers   timerQueue        // mu: armed timers
	ready    []*Task           // mu: tasks woken since the loop last took them, in wake order
	live     taskList          // mu: tasks spawned and not finished
	unjoined unjoinedList      // mu: finished tasks whose result nobody has taken (tasktable.go)
	toDelete []*fdRegistration // mu: registrations closed while the kernel batch may name them
	fds      fdTable           // mu: registered ops, keeping them reachable
	tableReq *taskTableRequest // mu: a Tasks call waiting for the loop (tasktable.go)
	hasReady atomic.Bool       // ready is not empty; set under mu, read by the loop's quick cycles without it
}

// lifecycle is the pool's life from New to Close: who drives the loop,
// whether Close has begun or finished, and the loop goroutine's work
// channel. The flags are guarded by Pool.mu; the channels are made once and
// closed by their one owner, as noted on each.
type lifecycle struct {
	running  bool                         // mu: a Run, Start or Close's drain is driving the loop; set with setRunningLocked
	started  bool                         // mu: Start was called; the loop runs until Close
	closing  bool                         // mu: Close was called; tasks are being canceled
	closed   bool                         // mu: resources released
	released atomic.Bool                  // closed, readable without mu: registered fds refuse syscalls
	runState atomic.Pointer[loopRunState] // running, readable without mu, and its change (start.go)

	runExit   chan struct{} // mu: made by Run, closed when the active Run returns
	loopStart sync.Once     // starts the loop goroutine
	loopWork  chan func()   // work for the loop goroutine; made by loopStart, closed by Close
	loopExit  chan struct{} // closed by the loop goroutine when it exits
	closeEnd  chan struct{} // made by New, closed when Close has finished
	onClose   []*closeHook  // mu: run by Close after the tasks end, before the fds are released
	goPolls   goPollSet     // its own lock: sockets served through the runtime's poller (gopoll.go)
}

// Driver spawns tasks and creates timers, fd registrations and io_uring
// operations on its pool. It is safe to use from any goroutine.
type Driver struct {
	p *Pool
}

// New creates a pool: an epoll instance and its wake eventfd. Release it with
// Close.
func New(opts ...Option) (*Pool, error) {
	p := &Pool{epoch: time.Now()}
	p.closeEnd = make(chan struct{})
	p.opts = options{eventBuffer: defaultEventBuffer, uringEntries: defaultUringEntries, cpu: -1,
		notRunningBound: defaultNotRunningBound}
	p.runState.Store(&loopRunState{changed: make(chan struct{})})
	for _, o := range opts {
		if o == nil {
			return nil, errors.New("iopool: New: nil Option")
		}
		if err := o.applyToPool(&p.opts); err != nil {
			return nil, err
		}
	}
	if p.opts.virtualClock {
		p.epoch, p.clock.virtual = virtualEpoch, true
	}
	p.drv.p = p
	if err := p.be.open(p.opts.faults, p.opts.eventBuffer); err != nil {
		return nil, wrapError(err, "New")
	}
	if p.opts.cpu >= 0 {
		if err := p.pinLoopThread(); err != nil {
			p.Close()
			return nil, err
		}
	}
	return p, nil
}

// Driver returns the pool's driver.
func (p *Pool) Driver() *Driver { return &p.drv }

// Pool returns the driver's pool.
func (d *Driver) Pool() *Pool { return d.p }

// Run runs root as a task and drives the pool until root returns, then
// returns root's error. The loop runs on the pool's own goroutine (locked to
// its own OS thread with WithLockOSThread) while the caller waits. Run does
// not wait for the other tasks: those still running when root returns stop
// where they are and go on at the next Run or Start, or are canceled by
// Close; Join them (or drain a JoinSet) before root returns to have them
// finish. A panic in root is re-raised by Run as a *PanicError; if root
// calls runtime.Goexit (t.FailNow, require.* in a test), Run returns an
// error wrapping ErrGoexit and the pool stays usable.
//
// Run returns ErrNilTask for a nil root, ErrClosed on a closed pool (or when
// Close ends the run), and an error wrapping ErrRunning while another Run is
// active or after Start.
//
// Run may be called from a goroutine locked to its thread; the tasks still
// run on the pool's own goroutine. Inside root and every other task,
// runtime.LockOSThread must be undone before the next await, or the runtime
// kills the process (see Task and WithLockOSThread).
func (p *Pool) Run(root func(t *Task) error) error {
	if root == nil {
		return ErrNilTask
	}
	p.mu.Lock()
	switch {
	case p.closing || p.closed:
		p.mu.Unlock()
		return ErrClosed
	case p.started:
		p.mu.Unlock()
		return fmt.Errorf("%w: Pool.Run on a started pool, whose loop runs until Close; add tasks with Spawn(p.Driver(), ...)", ErrRunning)
	case p.running:
		p.mu.Unlock()
		return ErrRunning
	}
	p.setRunningLocked(true)
	p.runExit = make(chan struct{})
	p.mu.Unlock()

	r := &rootRunner{fn: root}
	t := newTask(p, "root", r)
	p.enqueueNew(t)

	var finished bool
	p.onLoop(func() { finished = p.runLoop(func() bool { return t.finished }) })
	p.endRun()
	if !finished {
		return ErrClosed
	}
	if r.panicked != nil {
		panic(r.panicked)
	}
	return r.err
}

func (p *Pool) endRun() {
	p.mu.Lock()
	p.setRunningLocked(false)
	close(p.runExit)
	p.mu.Unlock()
}

// rootRunner runs the function given to Run.
type rootRunner struct {
	fn       func(t *Task) error
	err      error
	panicked *PanicError
}

func (r *rootRunner) run(t *Task) error { return r.fn(t) }

func (r *rootRunner) complete(err error, pe *PanicError, _ *WakerList) bool {
	r.err, r.panicked = err, pe
	return false // Run takes it
}

func (r *rootRunner) unjoined() bool { return false }

// Close cancels every task, lets them finish, and releases the pool's fds and
// its io_uring. Called while Run is active (from another goroutine), it wakes
// the loop, which cancels the tasks, runs them to completion and makes Run
// return ErrClosed; Close returns after that. A second Close is a no-op.
// Called from one of the pool's own tasks, Close panics (it would wait for
// that task forever); return from the root task instead. A task of another
// pool may close this one: it waits, and its own pool with it, until this
// pool's tasks have finished.
func (p *Pool) Close() error {
	if callerPool() == p {
		// It would wait for its own task to finish (or, during Close's
		// drain, for the drain it is part of).
		panic("iopool: Pool.Close called from one of the pool's own tasks; return from the root task instead")
	}
	p.mu.Lock()
	if p.closing {
		p.mu.Unlock()
		<-p.closeEnd
		return nil
	}
	p.closing = true
	if p.running {
		exit := p.runExit
		p.unlockAndSignal(p.state.wake())
		<-exit
	} else {
		p.setRunningLocked(true)
		p.mu.Unlock()
		p.onLoop(func() { p.runLoop(func() bool { return false }) })
		p.mu.Lock()
		p.setRunningLocked(false)
		p.mu.Unlock()
	}
	p.mu.Lock()
	hooks := p.onClose
	p.onClose = nil
	p.mu.Unlock()
	for _, h := range hooks {
		h.fn()
	}
	err := p.release()
	if p.loopWork != nil {
		close(p.loopWork)
		<-p.loopExit
	}
	close(p.closeEnd)
	return err
}

// onLoop runs fn on the pool's loop goroutine and waits for it. The loop
// goroutine is the pool's own, created on first use and, with
// WithLockOSThread, locked to its OS thread for its whole life. Every task
// coroutine is therefore created and resumed on one goroutine in one lock
// state, as the runtime requires, whichever goroutine calls Run or Close.
func (p *Pool) onLoop(fn func()) {
	done := make(chan struct{})
	p.onLoopAsync(func() {
		defer close(done)
		fn()
	})
	<-done
}

// onLoopAsync hands fn to the pool's loop goroutine (see onLoop) and returns
// once the goroutine has taken it, without waiting for it to finish.
func (p *Pool) onLoopAsync(fn func()) {
	p.loopStart.Do(func() {
		p.loopWork = make(chan func())
		p.loopExit = make(chan struct{})
		goLoop(p.opts.lockOSThread, p.loopGoroutine)
	})
	p.loopWork <- fn
}

func (p *Pool) loopGoroutine() {
	defer close(p.loopExit)
	defer registerLoopGoroutine(p)() // tasks are the coroutines it creates
	p.setLoopLabels()
	if p.opts.lockOSThread {
		// Never unlocked: the thread is the pool's and exits with this
		// goroutine, taking its thread-bound state (timer slack, setns,
		// affinity set by tasks) with it.
		runtime.LockOSThread()
		// A thread's timed sleeps may end up to its timer slack late (50 µs
		// by default); this thread is ours, so ask for 1 ns.
		_ = unix.Prctl(unix.PR_SET_TIMERSLACK, 1, 0, 0, 0)
	}
	for fn := range p.loopWork {
		fn()
	}
}

// release frees the kernel resources once no task is left.
func (p *Pool) release() error {
	var wakers WakerList
	p.mu.Lock()
	p.closed = true
	p.released.Store(true)
	ops := p.fds.takeAll()
	// Goroutines blocked on a timer (BlockOn) wake up and find the pool
	// closed; a timer polled from now on is ready at once (see Timer.Err).
	p.timers.wakeExpired(math.MaxInt64, &wakers)
	p.mu.Unlock()
	for _, op := range ops {
		// Goroutines parked on the registration (NetConn, BlockOn of a
		// Wait) wake up and see the pool closed.
		op.deliver(PollErr|PollHup, &wakers)
		op.release()
	}
	wakers.WakeAll()
	p.goPolls.wakeAll() // goroutines waiting in the runtime's poller
	var errs []error
	if u := p.uringForClose(); u != nil {
		// On the loop goroutine: a single-issuer ring takes no calls from
		// other threads.
		p.onLoop(func() { errs = append(errs, u.close()) })
	}
	errs = append(errs, p.be.close())
	return errors.Join(errs...)
}

// isClosing reports whether Close was called.
func (p *Pool) isClosing() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.closing || p.closed
}

// signal writes the wake eventfd. Callers write it only on the state
// machine's Sleeping→Waking transition, so a sleep sees at most one write.
// After Close the backend writes nothing: nobody is left to wake, and the
// eventfd's number may name another file by then.
func (p *Pool) signal() {
	if p.be.wake() == nil {
		p.stats.eventfdWrites.Add(1)
	}
}

// unlockAndSignal releases p.mu and then, if signal is set, writes the wake
// eventfd. It is the one way to finish "decide under the lock, signal after
// it": signal is the result of a state machine transition taken under p.mu
// (wake, wakeForTimer), and the write is made outside the lock so that the
// loop, woken at once, does not contend for it. A Close that lands between
// the unlock and the write is safe: the backend's guard turns the write
// into nothing once Close has begun, and Close waits for a write in flight
// before closing the eventfd, so the write never reaches a reused number.
func (p *Pool) unlockAndSignal(signal bool) {
	p.mu.Unlock()
	if signal {
		p.signal()
	}
}

// wake asks the loop to run another cycle.
func (p *Pool) wake() {
	p.mu.Lock()
	p.unlockAndSignal(p.state.wake())
}
