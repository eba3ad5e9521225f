//go:build linux

package iopool

import (
	"fmt"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// here returns "file:line" of its caller, plus delta lines.
func here(delta int) string {
	_, file, line, _ := runtime.Caller(1)
	return fmt.Sprintf("%s:%d", file, line+delta)
}

// waitForTasks reads p's task table from the test's goroutine until ok
// accepts it, for at most 10 s, and returns it by name.
func waitForTasks(t *testing.T, p *Pool, ok func(map[string]TaskInfo) bool) map[string]TaskInfo {
	t.Helper()
	var byName map[string]TaskInfo
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		byName = map[string]TaskInfo{}
		for _, info := range p.Tasks() {
			byName[info.Name] = info
		}
		if ok(byName) {
			return byName
		}
	}
	require.FailNow(t, "the task table never showed what was expected", "last: %+v", byName)
	return nil
}

// allWaiting accepts a table in which every named task is waiting.
func allWaiting(names ...string) func(map[string]TaskInfo) bool {
	return func(m map[string]TaskInfo) bool {
		for _, n := range names {
			if m[n].State != TaskWaiting {
				return false
			}
		}
		return true
	}
}

// TestTasksFromAnotherGoroutine: the task table, read by a plain goroutine
// while the pool runs, names a task waiting on a socket read with its fd,
// one sleeping, one on a Chan, one joining another, each with its spawn
// site.
func TestTasksFromAnotherGoroutine(t *testing.T) {
	for _, sites := range []bool{false, true} {
		t.Run(fmt.Sprintf("WithTaskTracking=%v", sites), func(t *testing.T) {
			requireNoLeaks(t)
			opts := []Option{}
			if sites {
				opts = append(opts, WithTaskTracking())
			}
			p, err := New(opts...)
			require.NoError(t, err)
			defer p.Close()
			require.NoError(t, p.Start())
			drv := p.Driver()
			fds := socketpair(t)
			defer unix.Close(fds[1])
			sock, err := drv.NewSocket(fds[0])
			require.NoError(t, err)
			defer sock.Close()
			ch := NewChan[int]()

			site := map[string]string{}
			site["reader"] = here(1)
			reader := Spawn(drv, "reader", func(t *Task) (int, error) { return sock.Read(t, make([]byte, 1)) })
			site["sleeper"] = here(1)
			sleeper := Spawn(drv, "sleeper", func(t *Task) (int, error) { return 0, t.Sleep(time.Hour) })
			site["receiver"] = here(1)
			receiver := Spawn(drv, "receiver", func(t *Task) (int, error) { return ch.Recv(t) })
			site["joiner"] = here(1)
			Spawn(drv, "joiner", func(t *Task) (int, error) { return sleeper.Join(t) })

			m := waitForTasks(t, p, allWaiting("reader", "sleeper", "receiver", "joiner"))
			require.Len(t, m, 4)
			require.Equal(t, fmt.Sprintf("read fd %d", fds[0]), m["reader"].WaitingOn)
			require.Regexp(t, `^timer in (59m59\.9\d+s|1h0m0s)$`, m["sleeper"].WaitingOn)
			require.Equal(t, "Chan.Recv", m["receiver"].WaitingOn)
			require.Equal(t, `Join of task "sleeper"`, m["joiner"].WaitingOn)
			for name, info := range m {
				require.True(t, strings.HasPrefix(info.SpawnedAt, site[name]), "%s spawned at %s, want %s", name, info.SpawnedAt, site[name])
				require.GreaterOrEqual(t, info.Polls, uint64(1), name)
				if sites {
					require.Positive(t, info.Age, name)
				} else {
					require.Zero(t, info.Age, name)
				}
			}

			// A read deadline shows; a woken reader and receiver finish, and
			// are listed as such until their results are taken (with
			// WithTaskTracking; without it they leave the table).
			require.NoError(t, sock.SetReadDeadline(time.Now().Add(time.Hour)))
			waitForTasks(t, p, func(m map[string]TaskInfo) bool {
				return strings.HasPrefix(m["reader"].WaitingOn, fmt.Sprintf("read fd %d, deadline in ", fds[0]))
			})
			_, err = unix.Write(fds[1], []byte{1})
			require.NoError(t, err)
			require.NoError(t, ch.Send(1))
			if sites {
				m = waitForTasks(t, p, func(m map[string]TaskInfo) bool {
					return m["reader"].State == TaskFinished && m["receiver"].State == TaskFinished
				})
				require.Len(t, m, 4)
				require.Equal(t, TaskWaiting, m["sleeper"].State)
			} else {
				waitForTasks(t, p, func(m map[string]TaskInfo) bool { return len(m) == 2 })
			}
			for _, h := range []*Handle[int]{reader, receiver} {
				v, err := h.Wait()
				require.NoError(t, err)
				require.Equal(t, 1, v)
			}
			waitForTasks(t, p, func(m map[string]TaskInfo) bool { return len(m) == 2 })
		})
	}
}

// TestTasksUringAndBusyLoop: an io_uring read is named with its fd; a task
// that keeps the loop busy is listed as running within the wait, the others
// without what they wait on.
func TestTasksUringAndBusyLoop(t *testing.T) {
	var fds [2]int
	require.NoError(t, unix.Pipe2(fds[:], unix.O_CLOEXEC))
	defer unix.Close(fds[0])
	defer unix.Close(fds[1])
	p, err := New()
	require.NoError(t, err)
	defer p.Close()
	require.NoError(t, p.Start())
	drv := p.Driver()
	if _, err := drv.Uring(); err != nil {
		requireUring(t, drv)
	}
	reader := Spawn(drv, "uring-reader", func(t *Task) (int, error) {
		u, err := t.Driver().Uring()
		if err != nil {
			return 0, err
		}
		return u.Read(t, fds[0], make([]byte, 1), -1)
	})
	m := waitForTasks(t, p, allWaiting("uring-reader"))
	require.Equal(t, fmt.Sprintf("io_uring read fd %d", fds[0]), m["uring-reader"].WaitingOn)

	var stop atomic.Bool
	spinning := make(chan struct{})
	Spawn(drv, "spinner", func(t *Task) (int, error) {
		close(spinning)
		for !stop.Load() {
			runtime.Gosched() // the goroutine yields; the task keeps the loop
		}
		return 0, nil
	})
	<-spinning
	start := time.Now()
	tasks := p.Tasks()
	require.Less(t, time.Since(start), 5*time.Second)
	stop.Store(true)
	require.Len(t, tasks, 2)
	require.Equal(t, "uring-reader", tasks[0].Name)
	require.Equal(t, TaskWaiting, tasks[0].State)
	require.Equal(t, "unknown: the loop is busy", tasks[0].WaitingOn)
	require.Equal(t, TaskInfo{Name: "spinner", State: TaskRunning}, TaskInfo{Name: tasks[1].Name, State: tasks[1].State})

	_, err = unix.Write(fds[1], []byte{1})
	require.NoError(t, err)
	n, err := reader.Wait()
	require.NoError(t, err)
	require.Equal(t, 1, n)
}

// TestTasksBetweenRuns: a task lists itself as running; tasks left by a
// Run are listed while no loop runs.
func TestTasksBetweenRuns(t *testing.T) {
	requireNoLeaks(t)
	p, err := New(WithVirtualClock())
	require.NoError(t, err)
	defer p.Close()
	require.NoError(t, p.Run(func(tk *Task) error {
		Spawn(tk.Driver(), "left", func(t *Task) (int, error) { return 0, t.Sleep(time.Hour) })
		ch := NewChan[int]()
		defer ch.Close()
		Spawn(tk.Driver(), "selecting", func(t *Task) (int, error) {
			tm := t.Driver().After(time.Minute)
			defer tm.Stop()
			return Select(t, Case[int](ch, nil), Case[time.Time](tm, nil))
		})
		require.NoError(t, tk.Yield())
		tasks := tk.Driver().Pool().Tasks()
		require.Len(t, tasks, 3)
		require.Equal(t, "Select: Chan.Recv | timer in 1m0s", tasks[2].WaitingOn)
		tasks = tasks[:2]
		require.Equal(t, "root", tasks[0].Name)
		require.Equal(t, TaskRunning, tasks[0].State)
		require.Equal(t, "left", tasks[1].Name)
		require.Equal(t, "timer in 1h0m0s", tasks[1].WaitingOn)
		return nil
	}))
	tasks := p.Tasks()
	require.Len(t, tasks, 2)
	require.Equal(t, "left", tasks[0].Name)
	require.Equal(t, TaskWaiting, tasks[0].State)
	require.Equal(t, "timer in 1h0m0s", tasks[0].WaitingOn)
	require.EqualValues(t, 1, tasks[0].Polls)
	require.Equal(t, "selecting", tasks[1].Name)
	require.Equal(t, TaskReady, tasks[1].State, "woken by the Chan's Close, not run: Run has returned")
	require.Empty(t, tasks[1].WaitingOn)
}

// TestTasksListsFinishedButNotJoined: a task that finished while nobody
// waited for it is listed as finished, with its spawn site, until its
// result is taken (Join, Wait, Result, JoinSet.Next) or its Handle is
// dropped; a task whose Join was waiting is never listed as finished.
func TestTasksListsFinishedButNotJoined(t *testing.T) {
	requireNoLeaks(t)
	p, err := New(WithTaskTracking())
	require.NoError(t, err)
	defer p.Close()
	require.NoError(t, p.Start())
	drv := p.Driver()

	site := here(1)
	orphan := Spawn(drv, "orphan", func(t *Task) (int, error) { return 7, nil })
	joinSet := NewJoinSet[int](drv)
	joinSet.Spawn("in-set", func(t *Task) (int, error) { return 8, nil })
	dropped := Spawn(drv, "dropped", func(t *Task) (int, error) { return 9, nil })
	// A task joined while it runs: its joiner takes the result at once.
	gate := NewOneshot[int]()
	awaited := Spawn(drv, "awaited", func(t *Task) (int, error) { return gate.Recv(t) })
	joiner := Spawn(drv, "joiner", func(t *Task) (int, error) { return awaited.Join(t) })
	waitForTasks(t, p, allWaiting("awaited", "joiner"))
	gate.Send(1)
	v, err := joiner.Wait()
	require.NoError(t, err)
	require.Equal(t, 1, v)

	finished := func(names ...string) func(map[string]TaskInfo) bool {
		return func(m map[string]TaskInfo) bool {
			for _, n := range names {
				if m[n].State != TaskFinished {
					return false
				}
			}
			return true
		}
	}
	byName := waitForTasks(t, p, finished("orphan", "in-set", "dropped"))
	runtime.KeepAlive(dropped) // listed while reachable
	require.Equal(t, "finished, not joined", byName["orphan"].State.String())
	require.True(t, strings.HasPrefix(byName["orphan"].SpawnedAt, site), "SpawnedAt %q, want %s", byName["orphan"].SpawnedAt, site)
	require.Empty(t, byName["orphan"].WaitingOn)
	require.NotContains(t, byName, "awaited", "its Join was waiting when it finished")
	require.NotContains(t, byName, "joiner", "Wait took its result")

	// Taking the result, in each way, takes the task off the table.
	v, err = orphan.Wait()
	require.NoError(t, err)
	require.Equal(t, 7, v)
	j, err := BlockOn[Joined[int]](joinSet)
	require.NoError(t, err)
	require.Equal(t, 8, j.Value)
	// dropped is unreachable from here on: the collector takes its entry.
	runtime.GC()
	runtime.GC()
	waitForTasks(t, p, func(m map[string]TaskInfo) bool { return len(m) == 0 })
}
