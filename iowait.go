//go:build linux

package iopool

import (
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// ioWait is one side (read or write) of a Socket: its readiness, its
// deadline, and how a call on it waits for them. Each socket operation
// (fdio.go) waits through await, whoever calls it:
//
//	a task        awaits (wait: the task is suspended, the loop runs on;
//	              Socket.Read and Write call wait themselves, see Read)
//	a goroutine   waits in the runtime's poller (NetConn, NetListener,
//	              NetPacketConn; see goSide, which does not come here)
//	nobody        does not wait: ErrWouldBlock (TryRead, TryWrite)
//
// as Go's internal/poll FD.Read waits through pollDesc.waitRead.
//
// The deadline is kept on the pool's clock (nanoseconds since the pool's
// epoch, monotonic), converted once when it is set: a wall-clock step (NTP,
// suspend and resume) does not move it, and a time past what the clock can
// count (after the year 2262, time.Now().Add(math.MaxInt64)) means never,
// as in package net.
type ioWait struct {
	fr   *FdReady
	slot InterestSlot
	// tcp: the fd is a TCP stream socket, the one kind of fd on which a
	// short read proves the receive queue empty (see Socket.read). kind:
	// what the fd is, for addresses and errors. Both are decided once,
	// when the Socket is made, the same on both sides; they sit in the
	// padding after slot, costing no memory per connection.
	tcp  bool
	kind sockKind
	// tryNext: the side's next call makes its system call at once instead
	// of asking the readiness record first (see ioLoop). Set when the
	// Socket is made (a new socket may well have data or room, and the
	// registration's first edge would cost a loop cycle to arrive), by a
	// task's wait that ends ready (wait: the record said so a moment ago,
	// and the call that follows need not ask again under the
	// registration's lock), and by a write that took all it was given
	// (the socket had room; it most likely still has). Cleared by every
	// system call of a task or of TryRead/TryWrite (never by a goroutine,
	// which tries first anyway), so it is touched only by the side's one
	// reader or writer at a time. A stale hint costs one EAGAIN, after
	// which the call forgets the readiness and waits for the next edge, as
	// after any EAGAIN: TestSocketStaleTryNextWaits. Only the syscall path
	// reads it: the readiness record holds only what the kernel reported,
	// so WaitReadable on a new socket waits for data. In the padding after
	// kind, like tcp and kind.
	tryNext  bool
	events   PollEvents
	deadline atomic.Int64 // pool clock ns; 0 = none; set from any goroutine

	mu     sync.Mutex
	timer  *Timer // mu: created with the first deadline; read after deadline
	waiter Waker  // mu: the last pending poller, woken when the deadline moves
}

// waiter says how an operation waits while its side is not ready: a task
// awaits (t), a plain goroutine waits in the runtime's poller (g), or, with
// both nil, it does not wait and fails with ErrWouldBlock.
type waiter struct {
	t *Task
	g *goSide
	// now: make the call at once and fail with ErrWouldBlock on EAGAIN,
	// without a wait (one try of a goroutine's wait, see goSide.tryOnce).
	now bool
}

// await returns nil once the side has readiness recorded (or at once, with
// try, to try the syscall anyway), waiting for it as how says. It fails,
// without waiting, once the socket or its pool is closed (closed wins over
// an expired deadline, as in package net), and with os.ErrDeadlineExceeded
// once the side's deadline has passed.
func (w *ioWait) await(how waiter, try bool) error {
	if how.t != nil && !try {
		return w.wait(how.t)
	}
	if w.fr.closing() {
		return w.fr.closedErr()
	}
	if w.expired() {
		return os.ErrDeadlineExceeded
	}
	if try {
		return nil
	}
	var nobody PollContext // records no waker
	if _, ok := w.fr.PollReady(&nobody, w.slot, w.events); ok {
		return nil
	}
	return ErrWouldBlock
}

// wait suspends task t until the side is ready (nil), its deadline passes,
// or t is canceled; it fails at once, as await does, once the socket or its
// pool is closed or the deadline has passed. A Close during the wait makes
// the side ready: the caller's next try sees it at the syscall's door.
// Socket.Read, Write and WaitReadable call it directly, one frame less
// than through await at the deepest point of a task's wait (see
// TestRegressionTaskEchoFitsTheSmallestStack).
func (w *ioWait) wait(t *Task) error {
	if w.fr.closing() {
		return w.fr.closedErr()
	}
	if w.expired() {
		return os.ErrDeadlineExceeded
	}
	w.fr.checkNotGoPolled()
	_, err := Await[struct{}](t, w)
	if err == nil {
		w.tryNext = true
	}
	return err
}

// Poll is ready with nil when the fd is ready, or with an error when the
// deadline passes first. It is the future a task awaits.
func (w *ioWait) Poll(cx *PollContext) (struct{}, error) {
	if _, ok := w.fr.PollReady(cx, w.slot, w.events); ok {
		return struct{}{}, nil
	}
	if d := w.recordWaiter(cx); d != 0 {
		// The timer was created before the deadline was stored.
		if _, fired := w.timer.poll(cx, d, true); fired {
			return struct{}{}, os.ErrDeadlineExceeded
		}
	}
	return struct{}{}, ErrPending
}

// pause waits d, or less: Close wakes it (the accept back-off, which must
// not hold a closed listener's caller). The caller's next await reports
// the close.
func (w *ioWait) pause(how waiter, d time.Duration) error {
	p := w.fr.p
	until := p.monoNow() + int64(d)
	// Asking for no events but the always-reported ERR and HUP registers
	// the waker for Close's wake (PollErr) and nothing else.
	closed := func(cx *PollContext) bool {
		_, ok := w.fr.PollReady(cx, w.slot, 0)
		return ok && w.fr.closing()
	}
	switch {
	case how.t != nil:
		tm := how.t.Driver().NewTimer()
		defer tm.Stop()
		_, err := Await[struct{}](how.t, PollFunc[struct{}](func(cx *PollContext) (struct{}, error) {
			if closed(cx) {
				return struct{}{}, nil
			}
			_, fired := tm.poll(cx, until, true)
			return struct{}{}, pendingUnless(fired)
		}))
		return err
	case how.g != nil:
		park := newParkWaker()
		if !closed(&PollContext{waker: park}) {
			return park.parkUntil(p, until)
		}
	}
	return nil
}

// recordWaiter records cx's waker as the side's waiter and then returns the
// deadline (0: none). In that order, so that a deadline set from now on
// wakes the poll.
func (w *ioWait) recordWaiter(cx *PollContext) int64 {
	w.mu.Lock()
	w.waiter = cx.waker
	w.mu.Unlock()
	return w.deadline.Load()
}

// expired reports whether the side's deadline has passed.
func (w *ioWait) expired() bool {
	d := w.deadline.Load()
	return d != 0 && w.fr.p.monoNow() >= d
}

// setDeadline sets the side's deadline from any goroutine and wakes the
// side's waiter, which polls again against the new deadline.
func (w *ioWait) setDeadline(t time.Time) {
	d := w.fr.p.deadlineOnPoolClock(t)
	w.mu.Lock()
	if d == 0 {
		w.deadline.Store(0)
		if w.timer != nil {
			w.timer.Stop()
		}
	} else {
		if w.timer == nil {
			w.timer = (&w.fr.p.drv).NewTimer()
		}
		w.deadline.Store(d)
		w.timer.setDeadline(d)
	}
	waiter := w.waiter
	w.mu.Unlock()
	if waiter != nil {
		waiter.Wake() // at worst a spurious wake: the poller polls again
	}
}

// stop stops the side's deadline timer.
func (w *ioWait) stop() {
	w.mu.Lock()
	if w.timer != nil {
		w.timer.Stop()
	}
	w.waiter = nil
	w.mu.Unlock()
}
