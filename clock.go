//go:build linux

package iopool

// The pool's clock: real (monotonic nanoseconds since New) or virtual
// (WithVirtualClock). Every deadline the pool keeps (timers, Sleep, socket
// deadlines, a virtual pool's context deadlines) is a count of nanoseconds
// on this clock, converted from a time.Time once, by mono.

import (
	"context"
	"math"
	"sync/atomic"
	"time"
)

// virtualEpoch is the instant at which every virtual clock starts: the
// same one as testing/synctest's bubbles.
var virtualEpoch = time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)

// poolClock is a virtual pool's clock; unused (virtual false) on a real one.
//
//	now: starts at 0 (virtualEpoch) and only grows. The loop moves it,
//	     in waitVirtual, and nobody else; anyone may read it.
type poolClock struct {
	virtual bool         // set by New, read-only after
	now     atomic.Int64 // virtual ns since virtualEpoch
}

// WithVirtualClock gives the pool a virtual clock, for tests of timeouts
// that must not take real time: the clock starts at 2000-01-01 00:00:00 UTC
// and stands still while the pool has work; when the loop would sleep (no
// task ready, and a poll of epoll without waiting finds no event) it jumps
// to the earliest armed timer instead, at once. A test of a one-hour timeout
// runs in microseconds, and timers due at the same instant fire in the order
// they were armed, so runs repeat exactly.
//
// Everything on the pool's clock follows it: Task.Sleep and SleepUntil,
// Timer, Ticker, the read and write deadlines of Socket, PacketSocket,
// NetConn and the other net adapters, and the deadline of a SpawnContext's
// context. Task.Now and Pool.Now return the pool's clock.
//
// A time.Time given to the pool is converted once, when it is given:
//
//   - A time that carries a monotonic clock reading (time.Now() and times
//     derived from it with Add, as net/http and context.WithTimeout build
//     deadlines) is a duration from now: its remaining real duration, from
//     the moment it is converted, is added to the virtual now. The
//     nanoseconds between the time.Now call and the conversion are lost, so
//     such a deadline falls that much short of its virtual duration.
//   - Any other time (from Task.Now or Pool.Now, time.Date, time.Unix) is an
//     instant on the virtual clock. Compute exact deadlines from Task.Now.
//
// What does not hold virtual time:
//
//   - Goroutines outside the pool. A plain goroutine that is about to send
//     on a Chan, write to a socket the pool reads, or call Spawn does not
//     stop the clock: if the pool is idle meanwhile, it jumps. Test code that
//     depends on virtual time should run as tasks of the pool.
//   - A NetConn used from a goroutine waits like one: its deadline fires
//     when the pool's virtual clock reaches it, however long that takes in
//     real time. time.Now() outside the pool (and inside it) stays real.
//   - A context's own deadline stays real: a SpawnContext task is canceled
//     with context.DeadlineExceeded when the virtual clock reaches the
//     context's deadline (converted as above when the task is spawned), or
//     when the context itself expires in real time, whichever comes first.
//     Build such contexts with context.WithTimeout, not from Task.Now: a
//     context compares its deadline with real time.
//
// What does: an io_uring operation in flight. The kernel may complete it on
// its own (a file read) and a timer racing it must not win by a jump, so
// while one is in flight the loop sleeps in real time and the virtual clock
// advances by the real time that passed, up to the next timer: it runs at
// real speed. An operation that waits for a silent peer therefore times out
// after its timeout in real time.
//
// The stall report (WithStallReport) measures real time on either clock.
func WithVirtualClock() PoolGroupOption {
	return eachPoolOption(func(o *options) error { o.virtualClock = true; return nil })
}

// Now returns the pool's clock: time.Now() on a real pool; on a virtual one
// (WithVirtualClock), the virtual instant, which has no monotonic reading.
// Safe from any goroutine.
func (p *Pool) Now() time.Time {
	if p.clock.virtual {
		return virtualEpoch.Add(time.Duration(p.clock.now.Load()))
	}
	return time.Now()
}

// Now returns the pool's clock (see Pool.Now), for computing deadlines:
// t.Now().Add(d) is d from now on a real or a virtual pool alike.
func (t *Task) Now() time.Time { return t.pool.Now() }

// monoNow is the pool's clock: nanoseconds since the pool's epoch,
// monotonic (New on a real pool, virtualEpoch on a virtual one).
func (p *Pool) monoNow() int64 {
	if p.clock.virtual {
		return p.clock.now.Load()
	}
	return int64(time.Since(p.epoch))
}

// monoAfter returns the pool's clock d from now, saturating.
func (p *Pool) monoAfter(d time.Duration) int64 { return satAdd(p.monoNow(), int64(d)) }

// mono converts a time to the pool's clock. On a real pool: from its
// monotonic reading if it has one, else from its wall reading, saturating
// at ±292 years (time.Time.Sub). Times before the epoch are negative, which
// compares as expired. Convert a user's time once and keep the result: a
// time rebuilt from wall nanoseconds (time.Unix(0, ns)) has lost its
// monotonic reading, and a wall-clock step would move it. On a virtual pool
// see WithVirtualClock.
func (p *Pool) mono(t time.Time) int64 {
	if p.clock.virtual && hasMonotonic(t) {
		return satAdd(p.clock.now.Load(), int64(time.Until(t)))
	}
	return int64(t.Sub(p.epoch))
}

// hasMonotonic reports whether t carries a monotonic clock reading, which
// only time.Now (and times derived from it) have: Round(0) strips it, and
// only then does the stripped copy differ from t.
func hasMonotonic(t time.Time) bool { return t != t.Round(0) }

// satAdd returns a+b, saturating at the int64 limits.
func satAdd(a, b int64) int64 {
	s := a + b
	switch {
	case a > 0 && b > 0 && s < 0:
		return math.MaxInt64
	case a < 0 && b < 0 && s >= 0:
		return math.MinInt64
	}
	return s
}

// waitVirtual is a virtual pool's sleep (see WithVirtualClock); it returns
// the number of events. Loop only.
func (p *Pool) waitVirtual(deadline int64, hasDeadline bool) int {
	if n := p.epollWait(0); n > 0 {
		return n // work: time stands still
	}
	if !hasDeadline {
		// No timer to jump to: only an event can end the sleep.
		for {
			if n := p.epollWait(-1); n > 0 {
				return n
			}
		}
	}
	now := p.clock.now.Load()
	if u := p.uring.Load(); u == nil || u.inflight == 0 {
		p.clock.now.Store(max(now, deadline)) // idle: jump to the next timer
		return 0
	}
	// An io_uring operation is in flight: real time, up to the timer.
	start := time.Now()
	n := p.epollWait(max(deadline-now, 0))
	p.clock.now.Store(min(satAdd(now, int64(time.Since(start))), max(now, deadline)))
	return n
}

// cancelAtContextDeadline arms a timer of a virtual pool that cancels t
// with context.DeadlineExceeded when the pool's clock reaches ctx's
// deadline, and returns it (stop it once t has finished). It returns nil on
// a real pool, where the context's own timer is the pool's clock, and for a
// context without a deadline.
func (p *Pool) cancelAtContextDeadline(ctx context.Context, t *Task) *Timer {
	dl, ok := ctx.Deadline()
	if !p.clock.virtual || !ok {
		return nil
	}
	tm := (&p.drv).NewTimer()
	cx := PollContext{waker: &deadlineCanceler{t: t}}
	if _, fired := tm.poll(&cx, p.mono(dl), true); fired {
		t.cancelWithCause(context.DeadlineExceeded)
	}
	return tm
}

// deadlineCanceler cancels its task when woken by the deadline's timer.
type deadlineCanceler struct{ t *Task }

func (c *deadlineCanceler) Wake() { c.t.cancelWithCause(context.DeadlineExceeded) }

// deadlineOnPoolClock converts a user's deadline to the pool's clock, once:
// from its monotonic reading while it has one (time.Time.Sub), saturating.
// It returns 0 for none (the zero time, or a time too far ahead to count:
// never), and a negative value for a time at or before the pool's epoch.
func (p *Pool) deadlineOnPoolClock(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	d := p.mono(t) // saturates at ±292 years
	switch {
	case d == math.MaxInt64:
		return 0 // beyond the clock: never
	case d <= 0:
		return -1 // passed (0 would mean none)
	}
	return d
}
