//go:build linux

package iopool

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// Next returns the tasks in the order they finish, not the order spawned.
func TestJoinSetNextInCompletionOrder(t *testing.T) {
	runPool(t, func(tk *Task) error {
		set := NewJoinSet[int](tk.Driver())
		_, err := set.Next(tk)
		require.ErrorIs(t, err, ErrJoinSetEmpty)
		for _, ms := range []int{30, 10, 20, 0} {
			set.Spawn("sleep", func(t *Task) (int, error) {
				return ms, t.Sleep(time.Duration(ms) * time.Millisecond)
			})
		}
		set.Spawn("fails", func(t *Task) (int, error) {
			return -1, errors.New("boom")
		})
		require.Equal(t, 5, set.Len())
		var got []int
		for set.Len() > 0 {
			j, err := set.Next(tk)
			require.NoError(t, err)
			if j.Value == -1 {
				require.EqualError(t, j.Err, "boom")
				require.Equal(t, "fails", j.Task.Name())
				continue
			}
			require.NoError(t, j.Err)
			got = append(got, j.Value)
		}
		require.Equal(t, []int{0, 10, 20, 30}, got)
		_, err = set.Next(tk)
		require.ErrorIs(t, err, ErrJoinSetEmpty)
		return nil
	})
}

// CancelAll and Close cancel the running tasks, which Next still returns;
// after Close, spawned tasks are canceled before they run.
func TestJoinSetCancelAllAndClose(t *testing.T) {
	parallel(t)
	runPool(t, func(tk *Task) error {
		set := NewJoinSet[string](tk.Driver())
		for range 3 {
			set.Spawn("forever", func(t *Task) (string, error) { return "", t.Sleep(time.Hour) })
		}
		set.Spawn("quick", func(t *Task) (string, error) { return "done", nil })
		j, err := set.Next(tk)
		require.NoError(t, err)
		require.Equal(t, "done", j.Value)
		set.CancelAll()
		for range 3 {
			j, err := set.Next(tk)
			require.NoError(t, err)
			require.ErrorIs(t, j.Err, ErrCanceled)
		}
		require.Zero(t, set.Len())

		set.Spawn("forever", func(t *Task) (string, error) { return "", t.Sleep(time.Hour) })
		set.Close()
		ran := false
		set.Spawn("late", func(t *Task) (string, error) { ran = true; return "", nil })
		for set.Len() > 0 {
			j, err := set.Next(tk)
			require.NoError(t, err)
			require.ErrorIs(t, j.Err, ErrCanceled, j.Task.Name())
		}
		require.False(t, ran, "a task spawned on a closed set does not run")
		return nil
	})
}

// Closing the pool cancels the set's tasks; their handles resolve.
func TestJoinSetCanceledByPoolClose(t *testing.T) {
	parallel(t)
	requireNoLeaks(t)
	p, err := New()
	require.NoError(t, err)
	set := NewJoinSet[int](p.Driver())
	var hs []*Handle[int]
	for range 5 {
		hs = append(hs, set.Spawn("forever", func(t *Task) (int, error) { return 0, t.Sleep(time.Hour) }))
	}
	require.NoError(t, p.Run(func(tk *Task) error { return tk.Yield() }))
	require.NoError(t, p.Close())
	for _, h := range hs {
		_, done, err := h.Result()
		require.True(t, done)
		require.ErrorIs(t, err, ErrCanceled)
	}
	require.Equal(t, 5, set.Len(), "finished tasks wait in the set for Next")
	h := set.Spawn("after close", func(t *Task) (int, error) { return 1, nil })
	_, err = h.Wait()
	require.ErrorIs(t, err, ErrClosed)
}

// An empty JoinSet is pending in Poll, so it never wins a Select: a loop
// selecting on it and a channel without checking Len gets the channel's
// value, never a zero Joined with a nil Task. A task spawned into the set
// later wakes the select when it finishes; Next on the empty set still
// returns ErrJoinSetEmpty.
func TestRegressionEmptyJoinSetIsPendingInSelect(t *testing.T) {
	runPool(t, func(tk *Task) error {
		set := NewJoinSet[int](tk.Driver())
		ch := NewChan[string]()
		_, err := set.Poll(NewPollContext(nil))
		require.Equal(t, ErrPending, err, "an empty set is pending")

		require.NoError(t, ch.Send("msg"))
		var j Joined[int]
		var msg string
		i, err := Select(tk, Case[Joined[int]](set, &j), Case(ch, &msg))
		require.NoError(t, err)
		require.Equal(t, 1, i, "the empty set must not win the select")
		require.Equal(t, "msg", msg)

		// The select waits on the empty set; a task spawned into it from
		// another task wakes it when it finishes.
		Spawn(tk.Driver(), "spawner", func(*Task) (struct{}, error) {
			set.Spawn("late", func(t *Task) (int, error) { return 5, t.Yield() })
			return struct{}{}, nil
		})
		i, err = Select(tk, Case[Joined[int]](set, &j), Case(ch, &msg))
		require.NoError(t, err)
		require.Equal(t, 0, i)
		require.NotNil(t, j.Task)
		require.Equal(t, "late", j.Task.Name())
		require.Equal(t, 5, j.Value)

		_, err = set.Next(tk)
		require.ErrorIs(t, err, ErrJoinSetEmpty)
		_, err = set.Next(tk)
		require.ErrorIs(t, err, ErrJoinSetEmpty, "Next keeps returning ErrJoinSetEmpty")
		return nil
	})
}

// Issue 19, bug 4: Spawn on a closed set, from a plain goroutine, queued the
// task before it looked at the closed flag, so the loop could run the task
// before Spawn canceled it, and the task's own result came back instead of
// ErrCanceled. The test widens that window deterministically: it holds the
// set's lock, so a Spawn that has queued its task stops there, and lets the
// loop cycle before releasing it. A task spawned on a closed set never runs.
func TestRegressionJoinSetSpawnAfterCloseNeverRuns(t *testing.T) {
	requireNoLeaks(t)
	p, err := New()
	require.NoError(t, err)
	defer func() { require.NoError(t, p.Close()) }()
	set := NewJoinSet[int](p.Driver())
	set.Close()

	var ran atomic.Bool
	set.mu.Lock()
	spawned := make(chan *Handle[int], 1)
	go func() {
		spawned <- set.Spawn("late", func(*Task) (int, error) { ran.Store(true); return 1, nil })
	}()
	// Wait until the goroutine's Spawn has created its task (it then waits
	// for the set's lock), and let the loop run whatever is queued.
	deadline := time.Now().Add(5 * time.Second)
	for p.Stats().TasksSpawned == 0 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	require.NotZero(t, p.Stats().TasksSpawned, "Spawn created no task")
	require.NoError(t, p.Run(func(tk *Task) error {
		for range 10 {
			if err := tk.Yield(); err != nil {
				return err
			}
		}
		return nil
	}))
	set.mu.Unlock()

	v, err := (<-spawned).Wait()
	require.ErrorIs(t, err, ErrCanceled)
	require.Zero(t, v)
	require.False(t, ran.Load(), "a task spawned on a closed set ran")
	require.Equal(t, 1, set.Len(), "the canceled task waits in the set for Next")
}

// A cancel-on-error set cancels the others when one task fails, with the
// failure as the cause: their awaits and their Context see it, a task
// spawned afterwards never runs, Err reports the first error, and Next
// still returns every task.
func TestJoinSetCancelOnErrorCancelsTheRestWithTheCause(t *testing.T) {
	parallel(t)
	boom := errors.New("boom")
	runPool(t, func(tk *Task) error {
		set := NewJoinSetCancelOnError[string](tk.Driver())
		require.NoError(t, set.Err())
		ctxCauses := NewChan[error]()
		for range 3 {
			set.Spawn("sleeper", func(t *Task) (string, error) {
				ctx := t.Context()
				err := t.Sleep(time.Hour)
				<-ctx.Done()
				_ = ctxCauses.Send(context.Cause(ctx))
				return "", err
			})
		}
		set.Spawn("fails", func(t *Task) (string, error) {
			if err := t.Yield(); err != nil {
				return "", err
			}
			return "", boom
		})

		j, err := set.Next(tk)
		require.NoError(t, err)
		require.Equal(t, "fails", j.Task.Name(), "the failing task finishes first")
		require.Same(t, boom, j.Err)
		require.Same(t, boom, set.Err())

		for range 3 {
			j, err := set.Next(tk)
			require.NoError(t, err)
			require.Equal(t, "sleeper", j.Task.Name())
			require.ErrorIs(t, j.Err, ErrCanceled)
			require.ErrorIs(t, j.Err, boom, "the first error is the cause")
			require.Contains(t, j.Err.Error(), `"fails" failed: boom`)
			cause, err := ctxCauses.Recv(tk)
			require.NoError(t, err)
			require.ErrorIs(t, cause, boom, "the task's Context carries the cause")
		}

		ran := false
		h := set.Spawn("late", func(t *Task) (string, error) { ran = true; return "ran", nil })
		_, err = h.Join(tk)
		require.ErrorIs(t, err, ErrCanceled)
		require.ErrorIs(t, err, boom)
		require.False(t, ran, "a task spawned after the failure never runs")
		require.Same(t, boom, set.Err(), "the first error stays")
		return nil
	})
}

// A plain JoinSet lets the others run when one fails, and Err stays nil.
func TestJoinSetWithoutCancelOnErrorLetsTheOthersFinish(t *testing.T) {
	parallel(t)
	runPool(t, func(tk *Task) error {
		set := NewJoinSet[int](tk.Driver())
		set.Spawn("fails", func(*Task) (int, error) { return 0, errors.New("boom") })
		set.Spawn("slow", func(t *Task) (int, error) { return 7, t.Sleep(5 * time.Millisecond) })
		j, err := set.Next(tk)
		require.NoError(t, err)
		require.EqualError(t, j.Err, "boom")
		j, err = set.Next(tk)
		require.NoError(t, err)
		require.NoError(t, j.Err)
		require.Equal(t, 7, j.Value)
		require.NoError(t, set.Err())
		return nil
	})
}
