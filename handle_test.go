package iopool

import (
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
