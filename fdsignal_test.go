//go:build linux

package iopool

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/iopool/iopool/internal/sys"
)

// Seed scenario: an eventfd signaled from another goroutine wakes a task
// waiting on it.
func TestFdSignalRecvOnEventfdSignaledFromAnotherGoroutine(t *testing.T) {
	runPool(t, func(tk *Task) error {
		efd, err := unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
		require.NoError(t, err)
		defer unix.Close(efd)
		w, err := tk.Driver().NewFdSignal(efd, 8)
		require.NoError(t, err)
		defer w.Close()
		for range 3 {
			go func() {
				time.Sleep(time.Millisecond)
				sys.EventfdSignal(nil, efd)
			}()
			require.NoError(t, w.Recv(tk))
		}
		// The signal was consumed: the counter is zero again.
		_, err = unix.Read(efd, make([]byte, 8))
		require.ErrorIs(t, err, unix.EAGAIN)
		_, err = tk.Driver().NewFdSignal(efd, 9)
		require.ErrorContains(t, err, "readSize 9")
		return nil
	})
}

// Scenario 2: a task waiting in Recv when its FdSignal is closed returns
// ErrClosed. It used to spin inside Poll (PollErr, then EAGAIN, forever),
// holding the loop at 100 % CPU where not even Cancel could reach it.
func TestRegressionWaitClosedWhileWaitingReturnsErrClosed(t *testing.T) {
	efd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	require.NoError(t, err)
	defer unix.Close(efd)
	p, err := New()
	require.NoError(t, err)
	done := make(chan error, 1)
	go func() {
		done <- p.Run(func(tk *Task) error {
			w, err := tk.Driver().NewFdSignal(efd, 8)
			if err != nil {
				return err
			}
			waiter := Spawn(tk.Driver(), "waiter", func(t *Task) (struct{}, error) {
				return struct{}{}, w.Recv(t)
			})
			if err := tk.Yield(); err != nil { // the waiter waits
				return err
			}
			if err := w.Close(); err != nil {
				return err
			}
			_, err = waiter.Join(tk)
			if !errors.Is(err, ErrClosed) {
				return fmt.Errorf("Recv after Close: got %v, want ErrClosed", err)
			}
			return nil
		})
	}()
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(watchdog):
		t.Fatal("the loop never came back from the closed FdSignal (spinning in Poll)")
	}
	require.NoError(t, p.Close())
}
