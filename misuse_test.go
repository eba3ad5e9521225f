package iopool

import (
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// within runs fn on a goroutine of its own and fails the test, with every
// goroutine's stack, if fn has not returned (or called runtime.Goexit, as a
// failing require does) after d: a hang becomes a failure, not a CI timeout.
func within(t *testing.T, d time.Duration, fn func()) {
	t.Helper()
	done := make(chan struct{})
	go func() {
		defer close(done)
		fn()
	}()
	select {
	case <-done:
	case <-time.After(d):
		buf := make([]byte, 1<<20)
		t.Fatalf("still running after %v:\n%s", d, buf[:runtime.Stack(buf, true)])
	}
}

// Regression: runtime.Goexit inside a task (what t.FailNow and require.* do
// in a test) was re-raised by iter.Pull on the loop goroutine, which exited:
// Join saw nothing, Run returned ErrClosed, and every later Run or Close
// blocked forever sending to the dead loop's work channel.
func TestRegressionGoexitInTaskEndsOnlyTheTask(t *testing.T) {
	for _, locked := range []bool{false, true} {
		t.Run(fmt.Sprintf("locked=%v", locked), func(t *testing.T) {
			requireNoLeaks(t)
			var opts []Option
			if locked {
				opts = append(opts, WithLockOSThread())
			}
			p, err := New(opts...)
			require.NoError(t, err)
			within(t, 10*time.Second, func() {
				// A spawned task: Join sees the error, the deferred calls ran.
				deferred := false
				err := p.Run(func(tk *Task) error {
					h := Spawn(tk.Driver(), "quitter", func(t *Task) (int, error) {
						defer func() { deferred = true }()
						if err := t.Sleep(time.Millisecond); err != nil {
							return 0, err
						}
						runtime.Goexit()
						return 1, nil
					})
					_, err := h.Join(tk)
					return err
				})
				require.ErrorIs(t, err, ErrGoexit)
				require.ErrorContains(t, err, `task "quitter"`)
				require.True(t, deferred, "the task's deferred calls ran")

				// The root task, before and after a suspension.
				require.ErrorIs(t, p.Run(func(tk *Task) error { runtime.Goexit(); return nil }), ErrGoexit)
				require.ErrorIs(t, p.Run(func(tk *Task) error {
					_ = tk.Yield()
					runtime.Goexit()
					return nil
				}), ErrGoexit)

				// The pool still works, and Close drains a task that calls
				// Goexit when it is canceled.
				leftover := Spawn(p.Driver(), "goexit-on-cancel", func(t *Task) (int, error) {
					_ = t.Sleep(time.Hour)
					runtime.Goexit()
					return 0, nil
				})
				require.NoError(t, p.Run(func(tk *Task) error { return tk.Sleep(time.Millisecond) }))
				require.NoError(t, p.Close())
				_, err = leftover.Wait()
				require.ErrorIs(t, err, ErrGoexit)
			})
		})
	}
}
