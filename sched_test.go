//go:build linux

package iopool

import (
	"context"
	"runtime"
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

// Tasks that panic or call runtime.Goexit in the middle of one run queue
// end alone: the tasks queued after them in the same cycle still run (the
// loop recovers an escape once per batch, not once per resume), and each
// one's Join sees its own end.
func TestEscapesInOneRunQueueEndOnlyTheirTask(t *testing.T) {
	p := newTestPool(t)
	var ran []string
	require.NoError(t, p.Run(func(tk *Task) error {
		drv := tk.Driver()
		task := func(name string, end func()) *Handle[string] {
			return Spawn(drv, name, func(t *Task) (string, error) {
				ran = append(ran, name)
				end()
				return name, nil
			})
		}
		// Spawned back to back: one ready queue, one cycle.
		hs := []*Handle[string]{
			task("first", func() {}),
			task("panics", func() { panic("boom") }),
			task("middle", func() {}),
			task("goexits", runtime.Goexit),
			task("last", func() {}),
		}
		for _, h := range hs {
			v, err := h.Join(tk)
			switch name := h.Task().Name(); name {
			case "panics":
				var pe *PanicError
				require.ErrorAs(t, err, &pe)
				require.Equal(t, "boom", pe.Value)
			case "goexits":
				require.ErrorIs(t, err, ErrGoexit)
			default:
				require.NoError(t, err)
				require.Equal(t, name, v)
			}
		}
		return nil
	}))
	require.Equal(t, []string{"first", "panics", "middle", "goexits", "last"}, ran)
	require.Zero(t, p.Stats().TasksLive)
}

// Tasks that only yield run as quick cycles of the run queue itself: they
// keep their order, round after round, and a timer still fires among them
// (the loop's full cycle comes at least every harvestEvery cycles).
func TestQuickCyclesKeepOrderAndLetTimersFire(t *testing.T) {
	p := newTestPool(t)
	var order []int
	require.NoError(t, p.Run(func(tk *Task) error {
		timer := Spawn(tk.Driver(), "sleeper", func(t *Task) (int, error) {
			return 0, t.Sleep(time.Millisecond)
		})
		var hs []*Handle[int]
		for i := range 3 {
			hs = append(hs, Spawn(tk.Driver(), "yielder", func(t *Task) (int, error) {
				for !timer.Task().finished { // loop-only field, read on the loop
					order = append(order, i)
					if err := t.Yield(); err != nil {
						return 0, err
					}
				}
				return 0, nil
			}))
		}
		for _, h := range hs {
			if _, err := h.Join(tk); err != nil {
				return err
			}
		}
		_, err := timer.Join(tk)
		return err
	}))
	require.GreaterOrEqual(t, len(order), 3)
	for i, v := range order {
		require.Equal(t, i%3, v, "round-robin order at %d", i)
	}
}
