//go:build linux

package iopool

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"unsafe"

	"golang.org/x/sys/unix"
)

// cpuSetSize is the number of CPUs a unix.CPUSet holds (CPU_SETSIZE).
const cpuSetSize = int(unsafe.Sizeof(unix.CPUSet{})) * 8

// WithCPU runs the pool's loop on an OS thread of its own (as
// WithLockOSThread does) and pins that thread to one CPU with
// sched_setaffinity, so every task of the pool runs on that CPU. New fails
// with an error naming the CPU if the kernel refuses it (a CPU outside the
// process's cpuset, or past the machine's last CPU).
//
// In a Group use WithPinCPU instead, which gives each pool its own CPU.
func WithCPU(cpu int) Option {
	return poolOption(func(o *options) error {
		if cpu < 0 || cpu >= cpuSetSize {
			return fmt.Errorf("iopool: WithCPU(%d): want a CPU number 0..%d", cpu, cpuSetSize-1)
		}
		o.lockOSThread = true
		o.cpu = cpu
		return nil
	})
}

// WithPinCPU pins pool i of a Group's loop thread to the i-th CPU the
// process may run on (Group.CPU(i)), as WithCPU would, wrapping around when
// there are more pools than CPUs. It is a GroupOption only: a pool made
// with New has no index to choose a CPU by (pin it with WithCPU).
func WithPinCPU() GroupOption {
	return groupOption(func(g *groupOptions) error { g.pinEach = true; return nil })
}

// pinLoopThread pins the pool's loop thread to its CPU. It runs the
// sched_setaffinity on the loop goroutine itself, which WithCPU locked to
// its thread: a tid of 0 means the calling thread.
func (p *Pool) pinLoopThread() error {
	var err error
	p.onLoop(func() {
		var set unix.CPUSet
		set.Set(p.opts.cpu)
		err = unix.SchedSetaffinity(0, &set)
	})
	if err != nil {
		return fmt.Errorf("iopool: New: WithCPU(%d): %w (CPUs this process may use: %s)",
			p.opts.cpu, os.NewSyscallError("sched_setaffinity", err), formatCPUs(processCPUs()))
	}
	return nil
}

// processCPUs lists, in increasing order, the CPUs the process may run on:
// the affinity of its main thread (tid = pid), so that a caller running on
// a pinned loop thread still sees the whole set.
func processCPUs() []int {
	var set unix.CPUSet
	if err := unix.SchedGetaffinity(os.Getpid(), &set); err != nil {
		// Cannot fail for our own pid; fall back to the calling thread.
		if err := unix.SchedGetaffinity(0, &set); err != nil {
			return []int{0}
		}
	}
	var cpus []int
	for c := 0; c < cpuSetSize; c++ {
		if set.IsSet(c) {
			cpus = append(cpus, c)
		}
	}
	if len(cpus) == 0 {
		return []int{0}
	}
	return cpus
}

// formatCPUs prints a CPU list like "0-3,8".
func formatCPUs(cpus []int) string {
	var b strings.Builder
	for i := 0; i < len(cpus); {
		j := i
		for j+1 < len(cpus) && cpus[j+1] == cpus[j]+1 {
			j++
		}
		if b.Len() > 0 {
			b.WriteByte(',')
		}
		b.WriteString(strconv.Itoa(cpus[i]))
		if j > i {
			b.WriteByte('-')
			b.WriteString(strconv.Itoa(cpus[j]))
		}
		i = j + 1
	}
	return b.String()
}
