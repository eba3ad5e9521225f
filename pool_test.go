//go:build linux

package iopool

import (
	"errors"

	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestPanicInRootRepanicsFromRun(t *testing.T) {
	p := newTestPool(t)
	defer func() {
		v := recover()
		pe, ok := v.(*PanicError)
		require.True(t, ok, "Run re-panics with a *PanicError, got %#v", v)
		require.Equal(t, "root down", pe.Value)
		// The pool is usable again.
		require.NoError(t, p.Run(func(tk *Task) error { return nil }))
	}()
	_ = p.Run(func(tk *Task) error { panic("root down") })
}

func TestTasksOutliveRootAndContinueOnNextRun(t *testing.T) {
	p := newTestPool(t)
	var counter atomic.Int32
	var h *Handle[int]
	require.NoError(t, p.Run(func(tk *Task) error {
		h = Spawn(p.Driver(), "survivor", func(t *Task) (int, error) {
			for range 3 {
				if err := t.Sleep(time.Millisecond); err != nil {
					return 0, err
				}
				counter.Add(1)
			}
			return int(counter.Load()), nil
		})
		return nil
	}))
	require.Less(t, counter.Load(), int32(3))
	require.EqualValues(t, 1, p.Stats().TasksLive)
	require.NoError(t, p.Run(func(tk *Task) error {
		v, err := h.Join(tk)
		require.Equal(t, 3, v)
		return err
	}))
	require.Zero(t, p.Stats().TasksLive)
}

func TestCloseCancelsLeftoverTasks(t *testing.T) {
	p, err := New()
	require.NoError(t, err)
	var sawCancel atomic.Bool
	h := Spawn(p.Driver(), "forever", func(t *Task) (int, error) {
		err := t.Sleep(time.Hour)
		sawCancel.Store(errors.Is(err, ErrCanceled))
		return 7, err
	})
	require.NoError(t, p.Run(func(tk *Task) error { return tk.Yield() }))
	require.NoError(t, p.Close())
	require.True(t, sawCancel.Load(), "the task ran to completion with ErrCanceled")
	v, err := h.Wait()
	require.Equal(t, 7, v)
	require.ErrorIs(t, err, ErrCanceled)
	require.NoError(t, p.Close(), "Close twice is a no-op")
}

func TestCloseWhileRunReturnsErrClosed(t *testing.T) {
	p, err := New()
	require.NoError(t, err)
	started := make(chan struct{})
	runErr := make(chan error, 1)
	var rootSaw error
	go func() {
		runErr <- p.Run(func(tk *Task) error {
			close(started)
			rootSaw = tk.Sleep(time.Hour)
			return rootSaw
		})
	}()
	<-started
	time.Sleep(2 * time.Millisecond)
	require.NoError(t, p.Close())
	require.ErrorIs(t, <-runErr, ErrClosed)
	require.ErrorIs(t, rootSaw, ErrCanceled)
}

func TestRunMisuse(t *testing.T) {
	p := newTestPool(t)
	require.ErrorIs(t, p.Run(nil), ErrNilTask)

	release := make(chan struct{})
	inside := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		done <- p.Run(func(tk *Task) error {
			close(inside)
			_, err := BlockOnTask(tk, release)
			return err
		})
	}()
	<-inside
	require.ErrorIs(t, p.Run(func(tk *Task) error { return nil }), ErrRunning)
	close(release)
	require.NoError(t, <-done, "the first Run keeps running")

	q, err := New()
	require.NoError(t, err)
	require.NoError(t, q.Close())
	require.ErrorIs(t, q.Run(func(tk *Task) error { return nil }), ErrClosed)
	h := Spawn(q.Driver(), "late", func(t *Task) (int, error) { return 1, nil })
	_, err = h.Wait()
	require.ErrorIs(t, err, ErrClosed)
}

func TestCloseFromOwnTaskPanics(t *testing.T) {
	p := newTestPool(t)
	require.NoError(t, p.Run(func(tk *Task) error {
		require.PanicsWithValue(t, "iopool: Pool.Close called from one of the pool's own tasks; return from the root task instead",
			func() { _ = p.Close() })
		return nil
	}))
}
