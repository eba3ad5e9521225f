//go:build linux

package iopool

import (
	"errors"
	"runtime"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// A task that returns leaves its coroutine to the next task; one that
// panics or calls runtime.Goexit ends its own, and the next task gets a
// fresh one. Each task sees only its own end, and the pool's idle
// coroutines are ended when Run returns (requireNoLeaks counts them).
func TestCoroutineReusedOnlyAfterReturn(t *testing.T) {
	parallel(t)
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

// Yield lets the tasks woken meanwhile run first, and yielding tasks take
// turns: a task woken while it runs is queued again after the others.
func TestYieldOrder(t *testing.T) {
	parallel(t)
	runPool(t, func(tk *Task) error {
		var order []string
		f := &flagFuture{}
		waiter := Spawn(tk.Driver(), "waiter", func(t *Task) (int, error) {
			_, err := Await[struct{}](t, f)
			order = append(order, "waiter")
			return 0, err
		})
		for f.waker == nil {
			require.NoError(t, tk.Yield())
		}
		f.fire() // the waiter is queued before the root yields
		require.NoError(t, tk.Yield())
		order = append(order, "root")
		_, err := waiter.Join(tk)
		require.NoError(t, err)
		require.Equal(t, []string{"waiter", "root"}, order)

		order = order[:0]
		turns := func(name string) func(t *Task) (int, error) {
			return func(t *Task) (int, error) {
				for range 3 {
					order = append(order, name)
					if err := t.Yield(); err != nil {
						return 0, err
					}
				}
				return 0, nil
			}
		}
		a, b := Spawn(tk.Driver(), "a", turns("a")), Spawn(tk.Driver(), "b", turns("b"))
		_, errA := a.Join(tk)
		_, errB := b.Join(tk)
		require.NoError(t, errA)
		require.NoError(t, errB)
		require.Equal(t, []string{"a", "b", "a", "b", "a", "b"}, order)
		return nil
	})
}

// Tasks that never stop yielding keep the loop in cycles that skip its
// lock; timers and fd events still come through, and Stats counts every
// cycle and every wake.
func TestYieldingTasksDoNotStarveTimersOrFds(t *testing.T) {
	p := runPool(t, func(tk *Task) error {
		stop := false
		spins := 0
		spinner := Spawn(tk.Driver(), "spinner", func(t *Task) (int, error) {
			for !stop {
				spins++
				if err := t.Yield(); err != nil {
					return 0, err
				}
			}
			return 0, nil
		})
		fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
		require.NoError(t, err)
		defer unix.Close(fds[1])
		s, err := tk.Driver().NewSocket(fds[0])
		require.NoError(t, err)
		defer s.Close()
		reader := Spawn(tk.Driver(), "reader", func(t *Task) (int, error) {
			var buf [1]byte
			return s.Read(t, buf[:])
		})
		require.NoError(t, tk.Sleep(2*time.Millisecond), "a timer fires while a task spins")
		_, err = unix.Write(fds[1], []byte{1})
		require.NoError(t, err)
		n, err := reader.Join(tk)
		require.NoError(t, err, "an fd event comes through while a task spins")
		require.Equal(t, 1, n)
		stop = true
		_, err = spinner.Join(tk)
		require.NoError(t, err)
		require.Greater(t, spins, 10, "the spinner kept the loop busy")
		return nil
	})
	st := p.Stats()
	require.Greater(t, st.Cycles, uint64(10))
	require.Greater(t, st.Wakes, uint64(10), "the spinner's wakes are counted")
}
