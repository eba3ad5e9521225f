//go:build linux

package iopool

import (
	"os"
	"os/signal"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// startSignalLoop starts os/signal's process-wide goroutine, which never
// exits, before a test counts goroutines.
func startSignalLoop() {
	c := make(chan os.Signal, 1)
	signal.Notify(c, syscall.SIGUSR1)
	signal.Stop(c)
}

// A signal sent to the process reaches the task waiting in Recv; Stop
// wakes a waiting Recv.
func TestSignalsReachTasks(t *testing.T) {
	startSignalLoop()
	runPool(t, func(tk *Task) error {
		sigs, err := tk.Driver().NotifySignals(syscall.SIGUSR1, syscall.SIGUSR2)
		require.NoError(t, err)
		defer sigs.Stop()
		go func() {
			time.Sleep(5 * time.Millisecond) // Recv is waiting (not needed for correctness)
			_ = unix.Kill(os.Getpid(), unix.SIGUSR2)
		}()
		sig, err := sigs.Recv(tk)
		require.NoError(t, err)
		require.Equal(t, syscall.SIGUSR2, sig)

		require.NoError(t, unix.Kill(os.Getpid(), unix.SIGUSR1))
		sig, err = sigs.Recv(tk)
		require.NoError(t, err)
		require.Equal(t, syscall.SIGUSR1, sig)

		go func() {
			time.Sleep(5 * time.Millisecond)
			sigs.Stop()
		}()
		_, err = sigs.Recv(tk)
		require.ErrorIs(t, err, ErrClosed)
		require.ErrorContains(t, err, "signal delivery stopped")
		sigs.Stop()
		return nil
	})
}

// Closing the pool ends the delivery: no goroutine is left (runPool checks).
func TestSignalsStoppedByPoolClose(t *testing.T) {
	startSignalLoop()
	var sigs *Signals
	runPool(t, func(tk *Task) error {
		var err error
		sigs, err = tk.Driver().NotifySignals(syscall.SIGUSR1)
		return err
	})
	select {
	case <-sigs.done:
	case <-time.After(5 * time.Second):
		t.Fatal("the forwarding goroutine did not exit with the pool")
	}
	_, err := newTestPool(t).Driver().NotifySignals()
	require.ErrorContains(t, err, "no signals given")
	_, err = newTestPool(t).Driver().NotifySignals(nil)
	require.ErrorContains(t, err, "signal 0 is nil")
}
