//go:build linux

package iopool

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// Driver.After times out a Select: it wins when nothing else is ready,
// loses to a ready case (and is then stopped), and fires at once for a
// non-positive duration.
func TestSelectTimesOutWithAfter(t *testing.T) {
	runPool(t, func(tk *Task) error {
		ch := NewChan[string]()
		var msg string
		var at time.Time

		start := time.Now()
		timeout := tk.Driver().After(5 * time.Millisecond)
		i, err := Select(tk, Case(ch, &msg), Case[time.Time](timeout, &at))
		require.NoError(t, err)
		require.Equal(t, 1, i, "nothing was sent: the timeout wins")
		require.GreaterOrEqual(t, at.Sub(start), 5*time.Millisecond, "never early")

		require.NoError(t, ch.Send("hi"))
		timeout = tk.Driver().After(time.Hour)
		i, err = Select(tk, Case(ch, &msg), Case[time.Time](timeout, nil))
		require.NoError(t, err)
		require.Equal(t, 0, i)
		require.Equal(t, "hi", msg)
		timeout.Stop()
		tk.pool.mu.Lock()
		armed := tk.pool.timers.len()
		tk.pool.mu.Unlock()
		require.Zero(t, armed, "a stopped timer leaves the heap")

		i, err = Select(tk, Case(ch, &msg), Case[time.Time](tk.Driver().After(0), nil))
		require.NoError(t, err)
		require.Equal(t, 1, i, "After(0) is ready at once")
		return nil
	})
}

// Select returns the first ready case and leaves the others intact: the
// channel's value stays queued and the handle's result stays for Join.
func TestSelectFirstReadyOfDifferentTypes(t *testing.T) {
	runPool(t, func(tk *Task) error {
		ch := NewChan[string]()
		h := Spawn(tk.Driver(), "slow", func(t *Task) (int, error) { return 7, t.Sleep(30 * time.Millisecond) })
		timer := tk.Driver().NewTimer()
		timer.SetDeadline(time.Now().Add(10 * time.Millisecond))

		var msg string
		var v int
		var at time.Time
		i, err := Select(tk, Case(ch, &msg), Case(h, &v), Case(timer, &at))
		require.NoError(t, err)
		require.Equal(t, 2, i, "the timer fires first")
		require.False(t, at.IsZero())

		i, err = Select(tk, Case(ch, &msg), Case(h, &v))
		require.NoError(t, err)
		require.Equal(t, 1, i, "then the task finishes")
		require.Equal(t, 7, v)

		require.NoError(t, ch.Send("hi"))
		i, err = Select(tk, Case(ch, &msg), Case[int](h, nil))
		require.NoError(t, err)
		require.Equal(t, 0, i, "an earlier ready case wins")
		require.Equal(t, "hi", msg)
		require.Zero(t, ch.Len())

		// A pending channel case takes nothing: the value sent later is
		// still there after another case won.
		timer.SetDeadline(time.Now().Add(5 * time.Millisecond))
		i, err = Select(tk, Case(ch, &msg), Case(timer, nil))
		require.NoError(t, err)
		require.Equal(t, 1, i)
		require.NoError(t, ch.Send("kept"))
		got, err := ch.Recv(tk)
		require.NoError(t, err)
		require.Equal(t, "kept", got)
		v, err = h.Join(tk)
		require.NoError(t, err)
		require.Equal(t, 7, v, "the handle still has its result")

		// Canceled while selecting.
		go func() { time.Sleep(5 * time.Millisecond); tk.Cancel() }()
		i, err = Select(tk, Case(ch, &msg))
		require.ErrorIs(t, err, ErrCanceled)
		require.Equal(t, -1, i)
		return nil
	})
	require.PanicsWithValue(t, "iopool: Case called with a nil future", func() { Case[int](nil, nil) })
}

// The case that wins a Select brings its future's error: a closed Chan's
// case is ready with ErrChannelClosed, and Select returns its index with it.
func TestSelectReturnsTheReadyCaseError(t *testing.T) {
	runPool(t, func(tk *Task) error {
		ch := NewChan[string]()
		ch.Close()
		var msg string
		timeout := tk.Driver().After(time.Hour)
		defer timeout.Stop()
		i, err := Select(tk, Case[time.Time](timeout, nil), Case(ch, &msg))
		require.Equal(t, 1, i)
		require.ErrorIs(t, err, ErrChannelClosed)
		return nil
	})
}
