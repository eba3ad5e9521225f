//go:build linux

package iopool

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// FdSignal waits for a signal on an eventfd-like fd (eventfd, timerfd): readable
// means signaled, and reading a counter of at most 8 bytes consumes the
// signal. A signalfd is read in 128-byte siginfo records, which an FdSignal does
// not read: register it with NewFdReady and read the records yourself.
type FdSignal struct {
	fr       *FdReady
	fd       int
	readSize int
	buf      [8]byte
}

// NewFdSignal registers fd, whose signal is consumed by reading readSize bytes
// (1 to 8: 8 for eventfd and timerfd). The fd should be nonblocking and
// stays the caller's: close the FdSignal before the fd.
func (d *Driver) NewFdSignal(fd, readSize int) (*FdSignal, error) {
	if readSize < 1 || readSize > 8 {
		return nil, fmt.Errorf("iopool: NewFdSignal fd %d: readSize %d out of range 1..8", fd, readSize)
	}
	fr, err := d.NewFdReady(fd)
	if err != nil {
		return nil, err
	}
	return &FdSignal{fr: fr, fd: fd, readSize: readSize}, nil
}

// Poll is ready once a signal was consumed (with nil), or when reading the
// fd failed (with the error). EAGAIN on the read means another reader won
// the race: it polls again. Once the FdSignal is closed, or its pool, Poll is
// ready with an error wrapping ErrClosed and reads nothing: the fd number
// may already name another file.
func (fs *FdSignal) Poll(cx *PollContext) (struct{}, error) {
	for {
		if _, ok := fs.fr.PollReady(cx, SlotRead, PollIn); !ok {
			return struct{}{}, ErrPending
		}
		if !fs.fr.acquire() {
			return struct{}{}, wrapError(ErrClosed, "wait fd %d", fs.fd)
		}
		fs.fr.ClearReady(SlotRead)
		_, err := fs.fr.readFd(fs.fd, fs.buf[:fs.readSize])
		fs.fr.releaseRef()
		switch err {
		case nil:
			return struct{}{}, nil
		case unix.EAGAIN, unix.EINTR:
			continue
		default:
			return struct{}{}, fmt.Errorf("iopool: wait fd %d: %w", fs.fd, os.NewSyscallError("read", err))
		}
	}
}

// Recv suspends task t until the fd is signaled and consumes the signal.
// If t is canceled first, Recv returns an error wrapping ErrCanceled and
// consumes nothing: the signal stays for the next Recv.
func (fs *FdSignal) Recv(t *Task) error {
	_, err := Await[struct{}](t, fs)
	return err
}

// Close removes the registration (not the fd). A task or goroutine waiting
// in the FdSignal returns ErrClosed. Close returns once no read of the fd is in
// flight, so the caller may close the fd then.
func (fs *FdSignal) Close() error { return fs.fr.Close() }
