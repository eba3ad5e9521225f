//go:build linux

package iopool

import (
	"context"
	"fmt"
	"go/ast"
	"go/doc"
	"go/parser"
	"go/token"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
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

				// A deferred call that panics during the Goexit: the panic
				// is the task's end, and the loop goes on.
				err = p.Run(func(tk *Task) error {
					h := Spawn(tk.Driver(), "panics-in-goexit", func(t *Task) (int, error) {
						defer func() { panic("deferred panic") }()
						runtime.Goexit()
						return 1, nil
					})
					_, err := h.Join(tk)
					return err
				})
				var pe *PanicError
				require.ErrorAs(t, err, &pe)
				require.Equal(t, "deferred panic", pe.Value)

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

// panicValue runs fn and returns what it panicked with (nil if it returned).
func panicValue(fn func()) (v any) {
	defer func() { v = recover() }()
	fn()
	return nil
}

// Regression: Close looked for any (*Task).body frame on its caller's stack,
// so a supervisor pool's task closing a busy worker pool panicked as if the
// worker had closed itself. Now only the pool's own tasks are refused.
func TestRegressionCloseFromAnotherPoolsTask(t *testing.T) {
	requireNoLeaks(t)
	worker, err := New()
	require.NoError(t, err)
	supervisor := newTestPool(t)
	spinning := make(chan struct{})
	var stop atomic.Bool
	workerDone := make(chan error, 1)
	go func() {
		workerDone <- worker.Run(func(tk *Task) error {
			// Busy without yielding, so that the worker is running one
			// of its tasks (current != nil) when the supervisor closes it.
			close(spinning)
			for !stop.Load() {
				runtime.Gosched()
			}
			return tk.Sleep(time.Hour) // canceled by Close
		})
	}()
	within(t, 10*time.Second, func() {
		require.NoError(t, supervisor.Run(func(tk *Task) error {
			<-spinning
			time.AfterFunc(20*time.Millisecond, func() { stop.Store(true) })
			return worker.Close()
		}))
		require.ErrorIs(t, <-workerDone, ErrClosed)
	})
}

// lockChildEnv selects, in a child test process, the thread-locking misuse
// that TestRegressionLockOSThreadAcrossAwaitIsDocumented expects to kill it.
const lockChildEnv = "IOPOOL_TEST_LOCK_CHILD"

// Regression: a task that calls runtime.LockOSThread and then awaits kills
// the process, and nothing said so. The runtime offers no cheap way to
// detect it, so the limit is documented on Task, Run and WithLockOSThread;
// this test pins the documentation and the behavior it describes: each
// unbalanced lock state across an await ends a child process with the
// runtime's message, and balanced locking between awaits works.
func TestRegressionLockOSThreadAcrossAwaitIsDocumented(t *testing.T) {
	if v := os.Getenv(lockChildEnv); v != "" {
		lockChild(t, v)
		return
	}
	fset := token.NewFileSet()
	var files []*ast.File
	for _, name := range []string{"task.go", "pool.go", "options.go"} {
		f, err := parser.ParseFile(fset, name, nil, parser.ParseComments)
		require.NoError(t, err)
		files = append(files, f)
	}
	dp, err := doc.NewFromFiles(fset, files, "github.com/iopool/iopool")
	require.NoError(t, err)
	docs := map[string]string{}
	for _, ty := range dp.Types {
		docs[ty.Name] = ty.Doc
		for _, f := range ty.Methods {
			docs[ty.Name+"."+f.Name] = f.Doc
		}
		for _, f := range ty.Funcs {
			docs[f.Name] = f.Doc
		}
	}
	for _, name := range []string{"Task", "Pool.Run", "WithLockOSThread"} {
		require.Contains(t, docs[name], "runtime.LockOSThread", "the doc of %s", name)
	}
	for _, name := range []string{"Task", "WithLockOSThread"} {
		require.Contains(t, strings.Join(strings.Fields(docs[name]), " "), "coro: OS thread locking must match", "the doc of %s", name)
	}

	for _, variant := range []string{"lock-plain", "lock-locked", "unlock-locked"} {
		t.Run(variant, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestRegressionLockOSThreadAcrossAwaitIsDocumented$", "-test.count=1")
			cmd.Env = append(os.Environ(), lockChildEnv+"="+variant)
			out, err := cmd.CombinedOutput()
			require.Error(t, err, "the child survived:\n%s", out)
			require.Contains(t, string(out), "fatal error: coro: OS thread locking must match locking at coroutine creation")
		})
	}

	// Balanced between two awaits: fine on both kinds of pool.
	for _, opts := range [][]Option{nil, {WithLockOSThread()}} {
		runPool(t, func(tk *Task) error {
			for range 3 {
				runtime.LockOSThread()
				_ = unix.Gettid()
				runtime.UnlockOSThread()
				if err := tk.Sleep(time.Millisecond); err != nil {
					return err
				}
			}
			return nil
		}, opts...)
	}
}

// lockChild runs one misuse; the runtime is expected to end the process.
func lockChild(t *testing.T, variant string) {
	var opts []Option
	if strings.HasSuffix(variant, "-locked") {
		opts = append(opts, WithLockOSThread())
	}
	p, err := New(opts...)
	require.NoError(t, err)
	_ = p.Run(func(tk *Task) error {
		if strings.HasPrefix(variant, "lock") {
			runtime.LockOSThread()
		} else {
			runtime.UnlockOSThread()
		}
		return tk.Sleep(time.Millisecond)
	})
	t.Fatal("the process survived an await with an unbalanced thread lock")
}

// A NetConn waiting from a task would block the task's whole pool until
// the data came: it panics, naming the Socket's methods to use instead.
func TestNetConnFromOwnPoolsTaskPanics(t *testing.T) {
	within(t, 10*time.Second, func() {
		runPool(t, func(tk *Task) error {
			sp := socketpair(t)
			defer unix.Close(sp[1])
			c, err := tk.Driver().NewNetConn(sp[0])
			require.NoError(t, err)
			defer c.Close()
			v := panicValue(func() { _, _ = c.Read(make([]byte, 8)) })
			require.Contains(t, v, "called from inside a task")
			require.Contains(t, v, "use the Socket, Listener or PacketSocket methods that take the task")
			// With data there, nothing waits: the call is fine.
			_, err = unix.Write(sp[1], []byte("x"))
			require.NoError(t, err)
			n, err := c.Read(make([]byte, 8))
			require.NoError(t, err)
			require.Equal(t, 1, n)
			return nil
		})
	})
}
