package iopool

import (
	"context"

	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestYieldLetsOtherTasksRun(t *testing.T) {
	p := newTestPool(t)
	var steps []string
	require.NoError(t, p.Run(func(tk *Task) error {
		h := Spawn(p.Driver(), "other", func(t *Task) (int, error) {
			steps = append(steps, "other")
			return 0, nil
		})
		steps = append(steps, "root-before")
		require.NoError(t, tk.Yield())
		steps = append(steps, "root-after")
		_, err := h.Join(tk)
		return err
	}))
	require.Equal(t, []string{"root-before", "other", "root-after"}, steps)
}

func TestCancelSleepingTask(t *testing.T) {
	p := newTestPool(t)
	require.NoError(t, p.Run(func(tk *Task) error {
		var ctxErr error
		h := Spawn(p.Driver(), "sleeper", func(st *Task) (int, error) {
			ctx := st.Context()
			err := st.Sleep(time.Hour)
			ctxErr = ctx.Err()
			// Later awaits fail too.
			_, err2 := Await[struct{}](st, &flagFuture{set: true})
			require.ErrorIs(t, err2, ErrCanceled)
			return 0, err
		})
		require.NoError(t, tk.Sleep(time.Millisecond))
		h.Cancel()
		_, err := h.Join(tk)
		require.ErrorIs(t, err, ErrCanceled)
		require.ErrorIs(t, err, context.Canceled)
		require.ErrorIs(t, ctxErr, context.Canceled)
		return nil
	}))
	require.Zero(t, p.timers.len(), "a canceled sleep disarms its timer")
}

func TestCancelBeforeStartDoesNotRun(t *testing.T) {
	p := newTestPool(t)
	ran := false
	h := Spawn(p.Driver(), "never", func(t *Task) (int, error) { ran = true; return 1, nil })
	h.Cancel()
	require.NoError(t, p.Run(func(tk *Task) error {
		_, err := h.Join(tk)
		require.ErrorIs(t, err, ErrCanceled)
		return nil
	}))
	require.False(t, ran)
}
