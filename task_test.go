package iopool

import (
	"errors"
	"runtime"
	"testing"

	"github.com/stretchr/testify/require"
)

// A task that returns leaves its coroutine to the next task; one that
// panics or calls runtime.Goexit ends its own, and the next task gets a
// fresh one. Each task sees only its own end, and the pool's idle
// coroutines are ended when Run returns (requireNoLeaks counts them).
func TestCoroutineReusedOnlyAfterReturn(t *testing.T) {
	runPool(t, func(tk *Task) error {
		drv := tk.Driver()
		gid := func(*Task) (uint64, error) { id, _ := goroutineIDs(); return id, nil }

		first, err := Spawn(drv, "first", gid).Join(tk)
		require.NoError(t, err)
		second, err := Spawn(drv, "second", gid).Join(tk)
		require.NoError(t, err)
		require.Equal(t, first, second, "a returned task's coroutine runs the next task")

		var panicked uint64
		_, err = Spawn(drv, "panics", func(*Task) (uint64, error) {
			panicked, _ = goroutineIDs()
			panic("boom")
		}).Join(tk)
		require.Equal(t, second, panicked, "it ran on the idle coroutine")
		var pe *PanicError
		require.ErrorAs(t, err, &pe)
		third, err := Spawn(drv, "after the panic", gid).Join(tk)
		require.NoError(t, err)
		require.NotEqual(t, second, third, "a panic ends its coroutine")

		_, err = Spawn(drv, "exits", func(*Task) (uint64, error) {
			runtime.Goexit()
			return 0, nil
		}).Join(tk)
		require.ErrorIs(t, err, ErrGoexit)
		fourth, err := Spawn(drv, "after the Goexit", gid).Join(tk)
		require.NoError(t, err)
		require.NotEqual(t, third, fourth, "a Goexit ends its coroutine")

		// A reused coroutine carries nothing of the previous task over.
		v, err := Spawn(drv, "clean", func(t *Task) (string, error) {
			return t.Name(), errors.New("mine")
		}).Join(tk)
		require.Equal(t, "clean", v)
		require.EqualError(t, err, "mine")
		ok, err := Spawn(drv, "next", func(t *Task) (bool, error) { return t.Canceled(), nil }).Join(tk)
		require.NoError(t, err)
		require.False(t, ok)
		return nil
	})
}
