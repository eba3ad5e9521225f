//go:build linux

package iopool

import (
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestSpawnJoinValueAndError(t *testing.T) {
	p := newTestPool(t)
	drv := p.Driver()
	require.NoError(t, p.Run(func(tk *Task) error {
		h := Spawn(drv, "answer", func(st *Task) (int, error) {
			require.NoError(t, st.Sleep(time.Millisecond))
			return 42, nil
		})
		v, err := h.Join(tk)
		require.NoError(t, err)
		require.Equal(t, 42, v)

		boom := Spawn(drv, "fails", func(t *Task) (string, error) { return "", errTest })
		_, err = boom.Join(tk)
		require.ErrorIs(t, err, errTest)
		return nil
	}))
}

func TestPanicInSpawnedTaskReachesJoin(t *testing.T) {
	p := newTestPool(t)
	require.NoError(t, p.Run(func(tk *Task) error {
		h := Spawn(p.Driver(), "panicky", func(t *Task) (int, error) { panic("kaboom") })
		_, err := h.Join(tk)
		var pe *PanicError
		require.ErrorAs(t, err, &pe)
		require.Equal(t, "kaboom", pe.Value)
		require.Equal(t, "panicky", pe.Task)
		require.Contains(t, string(pe.Stack), "TestPanicInSpawnedTaskReachesJoin")
		return nil
	}))
	// The pool keeps working after a task panicked.
	require.NoError(t, p.Run(func(tk *Task) error { return tk.Sleep(time.Millisecond) }))
}

// Regression: Result read h.value under h.mu while the task's goroutine
// wrote it without the lock (a data race under -race, and a value reported
// with done false). Result now publishes the value only once done.
func TestRegressionResultPolledFromAnotherGoroutineWhileTheTaskFinishes(t *testing.T) {
	p := newTestPool(t)
	drv := p.Driver()
	for range 20 {
		h := Spawn(drv, "answer", func(*Task) (int, error) { return 42, nil })
		got := make(chan error, 1)
		go func() {
			for {
				v, done, err := h.Result()
				switch {
				case !done && (v != 0 || err != nil):
					got <- fmt.Errorf("Result before done = (%d, %v), want (0, nil)", v, err)
					return
				case done:
					if v != 42 || err != nil {
						got <- fmt.Errorf("Result when done = (%d, %v), want (42, nil)", v, err)
					} else {
						got <- nil
					}
					return
				}
			}
		}()
		require.NoError(t, p.Run(func(tk *Task) error {
			_, err := h.Join(tk)
			return err
		}))
		require.NoError(t, <-got)
	}
}
