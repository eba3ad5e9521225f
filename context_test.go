//go:build linux

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
	parallel(t)
	runPool(t, func(tk *Task) error {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
		defer cancel()
		h := SpawnContext(tk.Driver(), ctx, "slow", func(t *Task) (int, error) {
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
	parallel(t)
	runPool(t, func(tk *Task) error {
		ctx, cancel := context.WithCancelCause(context.Background())
		seen := make(chan error, 1)
		h := SpawnContext(tk.Driver(), ctx, "worker", func(w *Task) (struct{}, error) {
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
		h2 := SpawnContext(tk.Driver(), ctx2, "plain", func(t *Task) (int, error) { return 0, t.Sleep(time.Hour) })
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
	parallel(t)
	type key struct{}
	runPool(t, func(tk *Task) error {
		done, cancel := context.WithCancelCause(context.Background())
		cancel(errShutdown{})
		ran := false
		_, err := SpawnContext(tk.Driver(), done, "never", func(t *Task) (int, error) { ran = true; return 1, nil }).Join(tk)
		require.ErrorIs(t, err, errShutdown{})
		require.ErrorIs(t, err, ErrCanceled)
		require.False(t, ran)

		ctx, cancel2 := context.WithCancel(context.WithValue(context.Background(), key{}, "trace-7"))
		h := SpawnContext(tk.Driver(), ctx, "values", func(t *Task) (string, error) {
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
		SpawnContext[int](p.Driver(), nil, "x", func(t *Task) (int, error) { return 0, nil })
	})
	require.False(t, errors.Is(ErrCanceled, errShutdown{}))
}

// A context canceled right after SpawnContext tied the task to it: the
// cancel must not finish the task before it has joined the pool's live
// list, or the task stays there for good and Close waits for it forever.
// The hook cancels at that moment and gives the loop time to run the task.
// Before the fix, the task was tied to the context before it was queued,
// and the pool kept counting a finished task as live.
func TestRegressionSpawnContextCanceledWhileSpawning(t *testing.T) {
	p, err := New()
	require.NoError(t, err)
	stop := NewOneshot[struct{}]()
	ran := make(chan error, 1)
	go func() {
		ran <- p.Run(func(tk *Task) error { _, err := stop.Recv(tk); return err })
	}()
	ctx, cancel := context.WithCancel(context.Background())
	testHookAfterFuncRegistered = func() {
		cancel()
		time.Sleep(20 * time.Millisecond) // the AfterFunc and the loop run now
	}
	defer func() { testHookAfterFuncRegistered = nil }()
	h := SpawnContext(p.Driver(), ctx, "racing", func(t *Task) (int, error) { return 0, t.Yield() })
	testHookAfterFuncRegistered = nil
	if _, err = h.Wait(); err != nil { // it may have finished before the cancel
		require.ErrorIs(t, err, ErrCanceled)
	}
	require.NoError(t, stop.Send(struct{}{}))
	require.NoError(t, <-ran)
	require.Zero(t, p.Stats().TasksLive, "no finished task is counted as live")
	closed := make(chan error, 1)
	go func() { closed <- p.Close() }()
	select {
	case err := <-closed:
		require.NoError(t, err)
	case <-time.After(5 * time.Second):
		t.Fatal("Close waits forever for a task that already finished")
	}
}
