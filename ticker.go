//go:build linux

package iopool

import (
	"fmt"
	"sync"
	"time"
)

// Ticker ticks every period on a pool's timer, for a task that does
// something periodically. Next waits for the next tick.
//
// Ticks are on a fixed grid of the pool's clock (real or virtual, see
// WithVirtualClock): start + k·period, where start is the time of
// NewTicker or the last Reset. Missed ticks are skipped, not queued: a task
// that calls Next after several ticks went by gets one tick at once, the
// count of ticks it missed, and the following tick on the grid (tokio's
// MissedTickBehavior::Skip; time.Ticker drops them the same way but does
// not count them). The ticker never drifts, and it never fires a burst to
// catch up.
//
// Next is for one task at a time; Reset and Stop may be called from any
// goroutine.
type Ticker struct {
	tm     *Timer
	mu     sync.Mutex
	period time.Duration // mu
	next   time.Time     // mu: the next tick on the grid
	stop   bool          // mu: Stop was called
	waiter Waker         // mu: Next's waker while it waits
}

// NewTicker returns a ticker whose first tick is one period from now. A
// period ≤ 0 is an error.
func (d *Driver) NewTicker(period time.Duration) (*Ticker, error) {
	if period <= 0 {
		return nil, fmt.Errorf("iopool: Driver.NewTicker(%v): want a period > 0", period)
	}
	return &Ticker{tm: d.NewTimer(), period: period, next: d.p.Now().Add(period)}, nil
}

// errTickerStopped is Next's error after Stop.
var errTickerStopped = wrapError(ErrClosed, "ticker stopped")

// Poll is ready when the next tick is due, with the number of ticks
// missed before it (see Next), and it takes the tick: the ticker moves on
// to the next one, so a Ticker can be a case of Select. After Stop it is
// ready with an error wrapping ErrClosed.
func (tk *Ticker) Poll(cx *PollContext) (int, error) {
	tk.mu.Lock()
	if tk.stop {
		tk.mu.Unlock()
		return 0, errTickerStopped
	}
	tk.waiter = cx.waker
	next := tk.next
	tk.mu.Unlock()
	if _, ok := tk.tm.PollTimer(cx, next); !ok {
		return 0, ErrPending
	}
	now := tk.tm.p.Now()
	tk.mu.Lock()
	defer tk.mu.Unlock()
	tk.waiter = nil
	if tk.stop {
		return 0, errTickerStopped
	}
	late := now.Sub(tk.next)
	if late < 0 {
		return 0, nil // the tick of a grid that Reset replaced meanwhile
	}
	missed := int(late / tk.period)
	tk.next = tk.next.Add(time.Duration(missed+1) * tk.period)
	return missed, nil
}

// Next waits inside task t for the next tick and returns how many ticks
// were dropped before it because t came late (0 when it kept up): after
// tick 3, a task that comes back 3.5 periods later gets tick 6 at once with
// missed == 2, and then tick 7 on time. After Stop it returns an error
// wrapping ErrClosed; if t is canceled, ErrCanceled.
func (tk *Ticker) Next(t *Task) (missed int, err error) {
	return Await[int](t, tk)
}

// Reset stops the ticker and starts it again with period: the next tick is
// one period from now. It restarts a stopped ticker. A period ≤ 0 is an
// error and leaves the ticker as it was.
func (tk *Ticker) Reset(period time.Duration) error {
	if period <= 0 {
		return fmt.Errorf("iopool: Ticker.Reset(%v): want a period > 0", period)
	}
	tk.mu.Lock()
	tk.period, tk.next, tk.stop = period, tk.tm.p.Now().Add(period), false
	w := tk.waiter
	tk.mu.Unlock()
	if w != nil {
		w.Wake() // Next polls again against the new grid
	}
	return nil
}

// Stop turns the ticker off: a waiting Next wakes and fails, and so do
// later calls until Reset. Its timer is disarmed.
func (tk *Ticker) Stop() {
	tk.mu.Lock()
	tk.stop = true
	w := tk.waiter
	tk.waiter = nil
	tk.mu.Unlock()
	tk.tm.Stop()
	if w != nil {
		w.Wake()
	}
}
