//go:build linux

package iopool

import (
	"testing"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

func TestGroupPinsEachPoolToItsCPU(t *testing.T) {
	cpus := processCPUs()
	g := newTestGroup(t, len(cpus)+1, WithPinCPU()) // one more than the CPUs: wraps around
	got := make([]unix.CPUSet, g.Len())
	tids := make([]int, g.Len())
	require.NoError(t, g.Run(func(tk *Task, i int) error {
		// A task runs on its pool's loop thread: its affinity is the pool's.
		tids[i] = unix.Gettid()
		return unix.SchedGetaffinity(0, &got[i])
	}))
	for i := range g.Len() {
		want := cpus[i%len(cpus)]
		require.Equal(t, want, g.CPU(i), "pool %d", i)
		require.Equal(t, 1, got[i].Count(), "pool %d runs on exactly one CPU", i)
		require.True(t, got[i].IsSet(want), "pool %d on CPU %d", i, want)
		for j := range i {
			require.NotEqual(t, tids[j], tids[i], "pools %d and %d share a thread", j, i)
		}
	}
}

func TestCPUOptionsRejectMisuse(t *testing.T) {
	// WithCPU fits a lone pool only and WithPinCPU a group only, so
	// New(WithPinCPU()) and NewGroup(n, WithCPU(0)) do not compile.
	_, fitsGroup := WithCPU(0).(GroupOption)
	require.False(t, fitsGroup, "WithCPU is a GroupOption")
	_, fitsPool := WithPinCPU().(Option)
	require.False(t, fitsPool, "WithPinCPU is an Option")
	_, err := New(WithCPU(-1))
	require.ErrorContains(t, err, "WithCPU(-1)")
	fds := openFds(t)
	_, err = New(WithCPU(cpuSetSize - 1)) // no such CPU on this machine
	require.ErrorContains(t, err, "sched_setaffinity")
	require.ErrorContains(t, err, "CPUs this process may use: "+formatCPUs(processCPUs()))
	require.Equal(t, fds, openFds(t), "a failed New closes its fds")
	_, err = NewGroup(2, nil)
	require.ErrorContains(t, err, "nil GroupOption")
}

func TestWithCPUPinsALonePool(t *testing.T) {
	cpu := processCPUs()[len(processCPUs())-1]
	var got unix.CPUSet
	runPool(t, func(tk *Task) error { return unix.SchedGetaffinity(0, &got) }, WithCPU(cpu))
	require.Equal(t, 1, got.Count())
	require.True(t, got.IsSet(cpu))
}

func TestFormatCPUs(t *testing.T) {
	for _, c := range []struct {
		in   []int
		want string
	}{{[]int{0}, "0"}, {[]int{0, 1}, "0-1"}, {[]int{0, 1, 2, 5, 7, 8}, "0-2,5,7-8"}, {nil, ""}} {
		require.Equal(t, c.want, formatCPUs(c.in), "%v", c.in)
	}
}

// TestRegressionPinnedPoolNeverPinsTheMainThread: a pinned loop goroutine
// that started on the process's main thread pinned it for good (the
// runtime never ends the main thread), and the process's CPU set, read
// from the main thread, shrank to that one CPU.
func TestRegressionPinnedPoolNeverPinsTheMainThread(t *testing.T) {
	before := processCPUs()
	cpu := before[len(before)-1]
	for range 50 {
		p, err := New(WithCPU(cpu))
		require.NoError(t, err)
		require.NoError(t, p.Close())
	}
	require.Equal(t, before, processCPUs())
}
