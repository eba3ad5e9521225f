//go:build linux

package iopool

import (
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/iopool/iopool/internal/sys"
)

// A locked loop that sleeps often passes through the Go scheduler about
// every schedulerPassEvery before a sleep, so that the runtime never sees
// its P on one scheduling tick for 10 ms and takes it by force (see
// passScheduler); an unlocked loop passes at every sleep anyway
// (Gosched) and keeps no record. The runtime's side of it (sysmon's
// retakes) cannot be observed from a test: docs/locked-loop.md has the
// system-call counts.
func TestRegressionLockedLoopPassesTheSchedulerBeforeSleeping(t *testing.T) {
	for _, locked := range []bool{true, false} {
		var opts []Option
		if locked {
			opts = append(opts, WithLockOSThread())
		}
		p := newTestPool(t, opts...)
		start := p.monoNow()
		require.NoError(t, p.Run(func(t *Task) error {
			// Locked, sleep until the first pass (bounded): on a loaded
			// machine a 200 µs sleep may have expired before the loop gets
			// to sleep, and only a loop that sleeps passes.
			for p.monoNow()-start < 3*schedulerPassEvery || (locked && p.passed == 0 && p.monoNow()-start < int64(5*time.Second)) {
				if err := t.Sleep(200 * time.Microsecond); err != nil {
					return err
				}
			}
			return nil
		}))
		if !locked {
			require.Zero(t, p.passed, "an unlocked loop keeps no record")
			continue
		}
		// Passes happen at sleeps once schedulerPassEvery has gone by: the
		// last one is at least one period in.
		require.GreaterOrEqual(t, p.passed, int64(schedulerPassEvery), "no pass through the scheduler in %v of sleeps", 3*schedulerPassEvery*time.Nanosecond)
	}
}

// A locked loop that woke a parked goroutine passes through the scheduler
// at its next sleep, without waiting for schedulerPassEvery, so that the
// goroutine gets the loop's P at once; a waker that runs on the loop (the
// poll layer's) causes no pass.
func TestRegressionLockedLoopHandsOverWokenGoroutinesBeforeSleeping(t *testing.T) {
	p := newTestPool(t, WithLockOSThread())
	// The record of the last pass is set an hour ahead, so that no
	// periodic pass falls due during the test however long the loop is
	// descheduled on a loaded machine: only a goroutine wake can cause one.
	var before int64
	woken := make(chan struct{}, 1)
	require.NoError(t, p.Run(func(t *Task) error {
		before = p.monoNow() + int64(time.Hour)
		p.passed = before
		// A waker that runs on the loop: no pass.
		onLoop := t.Driver().NewTimer()
		defer onLoop.Stop()
		if _, fired := onLoop.PollTimer(NewPollContext(WakerFunc(func() {
			select { // never block the loop, should the waker run twice
			case woken <- struct{}{}:
			default:
			}
		})), time.Now().Add(200*time.Microsecond)); fired {
			return nil
		}
		if err := t.Sleep(time.Millisecond); err != nil {
			return err
		}
		select {
		case <-woken:
		default: // its deadline came before the sleep's: it has run by now
			return fmt.Errorf("the loop's timer waker did not run before a later sleep ended")
		}
		if p.passed != before {
			return fmt.Errorf("a pass after a waker that runs on the loop (passed %d, before %d)", p.passed, before)
		}
		// A parked goroutine's waker: a pass at the next sleep.
		park := newParkWaker()
		goroutine := t.Driver().NewTimer()
		defer goroutine.Stop()
		if _, fired := goroutine.PollTimer(NewPollContext(park), time.Now().Add(200*time.Microsecond)); fired {
			return nil
		}
		// The timer fires and wakes the goroutine's waker; the loop's next
		// sleep passes. Sleep until it has (a loaded machine may run both
		// timers in one cycle, with no sleep in between), within a bound:
		// no periodic pass can be due, so only the wake can cause it.
		for deadline := time.Now().Add(5 * time.Second); p.passed == before && time.Now().Before(deadline); {
			if err := t.Sleep(time.Millisecond); err != nil {
				return err
			}
		}
		return nil
	}))
	require.NotEqual(t, before, p.passed, "no pass through the scheduler after waking a goroutine")
}

// TestEpollWaitFallbackRoundsUp runs sleeps with epoll_wait (milliseconds)
// instead of epoll_pwait2: a sub-millisecond sleep never ends early and the
// loop does not spin (few sleeps per timer).
func TestEpollWaitFallbackRoundsUp(t *testing.T) {
	sys.ForceEpollWaitFallback(true)
	defer sys.ForceEpollWaitFallback(false)
	p := newTestPool(t)
	require.NoError(t, p.Run(func(tk *Task) error {
		for range 10 {
			start := time.Now()
			if err := tk.Sleep(300 * time.Microsecond); err != nil {
				return err
			}
			require.GreaterOrEqual(t, time.Since(start), 300*time.Microsecond)
		}
		return nil
	}))
	require.LessOrEqual(t, p.Stats().Sleeps, uint64(20), "rounding down would spin with zero timeouts")
	require.Equal(t, 1, sys.MillisRoundedUp(1))
	require.Equal(t, 1, sys.MillisRoundedUp(1_000_000))
	require.Equal(t, 2, sys.MillisRoundedUp(1_000_001))
	require.Equal(t, -1, sys.MillisRoundedUp(-5))
	require.Equal(t, 0, sys.MillisRoundedUp(0))
}
