//go:build linux

package iopool

import "time"

// Timer wakes its poller when a deadline passes. The loop sleeps exactly
// until the earliest armed timer (nanosecond precision with epoll_pwait2),
// so a timer fires as soon as the kernel wakes the loop after its deadline.
//
// A Timer may be polled, re-armed and stopped from any goroutine. Re-arming
// an existing Timer allocates nothing; create one per waiter and reuse it.
type Timer struct {
	p           *Pool
	e           timerEntry // pool.mu: heap entry; e.deadline is the deadline
	hasDeadline bool       // pool.mu: a deadline was ever set
}

// NewTimer returns an unarmed timer on the driver's pool.
func (d *Driver) NewTimer() *Timer {
	return &Timer{p: d.p, e: timerEntry{index: -1}}
}

// PollTimer sets the timer's deadline and polls it: it is ready with the
// current time on the pool's clock (Pool.Now) once deadline has passed; otherwise it arms the timer, stores
// the waker, and, if the loop is sleeping past deadline, wakes it to sleep
// again for less. On a closed pool it is ready at once with the zero time
// (see Err).
func (tm *Timer) PollTimer(cx *PollContext, deadline time.Time) (time.Time, bool) {
	return tm.poll(cx, tm.p.mono(deadline), true)
}

// Poll polls the timer at its current deadline (set by SetDeadline or an
// earlier PollTimer), so Timer is a Future of the time it fired (never
// failing: on a closed pool it is ready with the zero time, see Err). A
// timer that never had a deadline stays pending.
func (tm *Timer) Poll(cx *PollContext) (time.Time, error) {
	now, ok := tm.poll(cx, 0, false)
	return now, pendingUnless(ok)
}

func (tm *Timer) poll(cx *PollContext, d int64, setDeadline bool) (time.Time, bool) {
	p := tm.p
	p.mu.Lock()
	if p.closed {
		// No loop is left to fire the timer: ready now, with the zero
		// time, rather than never. Err reports why.
		tm.e.waker = nil
		p.mu.Unlock()
		return time.Time{}, true
	}
	if setDeadline {
		tm.hasDeadline = true
		if tm.e.deadline != d {
			tm.e.deadline = d
			if tm.e.index >= 0 {
				p.timers.arm(&tm.e, d)
			}
		}
	}
	p.notePark(cx.waker)
	if !tm.hasDeadline {
		tm.e.waker = cx.waker
		p.mu.Unlock()
		return time.Time{}, false
	}
	d = tm.e.deadline
	if d <= p.monoNow() {
		p.timers.disarm(&tm.e)
		tm.e.waker = nil
		p.mu.Unlock()
		return p.Now(), true
	}
	if tm.e.index < 0 {
		p.timers.arm(&tm.e, d)
	}
	if !sameWaker(tm.e.waker, cx.waker) {
		tm.e.waker = cx.waker
	}
	p.unlockAndSignal(p.state.wakeForTimer(d))
	return time.Time{}, false
}

// SetDeadline moves an armed or unarmed timer to deadline; if someone is
// waiting on it and the loop sleeps past the new deadline, the loop is woken.
// The waiter is woken when the new deadline passes.
func (tm *Timer) SetDeadline(deadline time.Time) {
	tm.setDeadline(tm.p.mono(deadline))
}

// setDeadline is SetDeadline with d on the pool's clock.
func (tm *Timer) setDeadline(d int64) {
	p := tm.p
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return
	}
	tm.hasDeadline = true
	p.timers.arm(&tm.e, d)
	p.unlockAndSignal(tm.e.waker != nil && p.state.wakeForTimer(d))
}

// Err returns ErrClosed once the timer's pool is closed, and nil before.
// A closed pool has no loop left to fire timers, so its timers are ready at
// once with the zero time: a goroutine blocked on one (through BlockOn) is
// woken by Close and tells a fired timer from a closed pool with Err.
func (tm *Timer) Err() error {
	if tm.p.released.Load() {
		return ErrClosed
	}
	return nil
}

// Stop disarms the timer and forgets its waker and deadline. Stopping a nil or unarmed
// timer does nothing.
func (tm *Timer) Stop() {
	if tm == nil {
		return
	}
	p := tm.p
	p.mu.Lock()
	p.timers.disarm(&tm.e)
	tm.e.waker = nil
	tm.hasDeadline = false
	p.mu.Unlock()
}

// Future returns a future that is ready with the current time once deadline
// has passed; each call allocates, so keep it for repeated awaits.
func (tm *Timer) Future(deadline time.Time) Future[time.Time] {
	return &timerFuture{timer: tm, deadline: tm.p.mono(deadline)}
}

// timerFuture adapts a timer and a deadline to Future.
type timerFuture struct {
	timer    *Timer
	deadline int64 // on the pool's clock, converted once
}

func (f *timerFuture) Poll(cx *PollContext) (time.Time, error) {
	now, ok := f.timer.poll(cx, f.deadline, true)
	return now, pendingUnless(ok)
}
