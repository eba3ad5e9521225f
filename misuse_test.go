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
	"strconv"
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

// Regression: blocking calls made from inside a task of the pool they wait
// on blocked the loop forever. They panic now, naming the call to use, and
// Close from a task of the pool being closed is refused during its drain
// too; a task of another pool may still wait on this one.
func TestRegressionBlockingCallsFromTaskPanic(t *testing.T) {
	requireNoLeaks(t)
	p, err := New()
	require.NoError(t, err)
	other := newTestPool(t)
	closeInDrain := make(chan any, 1)
	within(t, 10*time.Second, func() {
		require.NoError(t, p.Run(func(tk *Task) error {
			sibling := Spawn(tk.Driver(), "sibling", func(t *Task) (int, error) {
				return 7, t.Sleep(time.Millisecond)
			})
			require.Equal(t,
				`iopool: Handle.Wait called from a task of the same pool as task "sibling", which could then never run: use Join(t)`,
				panicValue(func() { _, _ = sibling.Wait() }))
			v, err := sibling.Join(tk)
			require.NoError(t, err)
			require.Equal(t, 7, v)
			v, err = sibling.Wait() // finished: nothing to wait for
			require.NoError(t, err)
			require.Equal(t, 7, v)

			pending := PollFunc[int](func(cx *Context) (int, bool) { return 0, false })
			require.Contains(t, panicValue(func() { BlockOn[int](pending) }),
				"iopool: BlockOn called from inside a task")
			require.Contains(t, panicValue(func() { BlockOn[int](pending) }), "use Await(t, fut)")

			ch := NewChan[int]()
			require.Contains(t, panicValue(func() { _, _ = ch.RecvWait() }), "Chan.RecvWait called from inside a task")
			require.Contains(t, panicValue(func() { _, _ = ch.RecvWait() }), "use Recv(t)")
			require.NoError(t, ch.Send(3))
			got, err := ch.RecvWait() // a value is there: no wait
			require.NoError(t, err)
			require.Equal(t, 3, got)

			one := NewOneshot[int]()
			require.Contains(t, panicValue(func() { _, _ = one.Wait() }), "Oneshot.Wait called from inside a task")

			// A task may wait for a task of another (running) pool.
			h := Spawn(other.Driver(), "elsewhere", func(t *Task) (int, error) {
				return 5, t.Sleep(time.Millisecond)
			})
			otherRun := make(chan error, 1)
			go func() { otherRun <- other.Run(func(tk *Task) error { _, err := h.Join(tk); return err }) }()
			v, err = h.Wait()
			require.NoError(t, err)
			require.Equal(t, 5, v)
			require.NoError(t, <-otherRun)
			return nil
		}))
		Spawn(p.Driver(), "closes-in-drain", func(t *Task) (int, error) {
			err := t.Sleep(time.Hour) // canceled by Close
			closeInDrain <- panicValue(func() { _ = p.Close() })
			return 0, err
		})
		require.NoError(t, p.Run(func(tk *Task) error { return tk.Yield() }))
		require.NoError(t, p.Close())
		require.Equal(t, "iopool: Pool.Close called from one of the pool's own tasks; return from the root task instead", <-closeInDrain)
	})
}

// Regression: Handle.Poll stored a nil waker (NewContext(nil)) and the task's
// end called Wake on it, killing the process from the loop goroutine. Every
// future now ignores a nil waker; each is polled with one and then made
// ready, and nothing may crash.
func TestRegressionNilWakerIsIgnoredEverywhere(t *testing.T) {
	p := newTestPool(t)
	nilcx := NewContext(nil)
	within(t, 10*time.Second, func() {
		require.NoError(t, p.Run(func(tk *Task) error {
			drv := tk.Driver()
			h := Spawn(drv, "polled-with-nil", func(t *Task) (int, error) { return 1, t.Sleep(time.Millisecond) })
			_, ok := h.Poll(nilcx)
			require.False(t, ok)

			one := NewOneshot[int]()
			_, ok = one.Poll(nilcx)
			require.False(t, ok)
			ch := NewChan[int]()
			_, ok = ch.Poll(nilcx)
			require.False(t, ok)

			tm := drv.NewTimer()
			_, ok = tm.PollTimer(nilcx, time.Now().Add(time.Millisecond))
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
			_, ok = js.Poll(nilcx)
			require.False(t, ok)

			ticker, err := drv.NewTicker(time.Millisecond)
			require.NoError(t, err)
			defer ticker.Stop()
			_, ok = ticker.Poll(nilcx)
			require.False(t, ok)

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

			_, ok = h.Poll(nilcx)
			require.True(t, ok)
			_, ok = one.Poll(nilcx)
			require.True(t, ok)
			_, ok = ch.Poll(nilcx)
			require.True(t, ok)
			_, ok = tm.PollTimer(nilcx, time.Now())
			require.True(t, ok)
			_, ok = fr.PollReady(nilcx, SlotRead, PollIn)
			require.True(t, ok)
			return nil
		}))
	})
}

// Regression: WaitProcess on a process already reaped opened a pidfd for
// whatever process had that pid now, and waited for that stranger. It
// returns os.ErrProcessDone at once instead.
func TestRegressionWaitProcessOnReapedProcess(t *testing.T) {
	runPool(t, func(tk *Task) error {
		cmd := exec.Command("true")
		require.NoError(t, cmd.Start())
		require.NoError(t, cmd.Wait())
		_, err := WaitProcess(tk, cmd.Process)
		require.ErrorIs(t, err, os.ErrProcessDone)
		require.ErrorContains(t, err, fmt.Sprintf("pid %d", cmd.Process.Pid))
		return nil
	})
}

// The same with the pid recycled: a stranger that sleeps is made to take
// the reaped child's pid (through /proc/sys/kernel/ns_last_pid, root only),
// and WaitProcess must not wait for it.
func TestRegressionWaitProcessIgnoresStrangerWithReusedPid(t *testing.T) {
	const lastPid = "/proc/sys/kernel/ns_last_pid"
	if unix.Access(lastPid, unix.W_OK) != nil {
		t.Skip("choosing the next pid needs write access to " + lastPid + " (root in the pid namespace)")
	}
	runPool(t, func(tk *Task) error {
		for range 20 {
			child := exec.Command("true")
			require.NoError(t, child.Start())
			require.NoError(t, child.Wait())
			pid := child.Process.Pid
			// Other processes of the machine may take the pid first: try again.
			if err := os.WriteFile(lastPid, []byte(strconv.Itoa(pid-1)), 0); err != nil {
				t.Skipf("writing %s: %v", lastPid, err)
			}
			stranger := exec.Command("sleep", "30")
			require.NoError(t, stranger.Start())
			if stranger.Process.Pid != pid {
				require.NoError(t, stranger.Process.Kill())
				_ = stranger.Wait()
				continue
			}
			start := time.Now()
			_, err := WaitProcess(tk, child.Process)
			elapsed := time.Since(start)
			require.NoError(t, stranger.Process.Kill())
			_ = stranger.Wait()
			require.ErrorIs(t, err, os.ErrProcessDone)
			require.Less(t, elapsed, 5*time.Second, "waited for the stranger")
			return nil
		}
		t.Skip("another process took the recycled pid 20 times in a row")
		return nil
	})
}

// Regression: a Chan drained after a burst kept the burst's backing array
// for its whole life (38 MiB after a million 32-byte values). The array is
// given back once drained, and while mostly drained.
func TestRegressionDrainedChanGivesMemoryBack(t *testing.T) {
	const burst = 50_000
	heap := func() uint64 {
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		return ms.HeapAlloc
	}
	type value [32]byte
	ch := NewChan[value]()
	before := heap()
	for range burst {
		require.NoError(t, ch.Send(value{1}))
	}
	require.Greater(t, cap(ch.buf), burst-1)
	// Mostly drained: the rest moves to a smaller array.
	for range burst - burst/8 {
		_, ok, err := ch.TryRecv()
		require.True(t, ok)
		require.NoError(t, err)
	}
	require.LessOrEqual(t, cap(ch.buf), burst/2, "a mostly drained channel keeps the burst's array")
	for range burst / 8 {
		_, ok, _ := ch.TryRecv()
		require.True(t, ok)
	}
	require.Equal(t, 0, ch.Len())
	require.LessOrEqual(t, cap(ch.buf), chanKeepCap, "a drained channel keeps the burst's array")
	after := heap()
	require.Less(t, int64(after)-int64(before), int64(burst*32/4), "heap %d bytes before, %d after draining", before, after)
	runtime.KeepAlive(ch)

	// Small traffic keeps its array: no allocation per value.
	require.NoError(t, ch.Send(value{}))
	_, _, _ = ch.TryRecv()
	allocs := testing.AllocsPerRun(100, func() {
		for range 100 {
			_ = ch.Send(value{})
		}
		for range 100 {
			_, _, _ = ch.TryRecv()
		}
	})
	require.Zero(t, allocs)
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
	for _, name := range []string{"task.go", "pool.go"} {
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

// Regression: a second task waiting on the same slot of one FdReady
// replaced the first one's waker, and the first never woke. Several waiters
// are supported: the slot's next readiness wakes them all.
func TestRegressionTwoWaitersOnOneSlotBothWake(t *testing.T) {
	within(t, 10*time.Second, func() { twoWaitersOnOneSlot(t) })
}

func twoWaitersOnOneSlot(t *testing.T) {
	runPool(t, func(tk *Task) error {
		efd, err := unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
		require.NoError(t, err)
		defer unix.Close(efd)
		fr, err := tk.Driver().NewFdReady(efd)
		require.NoError(t, err)
		defer fr.Close()
		var hs []*Handle[PollEvents]
		for _, name := range []string{"first", "second", "third"} {
			hs = append(hs, Spawn(tk.Driver(), name, func(t *Task) (PollEvents, error) {
				return fr.WaitReady(t, SlotRead, PollIn)
			}))
		}
		require.NoError(t, tk.Sleep(time.Millisecond)) // all three wait now
		_, err = unix.Write(efd, []byte{1, 0, 0, 0, 0, 0, 0, 0})
		require.NoError(t, err)
		for _, h := range hs {
			ev, err := h.Join(tk)
			require.NoError(t, err, "task %q", h.Task().Name())
			require.Equal(t, PollIn, ev)
		}
		return nil
	})
}

// goroutineIDs reads the caller's id and its creator's from runtime.Stack:
// pin the format it parses, so that a runtime that changed it fails here by
// name rather than as a hang in a blocking call's misuse check.
func TestGoroutineIDsNamesTheCreator(t *testing.T) {
	parent, _ := goroutineIDs()
	require.NotZero(t, parent)
	type ids struct{ id, creator uint64 }
	got := make(chan ids, 1)
	go func() {
		id, creator := goroutineIDs()
		got <- ids{id, creator}
	}()
	child := <-got
	require.NotZero(t, child.id)
	require.NotEqual(t, parent, child.id)
	require.Equal(t, parent, child.creator)
}

// A NetConn waiting from a task of its own pool would block the loop that
// delivers its readiness: it panics (a deadline would otherwise be its only
// way out).
func TestNetConnFromOwnPoolsTaskPanics(t *testing.T) {
	within(t, 10*time.Second, func() {
		runPool(t, func(tk *Task) error {
			sp := socketpair(t)
			defer unix.Close(sp[1])
			c, err := tk.Driver().NewNetConn(sp[0])
			require.NoError(t, err)
			defer c.Close()
			v := panicValue(func() { _, _ = c.Read(make([]byte, 8)) })
			require.Contains(t, v, "used from a task of its own pool")
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
