package iopool

// The loop: the cycle that drives a pool. One cycle:
//
//  1. Under the lock: state → Running; take the wakers of expired timers;
//     take the ready queue and the ops freed by the last dispatch.
//  2. Drain io_uring completions (RunAgain cycles included).
//  3. Wake what was collected, outside the lock. Wakers that are tasks of
//     this pool go straight onto this cycle's run queue.
//  4. Release the closed ops that the last epoll_wait could still name.
//  5. Resume every queued task once, in wake order. A task woken while it
//     ran (Yield, a future ready at once) is queued again, after the tasks
//     woken meanwhile, without the lock; while only such tasks and io_uring
//     completions wait, and no task was queued from elsewhere, the loop
//     runs quick cycles of steps 2-5 alone, at most harvestEvery in a row.
//  6. Under the lock: if nobody woke the loop (still Running), record the
//     next timer deadline and move to Sleeping; unlock, flush the queued
//     io_uring SQEs in one io_uring_enter, and wait. Then Sleeping→Waking,
//     so that wakes arriving during dispatch skip the eventfd write, and
//     dispatch the events: the wake token drains the eventfd, the ring token
//     needs nothing, any other token is an op whose interest set gets them.

import (
	"fmt"
	"os"
	"runtime"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// loopOnly is the state of the goroutine driving the loop (the pool's
// loop goroutine, inside runLoop): no lock guards it, and no other
// goroutine may touch it, except current, which any goroutine may read.
type loopOnly struct {
	runq          []*Task              // tasks to resume in this cycle, in order
	wakers        WakerList            // wakers collected by this cycle, woken outside the lock
	freeing       []*fdRegistration    // registrations taken from toDelete after a dispatch, released next cycle
	current       atomic.Pointer[Task] // the task running now, for misuse checks; read by any goroutine
	idleCoros     []*coroutine         // coroutines whose task returned, for the next ones (sched.go)
	requeue       []*Task              // tasks woken while they ran, for the next cycle (Pool.resume)
	requeued      uint64               // wakes counted by requeue, not yet in stats
	lastHarvest   int64                // real ns since epoch of the last harvest
	passed        int64                // pool clock ns of a locked loop's last pass through the Go scheduler
	wokeGoroutine bool                 // a parked goroutine was woken since the last sleep
}

// runLoop drives the pool until done reports true (it returns true) or the
// pool is closing and has no task left (it returns false). The caller must
// be the only goroutine driving the loop.
func (p *Pool) runLoop(done func() bool) bool {
	defer func() {
		p.stopIdleCoroutines()
		// Waiters of tasks that finished in the last cycle: tasks go on
		// the ready queue for the next Run, goroutines run now.
		p.wakers.WakeAll()
	}()
	canceledAll := false
	busy := 0 // consecutive cycles that did not call epoll_wait
	quick := quickCycles{done: done}
	p.mu.Lock()
	for {
		p.state.reset()
		p.stats.cycles.Add(1)
		if p.timers.len() > 0 {
			if n := p.timers.wakeExpired(p.monoNow(), &p.wakers); n > 0 {
				p.stats.timersFired.Add(uint64(n))
			}
		}
		if p.tableReq != nil {
			p.serveTaskTableLocked() // tasktable.go
		}
		if p.closing && !canceledAll {
			canceledAll = true
			p.cancelAllLocked()
		}
		p.runq, p.ready = p.ready, p.runq[:0]
		if len(p.runq) > 0 {
			p.hasReady.Store(false)
		}
		// Tasks woken while they ran come after the others woken meanwhile:
		// a Yield lets them run first.
		p.runq = append(p.runq, p.requeue...)
		clear(p.requeue)
		p.requeue = p.requeue[:0]
		freeing := p.freeing
		p.mu.Unlock()

		quick.left = max(harvestEvery-1-busy, 0)
		completed := p.runCycle(freeing, &quick)
		p.freeing = freeing[:0]
		busy += quick.ran // quick cycles run by the run queue itself
		cycles := uint64(quick.ran)
		quick.ran = 0
		// Quick cycles: while the only work is tasks woken while they ran
		// (a Yield, a future ready at once), completions, or the waiters of
		// tasks that finished (collected by finish), and nobody
		// queued a task on the ready queue, the next cycle needs nothing
		// that the lock guards: timers, Close, and the sleep decision wait
		// for the full cycle that comes at least every harvestEvery cycles.
		for (len(p.requeue) > 0 || completed || p.wakers.Len() > 0) && busy+1 < harvestEvery && !p.hasReady.Load() && !done() {
			busy++
			cycles++
			p.runq, p.requeue = p.requeue, p.runq[:0]
			quick.left = max(harvestEvery-1-busy, 0)
			completed = p.runCycle(nil, &quick)
			busy += quick.ran
			cycles += uint64(quick.ran)
			quick.ran = 0
		}
		if cycles > 0 {
			p.stats.cycles.Add(cycles)
		}
		if p.requeued > 0 {
			p.stats.wakes.Add(p.requeued)
			p.requeued = 0
		}
		if p.current.Load() != nil {
			p.current.Store(nil)
		}
		p.mu.Lock()
		if p.closing {
			// Closing: every task is canceled and run until it returns.
			if canceledAll && p.live.n == 0 {
				p.mu.Unlock()
				return false
			}
		} else if done() {
			p.mu.Unlock()
			return true
		}
		var n int
		if !p.state.canSleep() || completed || len(p.requeue) > 0 || p.wakers.Len() > 0 {
			// Woken while running, or completions are waiting: another
			// cycle, lock held, no epoll_wait.
			if busy++; busy < harvestEvery {
				continue
			}
			// A loop that always finds work never reaches epoll_wait and
			// would starve fd events: look once without blocking, at most
			// once per harvestAfter (a system call costs about as much as
			// ten cycles of a yielding task).
			busy = 0
			if now := int64(time.Since(p.epoch)); now-p.lastHarvest < harvestAfter {
				continue
			} else {
				p.lastHarvest = now
			}
			p.state.harvest()
			p.mu.Unlock()
			n = p.epollWait(0)
		} else {
			deadline, hasDeadline := p.timers.nextDeadline()
			p.state.sleep(deadline, hasDeadline)
			p.mu.Unlock()

			n = p.wait(deadline, hasDeadline)

			p.mu.Lock()
			_ = p.state.wake() // Sleeping→Waking: wakers from now on skip the eventfd
			p.mu.Unlock()
		}
		busy = 0
		p.dispatch(n)

		p.mu.Lock()
		p.freeing = append(p.freeing, p.toDelete...)
		clear(p.toDelete)
		p.toDelete = p.toDelete[:0]
	}
}

// harvestEvery is how many consecutive cycles a loop that never sleeps runs
// before a full cycle (timers, Close) and, if harvestAfter has passed since
// the last one, a look at epoll without blocking: a yielding or
// io_uring-only task cannot delay fd events by more than this many cycles
// or harvestAfter, whichever is longer.
const harvestEvery = 32

// harvestAfter is the least time between two harvests of a busy loop, in
// nanoseconds.
const harvestAfter = 50_000

// runCycle is the part of a cycle that needs no lock: it drains io_uring
// completions, wakes what was collected, releases freeing, resumes the
// tasks of the run queue once each, in order (and the quick cycles that
// runQueue may run after them), and submits the io_uring SQEs they queued.
// It reports whether completions are already waiting.
func (p *Pool) runCycle(freeing []*fdRegistration, quick *quickCycles) (completed bool) {
	if u := p.uring.Load(); u != nil {
		u.drain(&p.wakers)
	}
	p.wakeCollected()
	for i, op := range freeing {
		op.release()
		freeing[i] = nil
	}
	p.runQueue(quick)
	if u := p.uring.Load(); u != nil {
		u.flush() // one io_uring_enter for what this cycle queued
		// Operations that completed inside that enter (NOPs, cached
		// reads) are drained by another cycle without an epoll_wait.
		completed = u.ring.CQReady()
	}
	return completed
}

// preciseWaitBelow is the timeout under which an unlocked loop lowers its
// thread's timer slack for the wait (see wait).
const preciseWaitBelow = 2_000_000 // ns

// wait blocks in epoll until an event or the deadline, and returns the
// number of events. An unlocked loop polls once without blocking first, so
// that a busy loop skips the hand-off below; EINTR is retried with the
// remaining time.
func (p *Pool) wait(deadline int64, hasDeadline bool) int {
	p.stats.sleeps.Add(1)
	if hasDeadline && deadline <= p.monoNow() {
		return p.epollWait(0)
	}
	if p.opts.lockOSThread {
		p.passScheduler()
	} else {
		// Look first without blocking: a busy loop finds events and goes
		// on without the hand-off. A locked loop has no hand-off to skip,
		// and the look would only add a syscall to every sleep.
		if n := p.epollWait(0); n > 0 {
			return n
		}
		// The loop is about to block. Let goroutines it made runnable start
		// first: a goroutine blocked in a syscall keeps its P for up to a
		// sysmon tick (20 µs to 10 ms), stranding them. Gosched costs about
		// 100 ns here (about 20 µs on a locked thread, where it is skipped).
		runtime.Gosched()
	}
	if p.clock.virtual {
		return p.waitVirtual(deadline, hasDeadline) // clock.go
	}
	if hasDeadline && !p.opts.lockOSThread && deadline-p.monoNow() < preciseWaitBelow {
		// A short timed sleep would end up to the thread's timer slack
		// (50 µs by default) late. The loop does not own this thread, so it
		// lowers the slack for this one wait only: two prctl calls, about a
		// microsecond, against tens of microseconds of lateness.
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		if old, err := unix.PrctlRetInt(unix.PR_GET_TIMERSLACK, 0, 0, 0, 0); err == nil && old > 1 {
			_ = unix.Prctl(unix.PR_SET_TIMERSLACK, 1, 0, 0, 0)
			defer unix.Prctl(unix.PR_SET_TIMERSLACK, uintptr(old), 0, 0, 0)
		}
	}
	for {
		timeout := int64(-1)
		if hasDeadline {
			timeout = max(deadline-p.monoNow(), 0)
		}
		if n := p.epollWait(timeout); n > 0 || timeout == 0 {
			return n
		}
		// Zero events before the deadline: EINTR, or a timeout that ended
		// a little early; wait for the rest.
		if !hasDeadline {
			continue
		}
		if deadline <= p.monoNow() {
			return 0
		}
	}
}

// schedulerPassEvery is how often, at least, a locked loop passes through
// the Go scheduler before it sleeps (see passScheduler): well under
// the 10 ms after which the runtime takes a P whose goroutine has not been
// rescheduled.
const schedulerPassEvery = 5_000_000 // ns

// passScheduler lets a locked loop through the Go scheduler
// (runtime.Gosched) before it sleeps, when it has woken a parked goroutine
// since its last sleep, and otherwise at least once per schedulerPassEvery.
// An unlocked loop passes at every sleep (see wait).
//
// Goroutines the loop woke (a NetConn's reader or writer, BlockOn,
// RecvWait: the pool's parkWakers) sit on the loop's P, which the
// locked thread cannot run them on. Left there while the loop sleeps, they
// wait for another thread to steal them, which the runtime may put off by
// its usleep(3) back-off, or for the runtime's monitor thread (sysmon,
// retake) to take the P out of the epoll_wait, and the loop's next wake-up
// then costs the hand-off back (exitsyscallNoP, stoplockedm, startlockedm).
// Gosched hands the P over at once. docs/locked-loop.md has the analysis
// and the measurements. Only parkWakers count: the poll layer's wakers run on the loop itself,
// and a pass per sleep (a hand-off to another thread and back) would
// double the CPU of a poll-layer request at one connection. A user waker
// that readies a goroutine is covered by the periodic pass only.
//
// A loop that woke no goroutine still never passes through the scheduler
// on its own (tasks are coroutine switches, waits are system calls), and
// after 10 ms on one scheduling tick sysmon takes its P by force, the same
// hand-off, and stays at its fastest tick because it keeps finding a P to
// take (docs/locked-loop.md counts its wake-ups). A pass once per
// schedulerPassEvery costs the hand-off half as often, at a moment the loop
// was going to sleep anyway, and sysmon backs off to sleeping 10 ms.
func (p *Pool) passScheduler() {
	if p.wokeGoroutine || p.monoNow()-p.passed >= schedulerPassEvery {
		runtime.Gosched()
		p.passed = p.monoNow()
	}
	p.wokeGoroutine = false
}

// epollWait waits up to timeoutNs (negative: forever) and returns the number
// of events, 0 on timeout or EINTR. EINTR is common: the Go runtime preempts
// goroutines with signals.
func (p *Pool) epollWait(timeoutNs int64) int {
	n, err := p.be.wait(timeoutNs)
	if err == nil {
		return n
	}
	if err != unix.EINTR {
		panic(fmt.Sprintf("iopool: epoll_wait on epoll fd %d failed: %v", p.be.epfd, err))
	}
	return 0
}

// dispatch hands each of the n events the last wait fetched to its
// registration.
func (p *Pool) dispatch(n int) {
	for i := range n {
		switch token, events := p.be.event(i); token {
		case tokenWake:
			p.be.drain()
		case tokenRing:
			// Completions are drained at the top of every cycle.
		default:
			op := (*fdRegistration)(pointerOf(token))
			op.deliver(events, &p.wakers)
			p.stats.events.Add(1)
		}
	}
}

// goLoop starts a pool's loop goroutine. A locked loop is kept off the
// process's main thread: the runtime never ends the main thread, so a
// pinned or otherwise changed main thread would outlive its pool (the
// affinity of the whole process is read from it), and a goroutine started
// from it would inherit nothing of ours either way.
func goLoop(locked bool, loop func()) {
	if !locked {
		go loop()
		return
	}
	go func() {
		runtime.LockOSThread()
		if unix.Gettid() != os.Getpid() {
			loop()
			return
		}
		// On the main thread. While this goroutine holds it, a new locked
		// goroutine lands on another thread; then give the main thread back.
		onThread := make(chan struct{})
		go func() {
			runtime.LockOSThread()
			close(onThread)
			loop()
		}()
		<-onThread
		runtime.UnlockOSThread()
	}()
}
