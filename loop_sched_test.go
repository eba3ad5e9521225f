package iopool

import (
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
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
			for p.monoNow()-start < 3*schedulerPassEvery {
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
	var before int64
	woken := make(chan struct{}, 1)
	require.NoError(t, p.Run(func(t *Task) error {
		before = p.monoNow()
		p.passed = before // no pass is due for schedulerPassEvery
		// A waker that runs on the loop: no pass.
		onLoop := t.Driver().NewTimer()
		defer onLoop.Stop()
		if _, fired := onLoop.PollTimer(NewContext(WakerFunc(func() { woken <- struct{}{} })), time.Now().Add(200*time.Microsecond)); fired {
			return nil
		}
		if err := t.Sleep(time.Millisecond); err != nil {
			return err
		}
		<-woken
		if p.passed != before {
			return fmt.Errorf("a pass after a waker that runs on the loop (passed %d, before %d)", p.passed, before)
		}
		// A parked goroutine's waker: a pass at the next sleep.
		park := newParkWaker()
		goroutine := t.Driver().NewTimer()
		defer goroutine.Stop()
		if _, fired := goroutine.PollTimer(NewContext(park), time.Now().Add(200*time.Microsecond)); fired {
			return nil
		}
		return t.Sleep(time.Millisecond) // the timer fires and the loop sleeps again
	}))
	require.Greater(t, p.passed, before, "no pass through the scheduler after waking a goroutine")
}
