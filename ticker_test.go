//go:build linux

package iopool

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// Every tick of the grid is either delivered or counted as missed, the
// grid never drifts, and a task that sleeps through several periods gets
// one tick at once with the others counted, then the next tick in the
// future (no burst). The checks hold however late a loaded machine wakes
// the loop: they read the ticker's grid, not the wall clock's precision.
func TestTickerSkipsAndCountsMissedTicks(t *testing.T) {
	const period = 25 * time.Millisecond
	runPool(t, func(tk *Task) error {
		ticker, err := tk.Driver().NewTicker(period)
		require.NoError(t, err)
		defer ticker.Stop()
		origin := ticker.next.Add(-period)
		accounted := 0 // ticks delivered or counted as missed
		check := func(before time.Time, missed int) {
			t.Helper()
			accounted += 1 + missed
			require.Zero(t, ticker.next.Sub(origin)%period, "the grid does not drift")
			require.Equal(t, accounted+1, int(ticker.next.Sub(origin)/period), "every tick is delivered or counted")
			require.True(t, ticker.next.After(before), "the next tick is in the future: no burst")
			require.GreaterOrEqual(t, time.Since(origin), time.Duration(accounted)*period, "no tick comes early")
		}
		for range 3 {
			before := time.Now()
			missed, err := ticker.Next(tk)
			require.NoError(t, err)
			check(before, missed)
		}
		require.NoError(t, tk.Sleep(3*period+period/2))
		before := time.Now()
		missed, err := ticker.Next(tk)
		require.NoError(t, err)
		require.GreaterOrEqual(t, missed, 2, "slept through three ticks: one delivered, at least two missed")
		check(before, missed)
		before = time.Now()
		missed, err = ticker.Next(tk)
		require.NoError(t, err)
		check(before, missed)
		return nil
	})
}

func TestTickerResetAndStop(t *testing.T) {
	runPool(t, func(tk *Task) error {
		ticker, err := tk.Driver().NewTicker(time.Hour)
		require.NoError(t, err)
		// Reset from another goroutine wakes the waiting Next onto the new grid.
		reset := make(chan error, 1) // Reset's result, checked by the test's goroutine
		go func() {
			time.Sleep(5 * time.Millisecond)
			err := ticker.Reset(5 * time.Millisecond)
			if err != nil {
				ticker.Stop() // or Next would wait an hour
			}
			reset <- err
		}()
		start := time.Now()
		_, err = ticker.Next(tk)
		require.NoError(t, <-reset)
		require.NoError(t, err)
		require.Less(t, time.Since(start), time.Minute)

		go func() {
			time.Sleep(5 * time.Millisecond)
			ticker.Stop()
		}()
		require.NoError(t, ticker.Reset(time.Hour))
		_, err = ticker.Next(tk)
		require.ErrorIs(t, err, ErrClosed, "Stop wakes a waiting Next")
		_, err = ticker.Next(tk)
		require.ErrorIs(t, err, ErrClosed)
		require.ErrorContains(t, err, "ticker stopped")

		require.NoError(t, ticker.Reset(time.Millisecond), "Reset restarts a stopped ticker")
		_, err = ticker.Next(tk)
		require.NoError(t, err)
		ticker.Stop()
		return nil
	})
}

func TestTickerRejectsBadPeriods(t *testing.T) {
	p := newTestPool(t)
	for _, d := range []time.Duration{0, -time.Second} {
		_, err := p.Driver().NewTicker(d)
		require.ErrorContains(t, err, "want a period > 0")
	}
	ticker, err := p.Driver().NewTicker(time.Second)
	require.NoError(t, err)
	require.ErrorContains(t, ticker.Reset(0), "Ticker.Reset(0s): want a period > 0")
	ticker.Stop()
}

// A Ticker is a case of Select: taking a tick there moves the ticker on,
// so the next Select waits for the next tick instead of returning at once.
func TestTickerInSelect(t *testing.T) {
	runPool(t, func(tk *Task) error {
		ticker, err := tk.Driver().NewTicker(10 * time.Millisecond)
		require.NoError(t, err)
		defer ticker.Stop()
		origin := ticker.next.Add(-10 * time.Millisecond)
		ch := NewChan[int]()
		var missed, msg int
		for i := 1; i <= 3; i++ {
			n, err := Select(tk, Case(ch, &msg), Case(ticker, &missed))
			require.NoError(t, err)
			require.Equal(t, 1, n)
			require.GreaterOrEqual(t, time.Since(origin), time.Duration(i+missed)*10*time.Millisecond, "tick %d came early", i)
			i += missed
		}
		ticker.Stop()
		n, err := Select(tk, Case(ch, &msg), Case(ticker, &missed))
		require.Equal(t, 1, n)
		require.ErrorIs(t, err, ErrClosed, "the stopped ticker's case is ready with its error")
		return nil
	})
}
