//go:build linux

package iopool

// The loop's sleep: how a cycle that found nothing to do blocks in epoll
// until an event or its next timer deadline (wait), and what it does for the
// Go scheduler first (passScheduler). runLoop's sleepOrHarvestLocked calls
// it with the pool in the Sleeping state.

import (
	"fmt"
	"runtime"

	"golang.org/x/sys/unix"
)

// preciseWaitBelow is the timeout under which an unlocked loop lowers its
// thread's timer slack for the wait (see waitWithLowSlack).
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
	if n := p.prepareToSleep(); n > 0 {
		return n
	}
	if p.clock.virtual {
		return p.waitVirtual(deadline, hasDeadline) // clock.go
	}
	if hasDeadline && !p.opts.lockOSThread && deadline-p.monoNow() < preciseWaitBelow {
		return p.waitWithLowSlack(deadline)
	}
	return p.waitUntil(deadline, hasDeadline)
}

// prepareToSleep lets the Go scheduler run what the loop woke before it
// blocks. A locked loop passes through it now and then (passScheduler). An
// unlocked loop first looks without blocking: a busy loop finds events
// (their number is returned) and goes on without the hand-off; a locked
// loop has no hand-off to skip, and the look would only add a syscall to
// every sleep.
func (p *Pool) prepareToSleep() (events int) {
	if p.opts.lockOSThread {
		p.passScheduler()
		return 0
	}
	if n := p.epollWait(0); n > 0 {
		return n
	}
	// The loop is about to block. Let goroutines it made runnable start
	// first: a goroutine blocked in a syscall keeps its P for up to a
	// sysmon tick (20 µs to 10 ms), stranding them. Gosched costs about
	// 100 ns here (about 20 µs on a locked thread, where it is skipped).
	runtime.Gosched()
	return 0
}

// waitWithLowSlack is waitUntil for a short timed sleep of an unlocked
// loop, which would end up to the thread's timer slack (50 µs by default)
// late. The loop does not own this thread, so it lowers the slack for this
// one wait only: two prctl calls, about a microsecond, against tens of
// microseconds of lateness.
func (p *Pool) waitWithLowSlack(deadline int64) int {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	if old, err := unix.PrctlRetInt(unix.PR_GET_TIMERSLACK, 0, 0, 0, 0); err == nil && old > 1 {
		_ = unix.Prctl(unix.PR_SET_TIMERSLACK, 1, 0, 0, 0)
		defer unix.Prctl(unix.PR_SET_TIMERSLACK, uintptr(old), 0, 0, 0)
	}
	return p.waitUntil(deadline, true)
}

// waitUntil blocks in epoll until an event or the deadline (none: until an
// event), retrying EINTR and early timeouts with the remaining time.
func (p *Pool) waitUntil(deadline int64, hasDeadline bool) int {
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
// An unlocked loop passes at every sleep (see prepareToSleep).
//
// Goroutines the loop woke (BlockOn, RecvWait, Handle.Wait: the pool's
// parkWakers; the net views wait in Go's own poller) sit on the loop's P, which the
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
