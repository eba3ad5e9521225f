//go:build linux

package iopool

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

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

			pending := PollFunc[int](func(cx *PollContext) (int, error) { return 0, ErrPending })
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

// callingTask names the running task only to that task: not to a plain
// goroutine, not to the loop goroutine itself (a Waker).
func TestCallingTaskIsTheCallerOnly(t *testing.T) {
	pool := newTestPool(t)
	err := pool.Run(func(tk *Task) error {
		p := tk.Driver().Pool()
		require.Same(t, tk, p.callingTask())
		fromGoroutine := make(chan *Task, 1)
		go func() { fromGoroutine <- p.callingTask() }()
		require.Nil(t, <-fromGoroutine)
		// A waker that runs on the loop goroutine, woken by a timer there.
		fromLoop := NewOneshot[bool]()
		tm := tk.Driver().NewTimer()
		tm.PollTimer(NewPollContext(WakerFunc(func() { _ = fromLoop.Send(p.callingTask() == nil) })), time.Now().Add(time.Millisecond))
		ok, err := fromLoop.Recv(tk)
		require.NoError(t, err)
		require.True(t, ok, "the loop goroutine is not a task")
		return nil
	})
	require.NoError(t, err)
}
