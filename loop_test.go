//go:build linux

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

// The loop stops when done reports true, except while closing: then only
// once every task was canceled and none is left.
func TestLoopStopsWhenDoneOrClosedAndDrained(t *testing.T) {
	parallel(t)
	for _, tc := range []struct {
		closing, canceledAll, done bool
		live                       int
		stop, finished             bool
	}{
		{done: false, stop: false, finished: true},
		{done: true, stop: true, finished: true},
		{closing: true, done: true, live: 0, stop: false},
		{closing: true, canceledAll: true, live: 1, done: true, stop: false},
		{closing: true, canceledAll: true, live: 0, stop: true, finished: false},
	} {
		var p Pool
		p.closing, p.canceledAll, p.live.n = tc.closing, tc.canceledAll, tc.live
		stop, finished := p.stopLocked(func() bool { return tc.done })
		require.Equal(t, tc.stop, stop, "%+v", tc)
		if stop {
			require.Equal(t, tc.finished, finished, "%+v", tc)
		}
	}
}

// A cycle runs the tasks woken since the last one in wake order, then the
// tasks woken while they ran (a Yield lets the others go first), and frees
// the registrations the last dispatch deferred; those deferred by the next
// dispatch wait for the cycle after.
func TestCycleTakesReadyThenRequeuedAndDefersFrees(t *testing.T) {
	parallel(t)
	var p Pool
	a, b, c := &Task{name: "a"}, &Task{name: "b"}, &Task{name: "c"}
	closed, closedLater := &fdRegistration{}, &fdRegistration{}
	p.ready = []*Task{a, b}
	p.hasReady.Store(true)
	p.requeue = []*Task{c}
	p.toDelete = []*fdRegistration{closed}
	p.deferFreesLocked()
	require.Empty(t, p.toDelete)

	freeing := p.takeRunQueueLocked()
	require.Equal(t, []*Task{a, b, c}, p.runq)
	require.Empty(t, p.ready)
	require.Empty(t, p.requeue)
	require.False(t, p.hasReady.Load())
	require.Equal(t, []*fdRegistration{closed}, freeing)
	require.Empty(t, p.freeing, "taken: the next dispatch's frees start afresh")

	p.toDelete = append(p.toDelete, closedLater)
	p.deferFreesLocked()
	require.Equal(t, []*fdRegistration{closedLater}, p.freeing)
}
