//go:build linux

package iopool

// The scheduler's state, all guarded by Pool.mu unless noted: the ready
// queue (tasks woken since the loop last took them, in wake order), the live
// list (tasks spawned and not finished), and the loop-only run queue. A task
// enters the live list in enqueueNew and leaves it in finish, the one path
// by which every task ends (return, panic, runtime.Goexit or cancel).

import "iter"

// pushReadyAndUnlock appends t to the ready queue and wakes the loop. It is
// called with p.mu held and releases it before writing the eventfd.
func (p *Pool) pushReadyAndUnlock(t *Task) {
	p.ready = append(p.ready, t)
	if len(p.ready) == 1 {
		p.hasReady.Store(true)
	}
	p.unlockAndSignal(p.state.wake())
}

// enqueueNew adds a new task to the live list and the ready queue, or, on a
// closed pool, finishes it with ErrClosed without running it.
func (p *Pool) enqueueNew(t *Task) {
	p.stats.tasksSpawned.Add(1)
	t.wake.Store(1)
	p.mu.Lock()
	if p.closing || p.closed {
		p.mu.Unlock()
		t.finished = true
		_ = t.runner.complete(ErrClosed, nil, nil) // the pool will list no tasks

		return
	}
	p.live.push(t)
	p.stats.tasksLive.Add(1)
	p.pushReadyAndUnlock(t)
}

// runQueue resumes every task of the run queue once, in order, and empties
// it. Then, while the only work is tasks woken while they ran (a Yield, a
// future ready at once: the requeue), it runs them as quick cycles of its
// own, up to quick.left of them (see runLoop), counted in quick.ran. Loop
// only.
//
// The loop's half of a task switch is here, in one function: the call to
// the coroutine's next, and the loop around it. A return taken between two
// switches costs a mispredicted branch (the switch changes stacks under the
// processor's return predictor), so a task that awaits again and again is
// resumed from this loop without returning to runLoop in between.
//
// A task that panics or calls runtime.Goexit leaves its coroutine as a
// taskEndEscape panic (see coroutine.body), which next re-raises on the loop
// goroutine. One deferred recover per batch of tasks catches it, in
// runBatch, rather than one per resume: the loop finishes that task
// (taskEnded) and goes on with the next.
func (p *Pool) runQueue(quick *quickCycles) {
	for i, end := 0, false; !end; {
		i, end = p.runBatch(i, quick)
	}
	p.runq = p.runq[:0]
}

// quickCycles is what runQueue may do on its own after the run queue: run
// at most left quick cycles, which it counts in ran, and none once done
// (the loop's done) reports true. done can turn true only when a task
// finishes, so it is asked again only after one did (Pool.finished moved
// from finishedSeen).
type quickCycles struct {
	left, ran    int
	done         func() bool
	finishedSeen uint64
}

// runBatch resumes the tasks of the run queue from index i on, and the
// quick cycles after them, and reports the end. After a task that escaped
// its coroutine it returns where to go on instead. Any other panic out of a
// coroutine is a bug in the scheduler and is re-raised.
func (p *Pool) runBatch(i int, quick *quickCycles) (next int, end bool) {
	defer func() {
		if v := recover(); v != nil {
			if _, ok := v.(taskEndEscape); !ok {
				panic(v)
			}
			// Each task is cleared from the queue as it is resumed, the
			// one that escaped included: go on with the first one left.
			for next = 0; next < len(p.runq) && p.runq[next] == nil; next++ {
			}
			p.taskEnded(p.current.Load(), runEscaped)
		}
	}()
	for {
		for ; i < len(p.runq); i++ {
			t := p.runq[i]
			p.runq[i] = nil
			for {
				c := t.co
				if c == nil {
					if c = p.firstRun(t); c == nil {
						break
					}
				}
				if p.current.Load() != t {
					p.current.Store(t) // cleared by the loop before it takes its lock
				}
				c.polls++
				w := t.wake.Load() // not 0: t was on the run queue
				out := runSuspended
				if c.watched {
					out = p.resumeWatched(t)
				} else if returned, _ := c.next(); returned {
					out = runReturned
				}
				if out != runSuspended {
					p.taskEnded(t, out)
					break
				}
				if t.wake.Load() == w && t.wake.CompareAndSwap(w, 0) {
					break // idle until woken
				}
				// Woken while it ran: still queued, for the next cycle.
				p.requeued++
				if i < len(p.runq)-1 || len(p.requeue) > 0 || !p.quickCycle(quick) {
					p.requeue = append(p.requeue, t)
					break
				}
				// The next cycle would run t alone: run it now, as that
				// cycle, without queueing it.
			}
		}
		if len(p.requeue) == 0 || !p.quickCycle(quick) {
			return i, true
		}
		p.runq, p.requeue = p.requeue, p.runq[:0]
		i = 0
	}
}

// quickCycle reports whether the run queue may run another quick cycle of
// its own, and counts it: some are left, and there is no other work (no
// wakers collected, no io_uring to drain or flush, no task queued from
// elsewhere, and the loop not done). Loop only.
func (p *Pool) quickCycle(quick *quickCycles) bool {
	if quick.left == 0 || p.wakers.Len() > 0 || p.uring.Load() != nil || p.hasReady.Load() {
		return false
	}
	if p.finished != quick.finishedSeen {
		quick.finishedSeen = p.finished
		if quick.done() {
			return false
		}
	}
	quick.left--
	quick.ran++
	return true
}

// firstRun returns the coroutine of a task that has none, to run it: a
// task that has not run yet gets one. A stale wake of a finished task
// (which holds no coroutine) runs nothing, and neither does a task
// canceled before it started, which it finishes: then it returns nil.
// Loop only.
func (p *Pool) firstRun(t *Task) *coroutine {
	if t.finished {
		return nil
	}
	return p.startTask(t)
}

// startTask gives t, about to run for the first time, a coroutine, or
// finishes it with its cancel error if it was canceled before it started
// (then it returns nil). Loop only.
func (p *Pool) startTask(t *Task) *coroutine {
	if t.canceled.Load() {
		p.finish(t, t.canceledErr(), nil)
		return nil
	}
	c := p.takeCoroutine()
	c.task, t.co = t, c
	c.polls = 0 // tasktable.go; awaiting was cleared when its last task ended
	return c
}

// taskEnded finishes t, whose coroutine run ended with out (runReturned or
// runEscaped): a coroutine whose task returned is kept for another task,
// one that escaped is over. Loop only.
func (p *Pool) taskEnded(t *Task, out runOutcome) {
	c := t.co
	t.co, c.task, c.awaiting = nil, nil, nil
	if out == runReturned {
		p.idleCoroutine(c)
	} else {
		c.stop()
	}
	end := p.ended
	p.ended = taskOutcome{}
	if end.panicked != nil {
		p.logTaskPanic(end.panicked)
	}
	p.finish(t, end.err, end.panicked)
}

// maxIdleCoroutines bounds the coroutines a pool keeps for its next tasks.
// Each holds a goroutine (its stack included), idle until reused.
const maxIdleCoroutines = 16

// takeCoroutine returns an idle coroutine, or a new one. Loop only.
func (p *Pool) takeCoroutine() *coroutine {
	if n := len(p.idleCoros); n > 0 {
		c := p.idleCoros[n-1]
		p.idleCoros[n-1] = nil
		p.idleCoros = p.idleCoros[:n-1]
		return c
	}
	c := &coroutine{watched: p.opts.obs.stallThreshold != 0}
	c.next, c.stop = iter.Pull(c.body())
	return c
}

// idleCoroutine keeps c, whose task returned, for a later task, or ends it
// if enough are kept. Loop only.
func (p *Pool) idleCoroutine(c *coroutine) {
	if len(p.idleCoros) < maxIdleCoroutines {
		p.idleCoros = append(p.idleCoros, c)
		return
	}
	c.stop()
}

// stopIdleCoroutines ends the idle coroutines, when the loop returns: on
// the loop goroutine, as iter.Pull requires of a coroutine created there.
func (p *Pool) stopIdleCoroutines() {
	for i, c := range p.idleCoros {
		c.stop()
		p.idleCoros[i] = nil
	}
	p.idleCoros = p.idleCoros[:0]
}

// finish ends t: it leaves the live list, its timer and context are
// released, and its runner learns the result. Loop only.
func (p *Pool) finish(t *Task, err error, pe *PanicError) {
	t.finished = true
	p.finished++
	if e := t.ext.Load(); e != nil {
		e.sleep.timer.Stop()
	}
	t.cancelContext()
	unclaimed := t.runner.complete(err, pe, &p.wakers) // woken by the loop's next cycle
	p.mu.Lock()
	p.live.remove(t)
	if unclaimed && p.opts.trackTasks {
		p.unjoined.add(t)
	}
	p.mu.Unlock()
	p.stats.tasksLive.Add(-1)
}

// wakeCollected wakes the wakers gathered by timers, completions and
// dispatch. Tasks of this pool are queued for this cycle directly, without
// the lock or a state change; anything else is woken normally.
func (p *Pool) wakeCollected() {
	l := &p.wakers
	var local uint64
	for i, w := range l.wakers {
		l.wakers[i] = nil
		if t, ok := w.(*Task); ok && t.pool == p {
			if t.markQueued() {
				local++
				p.runq = append(p.runq, t)
			}
			continue
		}
		if _, ok := w.(*parkWaker); ok {
			// A goroutine (BlockOn, RecvWait, Handle.Wait...), now runnable
			// on this thread's P: see passScheduler.
			p.wokeGoroutine = true
		}
		w.Wake()
	}
	l.wakers = l.wakers[:0]
	if local > 0 {
		p.stats.wakes.Add(local)
	}
}

// cancelAllLocked cancels every live task, for Close. Called with p.mu held;
// the wakes it causes queue the tasks for the coming cycles.
func (p *Pool) cancelAllLocked() {
	for t := p.live.head; t != nil; t = t.nextLive {
		if t.canceled.Swap(true) {
			continue
		}
		t.cancelContext()
		if t.markQueued() {
			p.ready = append(p.ready, t)
			p.hasReady.Store(true)
		}
	}
}

// taskList is an intrusive doubly linked list of live tasks.
type taskList struct {
	head *Task
	n    int
}

func (l *taskList) push(t *Task) {
	t.nextLive = l.head
	if l.head != nil {
		l.head.prev = t
	}
	l.head = t
	l.n++
}

func (l *taskList) remove(t *Task) {
	if t.prev != nil {
		t.prev.nextLive = t.nextLive
	} else if l.head == t {
		l.head = t.nextLive
	} else {
		return // not in the list
	}
	if t.nextLive != nil {
		t.nextLive.prev = t.prev
	}
	t.prev, t.nextLive = nil, nil
	l.n--
}
