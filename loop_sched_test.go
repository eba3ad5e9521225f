package iopool

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// A locked loop that sleeps often passes through the Go scheduler about
// every schedulerPassEvery before a sleep, so that the runtime never sees
// its P on one scheduling tick for 10 ms and takes it by force (see
// passScheduler); an unlocked loop passes at every sleep anyway
// (Gosched) and keeps no record. The runtime's side of it (sysmon's
// retakes) cannot be observed from a test: docs/benchmarks.md has the
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

// A locked loop that woke a goroutine (any waker not one of its tasks)
// passes through the scheduler at its next sleep, without waiting for
// schedulerPassEvery, so that the goroutine gets the loop's P at once.
func TestRegressionLockedLoopHandsOverWokenGoroutinesBeforeSleeping(t *testing.T) {
	p := newTestPool(t, WithLockOSThread())
	var before int64
	woken := make(chan struct{}, 1)
	require.NoError(t, p.Run(func(t *Task) error {
		before = p.monoNow()
		p.passed = before // no pass is due for schedulerPassEvery
		timer := NewTimer(t.Driver())
		defer timer.Stop()
		cx := NewContext(WakerFunc(func() { woken <- struct{}{} }))
		if _, fired := timer.PollTimer(cx, time.Now().Add(200*time.Microsecond)); fired {
			return nil
		}
		return t.Sleep(2 * time.Millisecond) // the timer fires and the loop sleeps again
	}))
	<-woken
	require.Greater(t, p.passed, before, "no pass through the scheduler after waking a goroutine")
}
