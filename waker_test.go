//go:build linux

package iopool

import (
	"errors"
	"fmt"

	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/stretchr/testify/require"
)

// Seed scenario: a waker stored by a pending future is woken from another
// goroutine and the task completes.
func TestWakerFromAnotherGoroutine(t *testing.T) {
	p := newTestPool(t)
	f := &flagFuture{}
	err := p.Run(func(tk *Task) error {
		go func() {
			time.Sleep(5 * time.Millisecond)
			f.fire()
		}()
		_, err := Await[struct{}](tk, f)
		return err
	})
	require.NoError(t, err)
	require.Equal(t, 2, f.polls, "the future is polled once pending and once after the wake")
	st := p.Stats()
	require.LessOrEqual(t, st.EventfdWrites, st.Sleeps, "at most one eventfd write per sleep")
}

// Regression: Handle.Poll stored a nil waker (NewPollContext(nil)) and the task's
// end called Wake on it, killing the process from the loop goroutine. Every
// future now ignores a nil waker; each is polled with one and then made
// ready, and nothing may crash.
func TestRegressionNilWakerIsIgnoredEverywhere(t *testing.T) {
	p := newTestPool(t)
	nilcx := NewPollContext(nil)
	within(t, 10*time.Second, func() {
		require.NoError(t, p.Run(func(tk *Task) error {
			drv := tk.Driver()
			h := Spawn(drv, "polled-with-nil", func(t *Task) (int, error) { return 1, t.Sleep(time.Millisecond) })
			_, err := h.Poll(nilcx)
			require.Equal(t, ErrPending, err)

			one := NewOneshot[int]()
			_, err = one.Poll(nilcx)
			require.Equal(t, ErrPending, err)
			ch := NewChan[int]()
			_, err = ch.Poll(nilcx)
			require.Equal(t, ErrPending, err)

			tm := drv.NewTimer()
			_, ok := tm.PollTimer(nilcx, time.Now().Add(time.Millisecond))
			require.False(t, ok)

			efd, err := unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
			require.NoError(t, err)
			defer unix.Close(efd)
			fr, err := drv.NewFdReady(efd)
			require.NoError(t, err)
			defer fr.Close()
			_, ok = fr.PollReady(nilcx, SlotRead, PollIn)
			require.False(t, ok)

			js := NewJoinSet[int](drv)
			js.Spawn("member", func(t *Task) (int, error) { return 2, t.Sleep(time.Millisecond) })
			_, err = js.Poll(nilcx)
			require.Equal(t, ErrPending, err)

			ticker, err := drv.NewTicker(time.Millisecond)
			require.NoError(t, err)
			defer ticker.Stop()
			_, err = ticker.Poll(nilcx)
			require.Equal(t, ErrPending, err)

			// Make every one of them ready, then let the loop deliver.
			require.NoError(t, one.Send(1))
			require.NoError(t, ch.Send(1))
			_, err = unix.Write(efd, []byte{1, 0, 0, 0, 0, 0, 0, 0})
			require.NoError(t, err)
			_, err = h.Join(tk)
			require.NoError(t, err)
			_, err = js.Next(tk)
			require.NoError(t, err)
			require.NoError(t, tk.Sleep(5*time.Millisecond))

			_, err = h.Poll(nilcx)
			require.NotEqual(t, ErrPending, err)
			_, err = one.Poll(nilcx)
			require.NotEqual(t, ErrPending, err)
			_, err = ch.Poll(nilcx)
			require.NotEqual(t, ErrPending, err)
			_, ok = tm.PollTimer(nilcx, time.Now())
			require.True(t, ok)
			_, ok = fr.PollReady(nilcx, SlotRead, PollIn)
			require.True(t, ok)
			return nil
		}))
	})
}

// Scenario 6, wakers: polling a timer, an FdReady or a Handle from two
// contexts whose wakers are WakerFuncs (an uncomparable type) works; the
// waker comparison used to panic with "comparing uncomparable type" while
// the pool's (or the op's) lock was held, and the next call hung.
func TestRegressionUncomparableWakersLeaveNoLockHeld(t *testing.T) {
	pair := socketpair(t)
	defer unix.Close(pair[0])
	defer unix.Close(pair[1])
	p, err := New()
	require.NoError(t, err)
	drv := p.Driver()
	fr, err := drv.NewFdReady(pair[0])
	require.NoError(t, err)
	h := Spawn(drv, "never", func(t *Task) (int, error) {
		_, err := Await[struct{}](t, PollFunc[struct{}](func(*PollContext) (struct{}, error) { return struct{}{}, ErrPending }))
		return 0, err
	})
	tm := drv.NewTimer()
	var woken atomic.Int32
	wakerA := NewPollContext(WakerFunc(func() { woken.Add(1) }))
	wakerB := NewPollContext(WakerFunc(func() { woken.Add(1) }))
	done := make(chan struct{})
	go func() {
		defer close(done)
		for _, cx := range []*PollContext{wakerA, wakerB, wakerA} {
			tm.PollTimer(cx, time.Now().Add(time.Hour))
			fr.PollReady(cx, SlotRead, PollIn)
			h.Poll(cx)
		}
	}()
	select {
	case <-done:
	case <-time.After(watchdog):
		t.Fatal("polling with a second WakerFunc hung")
	}
	closed := make(chan error, 1)
	go func() { closed <- errors.Join(fr.Close(), p.Close()) }()
	select {
	case err := <-closed:
		require.NoError(t, err)
	case <-time.After(watchdog):
		t.Fatal("Close hangs on a lock a waker comparison left held")
	}
	require.Positive(t, woken.Load(), "the WakerFunc pollers were woken by Close")
}

// A future reports failure one way: the error Poll returns when ready.
// Await returns it as is; a future that wraps ErrPending (pending taken for
// failed) panics with a message saying so; a task that returns ErrPending
// does not leave its joiner waiting forever.
func TestFutureErrorIsPollsLastResult(t *testing.T) {
	failure := errors.New("failed")
	runPool(t, func(tk *Task) error {
		polls := 0
		v, err := Await[int](tk, PollFunc[int](func(cx *PollContext) (int, error) {
			if polls++; polls == 1 {
				cx.Waker().Wake()
				return 0, ErrPending
			}
			return 7, failure
		}))
		require.Equal(t, 7, v)
		require.Same(t, failure, err)

		wrapped := PollFunc[int](func(*PollContext) (int, error) { return 0, fmt.Errorf("x: %w", ErrPending) })
		require.PanicsWithValue(t, "iopool: a future returned a wrapped ErrPending (x: iopool: future pending); return ErrPending itself while pending",
			func() { _, _ = Await[int](tk, wrapped) })

		h := Spawn(tk.Driver(), "returns-pending", func(*Task) (int, error) { return 0, ErrPending })
		_, err = h.Join(tk)
		require.Error(t, err)
		require.NotErrorIs(t, err, ErrPending)
		return nil
	})
}
