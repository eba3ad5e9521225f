package iopool

import (
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// A task that never blocks (a Yield loop, or io_uring NOPs that complete
// inside the enter) keeps the loop out of epoll_wait; an fd event must still
// reach its waiter while that task spins.
func TestBusyTaskDoesNotStarveFdEvents(t *testing.T) {
	for _, mode := range []string{"yield", "uring"} {
		t.Run(mode, func(t *testing.T) {
			var pipe [2]int
			require.NoError(t, unix.Pipe2(pipe[:], unix.O_NONBLOCK|unix.O_CLOEXEC))
			defer unix.Close(pipe[0])
			defer unix.Close(pipe[1])
			p := runPool(t, func(tk *Task) error {
				var u *Uring
				if mode == "uring" {
					u = requireUring(t, tk.Driver())
				}
				var stop, watchdog atomic.Bool
				spins := Spawn(tk.Driver(), "busy", func(t *Task) (int, error) {
					n := 0
					for !stop.Load() {
						var err error
						if u != nil {
							err = u.Nop(t)
						} else {
							err = t.Yield()
						}
						if err != nil {
							return n, err
						}
						n++
					}
					return n, nil
				})
				// Bounds the test if the event is starved: stopping the
				// spinner lets the loop sleep, and the event then arrives.
				guard := time.AfterFunc(10*time.Second, func() { watchdog.Store(true); stop.Store(true) })
				defer guard.Stop()
				fr, err := tk.Driver().NewFdReady(pipe[0])
				require.NoError(t, err)
				defer fr.Close()
				go func() {
					time.Sleep(20 * time.Millisecond) // the spinner is running by now
					_, _ = unix.Write(pipe[1], []byte{1})
				}()
				ev, err := fr.WaitReady(tk, SlotRead, PollIn)
				require.NoError(t, err)
				require.NotZero(t, ev&PollIn)
				require.False(t, watchdog.Load(), "the fd event arrived only after the busy task stopped")
				stop.Store(true)
				n, err := spins.Join(tk)
				require.NoError(t, err)
				require.Positive(t, n)
				return nil
			})
			require.Zero(t, p.Stats().FdsRegistered)
		})
	}
}
