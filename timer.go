package iopool

import "time"

// Timer wakes its poller when a deadline passes. The loop sleeps exactly
// until the earliest armed timer (nanosecond precision with epoll_pwait2),
// so a timer fires as soon as the kernel wakes the loop after its deadline.
//
// A Timer may be polled, re-armed and stopped from any goroutine. Re-arming
// an existing Timer allocates nothing; create one per waiter and reuse it.
type Timer struct {
	p *Pool
	e timerEntry // pool.mu
}

// NewTimer returns an unarmed timer on drv's pool.
func NewTimer(drv *Driver) *Timer {
	return &Timer{p: drv.p, e: timerEntry{index: -1}}
}

// PollTimer is ready with the current time once deadline has passed.
// Otherwise it arms the timer for deadline, stores the waker, and, if the
// loop is sleeping past deadline, wakes it to sleep again for less.
func (tm *Timer) PollTimer(cx *Context, deadline time.Time) (time.Time, bool) {
	p := tm.p
	d := p.mono(deadline)
	p.mu.Lock()
	if d <= p.monoNow() {
		p.timers.disarm(&tm.e)
		tm.e.waker = nil
		p.mu.Unlock()
		return time.Now(), true
	}
	if tm.e.index < 0 || tm.e.deadline != d {
		p.timers.arm(&tm.e, d)
	}
	if tm.e.waker != cx.waker {
		tm.e.waker = cx.waker
	}
	signal := p.state.wakeForTimer(d)
	p.mu.Unlock()
	if signal {
		p.signal()
	}
	return time.Time{}, false
}

// SetDeadline moves an armed or unarmed timer to deadline; if someone is
// waiting on it and the loop sleeps past the new deadline, the loop is woken.
// The waiter is woken when the new deadline passes.
func (tm *Timer) SetDeadline(deadline time.Time) {
	p := tm.p
	d := p.mono(deadline)
	p.mu.Lock()
	p.timers.arm(&tm.e, d)
	signal := tm.e.waker != nil && p.state.wakeForTimer(d)
	p.mu.Unlock()
	if signal {
		p.signal()
	}
}

// Stop disarms the timer and forgets its waker. Stopping a nil or unarmed
// timer does nothing.
func (tm *Timer) Stop() {
	if tm == nil {
		return
	}
	p := tm.p
	p.mu.Lock()
	p.timers.disarm(&tm.e)
	tm.e.waker = nil
	p.mu.Unlock()
}

// Future returns a future that is ready with the current time once deadline
// has passed; each call allocates, so keep it for repeated awaits.
func (tm *Timer) Future(deadline time.Time) Future[time.Time] {
	return &timerFuture{timer: tm, deadline: deadline}
}

// timerFuture adapts a timer and a deadline to Future.
type timerFuture struct {
	timer    *Timer
	deadline time.Time
}

func (f *timerFuture) Poll(cx *Context) (time.Time, bool) {
	return f.timer.PollTimer(cx, f.deadline)
}
