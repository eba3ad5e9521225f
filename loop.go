//go:build linux

package iopool

// The loop: the cycle that drives a pool. runLoop calls one function per
// phase, in this order:
//
//  1. Under the lock: state → Running; fireTimersLocked collects the wakers
//     of expired timers; cancelOnCloseLocked cancels every task, once, when
//     Close has begun; takeRunQueueLocked takes the ready queue and the
//     registrations the last dispatch left to free.
//  2. runCycles, without the lock: runCycle, whose drainCompletions collects
//     the wakers of io_uring completions (RunAgain cycles included);
//     wakeCollected wakes what was collected, tasks of this pool straight
//     onto this cycle's run queue; releaseFreed releases the closed
//     registrations the last epoll_wait could still name; runQueue resumes
//     every queued task once, in wake order; flushSubmissions submits the
//     SQEs they queued in one io_uring_enter.
//  3. Still in runCycles: a task woken while it ran (Yield, a future ready
//     at once) is queued again, after the tasks woken meanwhile, without the
//     lock; while only such tasks and io_uring completions wait, and no task
//     was queued from elsewhere, quick cycles of step 2 run alone, at most
//     harvestEvery in a row.
//  4. Under the lock: stopLocked (done, or closing with no task left); then
//     sleepOrHarvestLocked: if nobody woke the loop (still Running) and no
//     work waits, record the next timer deadline, move to Sleeping, unlock
//     and wait (loop_sleep.go), then Sleeping→Waking, so that wakes arriving
//     during dispatch skip the eventfd write. A busy loop runs the next cycle
//     at once instead, and looks at epoll without blocking now and then
//     (harvestLocked).
//  5. dispatch: the wake token drains the eventfd, the ring token needs
//     nothing, any other token is a registration whose interest set gets
//     the events.
//  6. deferFreesLocked: the registrations closed while the kernel's batch
//     could name them go to the next cycle's releaseFreed.

import (
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
	requeue       []*Task              // tasks woken while they ran, for the next cycle (runBatch, sched.go)
	requeued      uint64               // wakes counted by requeue, not yet in stats
	finished      uint64               // tasks finished (Pool.finish), for quickCycles
	ended         taskOutcome          // how the function of the task that just ended did (coroutine.body, taskEnded)
	lastHarvest   int64                // real ns since epoch of the last harvest
	passed        int64                // pool clock ns of a locked loop's last pass through the Go scheduler
	wokeGoroutine bool                 // a parked goroutine was woken since the last sleep
	busy          int                  // consecutive cycles that did not call epoll_wait; reset by runLoop
	canceledAll   bool                 // Close's cancel of every task was made; reset by runLoop
}

// runLoop drives the pool until done reports true (it returns true) or the
// pool is closing and has no task left (it returns false). The caller must
// be the only goroutine driving the loop. Each pass of the for loop is one
// cycle (see the top of the file), one phase per call.
func (p *Pool) runLoop(done func() bool) bool {
	defer p.leaveLoop()
	p.busy, p.canceledAll = 0, false
	quick := quickCycles{done: done, finishedSeen: p.finished - 1} // done is asked at the first quick cycle
	p.mu.Lock()
	for {
		p.state.reset() // Running: a wake from now on asks for another cycle
		p.stats.cycles.Add(1)
		p.fireTimersLocked()
		if p.tableReq != nil {
			p.serveTaskTableLocked() // tasktable.go
		}
		p.cancelOnCloseLocked()
		freeing := p.takeRunQueueLocked()
		p.mu.Unlock()

		completed := p.runCycles(freeing, &quick)
		p.endTaskRuns()

		p.mu.Lock()
		if stop, finished := p.stopLocked(done); stop {
			p.mu.Unlock()
			return finished
		}
		n, waited := p.sleepOrHarvestLocked(completed)
		if !waited {
			continue // another cycle at once, p.mu still held
		}
		p.dispatch(n)
		p.mu.Lock()
		p.deferFreesLocked()
	}
}

// leaveLoop runs when runLoop returns: the idle coroutines end, and the
// waiters of tasks that finished in the last cycle are woken (tasks go on
// the ready queue for the next Run, goroutines run now).
func (p *Pool) leaveLoop() {
	p.stopIdleCoroutines()
	p.wakers.WakeAll()
}

// fireTimersLocked collects the wakers of the expired timers, to be woken
// outside the lock.
func (p *Pool) fireTimersLocked() {
	if p.timers.len() > 0 {
		if n := p.timers.wakeExpired(p.monoNow(), &p.wakers); n > 0 {
			p.stats.timersFired.Add(uint64(n))
		}
	}
}

// cancelOnCloseLocked cancels every live task, once per runLoop, when Close
// has begun: they are then run until they return.
func (p *Pool) cancelOnCloseLocked() {
	if p.closing && !p.canceledAll {
		p.canceledAll = true
		p.cancelAllLocked()
	}
}

// takeRunQueueLocked moves the ready queue to the run queue, followed by the
// tasks woken while they ran (so that a Yield lets the others run first),
// and returns the registrations the last dispatch left to free.
func (p *Pool) takeRunQueueLocked() (freeing []*fdRegistration) {
	p.runq, p.ready = p.ready, p.runq[:0]
	if len(p.runq) > 0 {
		p.hasReady.Store(false)
	}
	p.runq = append(p.runq, p.requeue...)
	clear(p.requeue)
	p.requeue = p.requeue[:0]
	// runCycle releases (and clears) them before the next dispatch appends
	// to the same array.
	freeing, p.freeing = p.freeing, p.freeing[:0]
	return freeing
}

// runCycle is the part of a cycle that needs no lock: it drains io_uring
// completions, wakes what was collected, releases freeing, resumes the
// tasks of the run queue once each, in order (and the quick cycles that
// runQueue may run after them, sched.go), and submits the io_uring SQEs
// they queued. It reports whether completions are already waiting.
func (p *Pool) runCycle(freeing []*fdRegistration, quick *quickCycles) (completed bool) {
	p.drainCompletions()
	p.wakeCollected() // sched.go
	releaseFreed(freeing)
	p.runQueue(quick) // sched.go
	return p.flushSubmissions()
}

// drainCompletions collects the wakers of the io_uring operations that
// completed, RunAgain cycles included.
func (p *Pool) drainCompletions() {
	if u := p.uring.Load(); u != nil {
		u.drain(&p.wakers)
	}
}

// releaseFreed releases the registrations the last epoll_wait could still
// name, now that their events were dispatched, and clears freeing.
func releaseFreed(freeing []*fdRegistration) {
	for i, reg := range freeing {
		reg.release()
		freeing[i] = nil
	}
}

// flushSubmissions submits the io_uring SQEs this cycle queued in one
// io_uring_enter, and reports whether completions are already waiting:
// operations that completed inside that enter (NOPs, cached reads) are
// drained by another cycle without an epoll_wait.
func (p *Pool) flushSubmissions() (completed bool) {
	if u := p.uring.Load(); u != nil {
		u.flush()
		return u.ring.CQReady()
	}
	return false
}

// runCycles runs the lock-free part of the cycle (runCycle), then quick
// cycles: while the only work is tasks woken while they ran (a Yield, a
// future ready at once), completions, or the waiters of tasks that finished
// (collected by finish), and nobody queued a task on the ready queue, the
// next cycle needs nothing that the lock guards. Timers, Close and the
// sleep decision wait for the full cycle that comes at least every
// harvestEvery cycles; the run queue runs the quick cycles of its own tasks
// itself, up to quick.left (see runQueue). It reports whether completions
// are waiting.
func (p *Pool) runCycles(freeing []*fdRegistration, quick *quickCycles) (completed bool) {
	quick.left = max(harvestEvery-1-p.busy, 0)
	completed = p.runCycle(freeing, quick)
	p.busy += quick.ran // quick cycles run by the run queue itself
	cycles := uint64(quick.ran)
	quick.ran = 0
	for (len(p.requeue) > 0 || completed || p.wakers.Len() > 0) && p.busy+1 < harvestEvery && !p.hasReady.Load() && !quick.done() {
		p.busy++
		cycles++
		p.runq, p.requeue = p.requeue, p.runq[:0]
		quick.left = max(harvestEvery-1-p.busy, 0)
		completed = p.runCycle(nil, quick)
		p.busy += quick.ran
		cycles += uint64(quick.ran)
		quick.ran = 0
	}
	if cycles > 0 {
		p.stats.cycles.Add(cycles)
	}
	return completed
}

// endTaskRuns ends the cycle's task runs: the wakes counted by requeue go
// to the stats, and no task is current any more.
func (p *Pool) endTaskRuns() {
	if p.requeued > 0 {
		p.stats.wakes.Add(p.requeued)
		p.requeued = 0
	}
	if p.current.Load() != nil {
		p.current.Store(nil)
	}
}

// stopLocked reports whether runLoop returns now, and what: true once done
// reports true, false once a closing pool's tasks were all canceled and
// have returned. A closing pool never returns true.
func (p *Pool) stopLocked(done func() bool) (stop, finished bool) {
	if p.closing {
		return p.canceledAll && p.live.n == 0, false
	}
	return done(), true
}

// sleepOrHarvestLocked ends a cycle. If nobody woke the loop (still
// Running) and no work is waiting, it records the next timer deadline,
// moves to Sleeping, unlocks, waits (wait), and moves Sleeping→Waking, so
// that wakes arriving during dispatch skip the eventfd write. Otherwise the
// loop is busy (see harvestLocked). It returns the number of events
// fetched and whether it waited or looked; if not, p.mu is still held.
func (p *Pool) sleepOrHarvestLocked(completed bool) (n int, waited bool) {
	if !p.state.canSleep() || completed || len(p.requeue) > 0 || p.wakers.Len() > 0 {
		// Woken while running, or work is waiting.
		return p.harvestLocked()
	}
	deadline, hasDeadline := p.timers.nextDeadline()
	p.state.sleep(deadline, hasDeadline)
	p.mu.Unlock()

	n = p.wait(deadline, hasDeadline)

	p.mu.Lock()
	_ = p.state.wake() // Sleeping→Waking: wakers from now on skip the eventfd
	p.mu.Unlock()
	p.busy = 0
	return n, true
}

// harvestLocked decides for a busy loop: another cycle at once, lock held,
// no epoll_wait (it returns false). A loop that always finds work never
// reaches epoll_wait and would starve fd events, so every harvestEvery
// cycles it looks once without blocking, at most once per harvestAfter (a
// system call costs about as much as ten cycles of a yielding task); then it
// unlocks and returns the number of events and true.
func (p *Pool) harvestLocked() (n int, looked bool) {
	if p.busy++; p.busy < harvestEvery {
		return 0, false
	}
	p.busy = 0
	now := int64(time.Since(p.epoch))
	if now-p.lastHarvest < harvestAfter {
		return 0, false
	}
	p.lastHarvest = now
	p.state.harvest()
	p.mu.Unlock()
	return p.epollWait(0), true
}

// deferFreesLocked moves the registrations closed while the kernel batch
// could name them (toDelete) to freeing, now that dispatch is over: the
// next cycle releases them.
func (p *Pool) deferFreesLocked() {
	p.freeing = append(p.freeing, p.toDelete...)
	clear(p.toDelete)
	p.toDelete = p.toDelete[:0]
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
			reg := (*fdRegistration)(pointerOf(token))
			reg.deliver(events, &p.wakers)
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
