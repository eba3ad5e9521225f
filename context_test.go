package iopool

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// A context that hits its deadline cancels the task, and the error says
// both: canceled, and why.
func TestSpawnContextDeadlineSurvives(t *testing.T) {
	runPool(t, func(tk *Task) error {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
		defer cancel()
		h := SpawnContext(ctx, tk.Driver(), "slow", func(t *Task) (int, error) {
			return 0, t.Sleep(time.Hour)
		})
		_, err := h.Join(tk)
		require.ErrorIs(t, err, ErrCanceled)
		require.ErrorIs(t, err, context.DeadlineExceeded)
		require.ErrorIs(t, err, context.Canceled, "like every canceled task's error")
		require.EqualError(t, err, "iopool: task canceled: context deadline exceeded")
		return nil
	})
}

type errShutdown struct{}

func (errShutdown) Error() string { return "shutting down" }

// A cause given to context.CancelCauseFunc reaches the task's awaits; a
// plain cancel gives ErrCanceled.
func TestSpawnContextCause(t *testing.T) {
	runPool(t, func(tk *Task) error {
		ctx, cancel := context.WithCancelCause(context.Background())
		seen := make(chan error, 1)
		h := SpawnContext(ctx, tk.Driver(), "worker", func(w *Task) (struct{}, error) {
			err := w.Sleep(time.Hour)
			seen <- err
			require.ErrorIs(t, w.Yield(), errShutdown{}, "later awaits return the cause too")
			return struct{}{}, err
		})
		require.NoError(t, tk.Yield())
		cancel(errShutdown{})
		_, err := h.Join(tk)
		require.ErrorIs(t, err, errShutdown{})
		require.ErrorIs(t, err, ErrCanceled)
		require.ErrorIs(t, <-seen, errShutdown{})

		ctx2, cancel2 := context.WithCancel(context.Background())
		h2 := SpawnContext(ctx2, tk.Driver(), "plain", func(t *Task) (int, error) { return 0, t.Sleep(time.Hour) })
		require.NoError(t, tk.Yield())
		cancel2()
		_, err = h2.Join(tk)
		require.Equal(t, ErrCanceled, err, "a plain cancel is plain ErrCanceled")
		return nil
	})
}

// A context already done cancels the task before it runs; the task's
// Context carries the values of the one given; a finished task is no longer
// registered with its context.
func TestSpawnContextDoneValuesAndRelease(t *testing.T) {
	type key struct{}
	runPool(t, func(tk *Task) error {
		done, cancel := context.WithCancelCause(context.Background())
		cancel(errShutdown{})
		ran := false
		_, err := SpawnContext(done, tk.Driver(), "never", func(t *Task) (int, error) { ran = true; return 1, nil }).Join(tk)
		require.ErrorIs(t, err, errShutdown{})
		require.ErrorIs(t, err, ErrCanceled)
		require.False(t, ran)

		ctx, cancel2 := context.WithCancel(context.WithValue(context.Background(), key{}, "trace-7"))
		h := SpawnContext(ctx, tk.Driver(), "values", func(t *Task) (string, error) {
			v, _ := t.Context().Value(key{}).(string)
			return v, nil
		})
		v, err := h.Join(tk)
		require.NoError(t, err)
		require.Equal(t, "trace-7", v)
		cancel2()
		require.False(t, h.Task().Canceled(), "the finished task's AfterFunc was unregistered")
		return nil
	})
	p := newTestPool(t)
	require.PanicsWithValue(t, "iopool: SpawnContext called with a nil context.Context (use context.Background())", func() {
		//lint:ignore SA1012 the nil context is the misuse under test
		SpawnContext[int](nil, p.Driver(), "x", func(t *Task) (int, error) { return 0, nil })
	})
	require.False(t, errors.Is(ErrCanceled, errShutdown{}))
}
