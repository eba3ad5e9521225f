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
// wrapping errors.ErrUnsupported.
func WaitProcess(t *Task, proc *os.Process) (*os.ProcessState, error) {
	pidfd, err := unix.PidfdOpen(proc.Pid, 0)
	if err == unix.ENOSYS {
		return nil, fmt.Errorf("iopool: WaitProcess pid %d: pidfd_open: %w", proc.Pid, errors.ErrUnsupported)
	}
	if err != nil {
		return nil, fmt.Errorf("iopool: WaitProcess pid %d: %w", proc.Pid, os.NewSyscallError("pidfd_open", err))
	}
	defer unix.Close(pidfd)
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
