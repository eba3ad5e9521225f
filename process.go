//go:build linux

package iopool

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// WaitProcess waits inside task t for the child process proc to exit,
// without blocking the loop: a pidfd for it is registered on the pool and
// becomes readable at exit, after which proc.Wait returns at once. On
// kernels without pidfd_open (before Linux 5.3) it returns an error
// wrapping errors.ErrUnsupported. For a process already waited for it
// returns an error wrapping os.ErrProcessDone at once: its pid may belong
// to another process by then.
func WaitProcess(t *Task, proc *os.Process) (*os.ProcessState, error) {
	pidfd, err := unix.PidfdOpen(proc.Pid, 0)
	if err == unix.ENOSYS {
		return nil, fmt.Errorf("iopool: WaitProcess pid %d: pidfd_open: %w", proc.Pid, errors.ErrUnsupported)
	}
	if err == unix.ESRCH {
		// No process has the pid: a child exists until it is reaped, so
		// proc was reaped (waited for) already.
		return nil, fmt.Errorf("iopool: WaitProcess pid %d: %w (already waited for)", proc.Pid, os.ErrProcessDone)
	}
	if err != nil {
		return nil, fmt.Errorf("iopool: WaitProcess pid %d: %w", proc.Pid, os.NewSyscallError("pidfd_open", err))
	}
	defer unix.Close(pidfd)
	// pidfd_open names a pid, and a pid is recycled once its process has
	// been reaped: if proc was already waited for, the pidfd may be some
	// stranger's. proc still being ours now means it was then too (a
	// process is reaped once, never un-reaped), so the pidfd is proc's.
	// os.Process signals through a pidfd of its own where the kernel has
	// them, so this holds even if the pid was reaped behind its back.
	if err := proc.Signal(unix.Signal(0)); errors.Is(err, os.ErrProcessDone) {
		return nil, fmt.Errorf("iopool: WaitProcess pid %d: %w (already waited for)", proc.Pid, os.ErrProcessDone)
	}
	fr, err := t.Driver().NewFdReady(pidfd)
	if err != nil {
		return nil, err
	}
	_, err = fr.WaitReady(t, SlotRead, PollIn)
	if cerr := fr.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return nil, err
	}
	return proc.Wait()
}
