package iopool

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// A task that keeps up misses nothing; one that sleeps through three and a
// half periods gets one tick at once with the two it missed counted, and
// the next tick back on the grid.
func TestTickerSkipsAndCountsMissedTicks(t *testing.T) {
	const period = 25 * time.Millisecond
	runPool(t, func(tk *Task) error {
		ticker, err := NewTicker(tk.Driver(), period)
		require.NoError(t, err)
		defer ticker.Stop()
		start := time.Now()
		for i := 1; i <= 3; i++ {
			missed, err := ticker.Next(tk)
			require.NoError(t, err)
			require.Zero(t, missed)
			require.GreaterOrEqual(t, time.Since(start), time.Duration(i)*period, "tick %d came early", i)
		}
		require.NoError(t, tk.Sleep(3*period+period/2))
		// The ticks at 4, 5 and 6 periods are due: one is delivered, two
		// are skipped (three if tick 3 itself came more than half a period
		// late on a loaded machine).
		missed, err := ticker.Next(tk)
		require.NoError(t, err)
		require.Contains(t, []int{2, 3}, missed)
		// The next tick is back on the grid, not a period after the late one.
		_, err = ticker.Next(tk)
		require.NoError(t, err)
		el := time.Since(start)
		want := time.Duration(5+missed) * period
		require.GreaterOrEqual(t, el, want)
		require.Less(t, el, want+period, "the tick after a skip is on the grid")
		return nil
	})
}

func TestTickerResetAndStop(t *testing.T) {
	runPool(t, func(tk *Task) error {
		ticker, err := NewTicker(tk.Driver(), time.Hour)
		require.NoError(t, err)
		// Reset from another goroutine wakes the waiting Next onto the new grid.
		go func() {
			time.Sleep(5 * time.Millisecond)
			require.NoError(t, ticker.Reset(5*time.Millisecond))
		}()
		start := time.Now()
		_, err = ticker.Next(tk)
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
		_, err := NewTicker(p.Driver(), d)
		require.ErrorContains(t, err, "want a period > 0")
	}
	ticker, err := NewTicker(p.Driver(), time.Second)
	require.NoError(t, err)
	require.ErrorContains(t, ticker.Reset(0), "Ticker.Reset(0s): want a period > 0")
	ticker.Stop()
}
