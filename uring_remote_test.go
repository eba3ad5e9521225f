//go:build linux

package iopool

import (
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// An operation started from a plain goroutine is queued for the loop and
// completed through the poll layer.
func TestUringStartFromPlainGoroutine(t *testing.T) {
	parallel(t)
	runPool(t, func(tk *Task) error {
		u := requireUring(t, tk.Driver())
		f, err := os.CreateTemp(t.TempDir(), "start")
		require.NoError(t, err)
		defer f.Close()
		buf := []byte("remote")
		type result struct {
			n   int32
			err error
		}
		done := NewOneshot[result]() // the goroutine's result, checked by the test
		go func() {
			c, err := u.Start(func(s *SQE) {
				s.Opcode, s.Fd = OpWrite, int32(f.Fd())
				s.SetBuffer(buf)
			}, buf)
			if err != nil {
				_ = done.Send(result{err: fmt.Errorf("Start: %w", err)})
				return
			}
			n, err := c.Wait()
			_ = done.Send(result{n, err})
		}()
		r, err := done.Recv(tk)
		require.NoError(t, err)
		require.NoError(t, r.err)
		require.EqualValues(t, len(buf), r.n)
		return nil
	})
}

// Close cancels operations started from plain goroutines: their waiters get
// ECANCELED, and their buffers are released.
func TestUringCloseCancelsRemoteOps(t *testing.T) {
	skipIfKernelRefusesUring(t)
	for _, locked := range []bool{false, true} {
		t.Run(fmt.Sprintf("locked=%v", locked), func(t *testing.T) {
			requireNoLeaks(t)
			var opts []Option
			if locked {
				opts = append(opts, WithLockOSThread())
			}
			p, err := New(opts...)
			require.NoError(t, err)
			u := requireUring(t, p.Driver())
			var fds [2]int
			require.NoError(t, unix.Pipe2(fds[:], unix.O_CLOEXEC))
			defer unix.Close(fds[0])
			defer unix.Close(fds[1])
			buf := make([]byte, 16)
			c, err := u.Start(func(s *SQE) {
				s.Opcode, s.Fd, s.Off = OpRead, int32(fds[0]), ^uint64(0)
				s.SetBuffer(buf)
			}, buf)
			require.NoError(t, err)
			waited := make(chan error, 1)
			go func() { _, err := c.Wait(); waited <- err }()
			require.NoError(t, p.Close())
			select {
			case err := <-waited:
				require.ErrorIs(t, err, unix.ECANCELED)
				require.ErrorIs(t, err, ErrClosed, "canceled by Close")
			case <-time.After(5 * time.Second):
				t.Fatal("the waiter of a canceled operation was never woken")
			}
			requireAllOpsFree(t, u)
		})
	}
}
