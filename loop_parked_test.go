package iopool

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// An unlocked loop that woke a goroutine sleeps parked in the Go runtime's
// netpoller on a duplicate of its epoll fd (waitParked): the goroutine and
// the task keep answering each other through it, a timed sleep taken
// there never ends early, and Close releases the duplicate (requireNoLeaks
// counts the fds).
func TestUnlockedLoopParksInTheNetpollerAfterWakingAGoroutine(t *testing.T) {
	p := newTestPool(t)
	require.NoError(t, p.Start())
	ping, pong := NewChan[int](), NewChan[int]()
	slept := make(chan time.Duration, 1)
	h := Spawn(p.Driver(), "answer", func(tk *Task) (int, error) {
		for i := 0; ; i++ {
			v, err := ping.Recv(tk)
			if err == ErrChannelClosed {
				return i, nil
			}
			if err != nil {
				return i, err
			}
			if v == 50 {
				// Woken goroutines in this cycle: the loop sleeps parked,
				// and must wake for the timer, not before it.
				start := time.Now()
				if err := tk.Sleep(5 * time.Millisecond); err != nil {
					return i, err
				}
				slept <- time.Since(start)
			}
			_ = pong.Send(v)
		}
	})
	within(t, watchdog, func() {
		for i := range 100 {
			require.NoError(t, ping.Send(i))
			v, err := pong.RecvWait()
			require.NoError(t, err)
			require.Equal(t, i, v)
		}
		ping.Close()
		n, err := h.Wait()
		require.NoError(t, err)
		require.Equal(t, 100, n)
	})
	require.GreaterOrEqual(t, <-slept, 5*time.Millisecond, "a sleep ended early")
	require.NoError(t, p.Close())
	require.NotNil(t, p.parked, "the loop never parked in the netpoller")
}
