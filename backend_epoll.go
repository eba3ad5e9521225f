//go:build linux

package iopool

// The epoll backend: the one type that owns a pool's epoll fd and its wake
// eventfd, and the one file that speaks epoll (struct epoll_event, EPOLL*
// flags, the data field that carries a token). The rest of the pool sees a
// registration as (fd, PollEvents, token) and an event as (token,
// PollEvents); PollEvents have epoll's bit values, so the conversions are a
// mask. What the loop needs from the kernel, and what each call means:
//
//	open     epoll_create1(EPOLL_CLOEXEC) and eventfd(EFD_NONBLOCK), the
//	         eventfd registered edge-triggered with the wake token, and the
//	         event buffer; in New
//	add      epoll_ctl ADD, once per registration, edge-triggered, for the
//	         given events (ERR and HUP are always reported) with its token
//	del      epoll_ctl DEL when a registration is closed
//	wait(ns) epoll_pwait2 into the event buffer with a nanosecond timeout:
//	         negative blocks until an event, zero polls, positive sleeps at
//	         most that long; epoll_wait with the timeout rounded up to
//	         milliseconds where pwait2 is missing. EINTR is returned to the
//	         loop, which retries.
//	event(i) the token and the events of the i'th event of the last wait
//	wake     one 8-byte write to the eventfd; the pool makes it only on the
//	         state machine's Sleeping→Waking transition, so a sleep sees at
//	         most one write
//	drain    read the eventfd back to zero after the wake token was seen
//	close    close of the eventfd and the epoll fd, in Pool.Close
//
// Ownership. A closed fd number is reused at once by the next open, accept or
// socket in the process (a second pool gets the same epoll fd number), so no
// call may reach the kernel with epfd or wakefd once close has begun. The
// calls split in two:
//
//   - add, del and wake come from any goroutine (NewFdReady, FdReady.Close,
//     Driver.Uring, a Waker fired by another goroutine). Each holds the read
//     side of guard for the length of its syscall; close takes the write side,
//     so it waits for the calls in flight, and every call that starts after
//     it sees closed and returns ErrClosed without touching a number.
//   - wait, event and drain are made by the loop only, inside runLoop. They take no
//     guard (the loop's sleep is the hot path): Pool.Close calls close only
//     after the loop has stopped for good, since Close either waits for the
//     active Run to return or drives the last loop itself, and once closing
//     is set under Pool.mu no Run starts another loop. So no wait or drain
//     overlaps close, and none follows it. The event buffer is the loop's too.
//
// The guard is a sync.RWMutex: its read side is two atomic adds when Close
// is not waiting, next to a syscall that costs a few hundred nanoseconds.

import (
	"cmp"
	"errors"
	"fmt"
	"os"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/iopool/iopool/internal/sys"
)

// epollBackend owns a pool's epoll fd and wake eventfd.
//
// States: open (after open succeeded) --close--> closed. epfd and wakefd are
// written by open before the pool is shared and never change; after close
// they are numbers nobody may use.
type epollBackend struct {
	guard  sync.RWMutex // read: a call on epfd or wakefd in flight; write: close
	closed bool         // guard: close has begun; calls return ErrClosed
	epfd   int          // the epoll instance
	wakefd int          // eventfd that wakes a sleeping loop
	faults *sys.Faults  // the pool's fault hook, nil outside tests; set by open

	events []unix.EpollEvent // loop only: what the last wait fetched
}

// open creates the epoll instance and the wake eventfd and registers the
// eventfd, edge-triggered: the loop drains it each time it sees the token.
// faults is the pool's fault hook (nil: sys.ForNewPools), consulted by every
// system call made on the pool's behalf; eventBuffer is how many events one
// wait fetches at most.
func (b *epollBackend) open(faults *sys.Faults, eventBuffer int) error {
	b.epfd, b.wakefd, b.faults = -1, -1, cmp.Or(faults, sys.ForNewPools())
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return os.NewSyscallError("epoll_create1", err)
	}
	wakefd, err := sys.Eventfd(b.faults, 0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		unix.Close(epfd)
		return os.NewSyscallError("eventfd", err)
	}
	ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLET}
	setEventData(&ev, tokenWake)
	if err := sys.EpollCtl(b.faults, epfd, unix.EPOLL_CTL_ADD, wakefd, &ev); err != nil {
		unix.Close(wakefd)
		unix.Close(epfd)
		return fmt.Errorf("registering the wake eventfd: %w", os.NewSyscallError("epoll_ctl", err))
	}
	b.epfd, b.wakefd = epfd, wakefd
	b.events = make([]unix.EpollEvent, eventBuffer)
	return nil
}

// add registers fd, edge-triggered, for events with token: the kernel reports
// each change of readiness once, and the registration is never modified.
// ERR and HUP are reported whether asked for or not. After close it returns
// ErrClosed.
func (b *epollBackend) add(fd int, events PollEvents, token uint64) error {
	ev := unix.EpollEvent{Events: unix.EPOLLET | uint32(events)}
	setEventData(&ev, token)
	b.guard.RLock()
	defer b.guard.RUnlock()
	if b.closed {
		return ErrClosed
	}
	if err := sys.EpollCtl(b.faults, b.epfd, unix.EPOLL_CTL_ADD, fd, &ev); err != nil {
		return os.NewSyscallError("epoll_ctl", err)
	}
	return nil
}

// del removes fd's registration. After close it returns ErrClosed: the
// registration went with the epoll instance.
func (b *epollBackend) del(fd int) error {
	b.guard.RLock()
	defer b.guard.RUnlock()
	if b.closed {
		return ErrClosed
	}
	if err := sys.EpollCtl(b.faults, b.epfd, unix.EPOLL_CTL_DEL, fd, nil); err != nil {
		return os.NewSyscallError("epoll_ctl", err)
	}
	return nil
}

// wake writes the eventfd. After close it writes nothing and returns
// ErrClosed: nobody is left to wake, and the number may name another file.
func (b *epollBackend) wake() error {
	b.guard.RLock()
	defer b.guard.RUnlock()
	if b.closed {
		return ErrClosed
	}
	// Only EBADF could fail here, and the guard rules it out; EAGAIN (the
	// counter at its maximum) is success, the fd is readable either way.
	return sys.EventfdSignal(b.faults, b.wakefd)
}

// wait fetches events into the event buffer, for at most timeoutNs, and
// returns how many; read them with event. Loop only; see the top of the
// file for why it needs no guard.
func (b *epollBackend) wait(timeoutNs int64) (int, error) {
	return sys.EpollWait(b.faults, b.epfd, b.events, timeoutNs)
}

// event returns the token and the events of the i'th event fetched by the
// last wait. Loop only, like wait.
func (b *epollBackend) event(i int) (token uint64, events PollEvents) {
	ev := &b.events[i]
	return eventData(ev), pollEventsFromEpoll(ev.Events)
}

// PollEvents have epoll's bit values (a mismatch fails to compile), so the
// conversion each way is a mask.
var _ [0]byte = [(PollIn ^ unix.EPOLLIN) | (PollPri ^ unix.EPOLLPRI) | (PollOut ^ unix.EPOLLOUT) |
	(PollErr ^ unix.EPOLLERR) | (PollHup ^ unix.EPOLLHUP) | (PollRdHup ^ unix.EPOLLRDHUP)]byte{}

// pollEventsFromEpoll keeps the events iopool knows of an epoll event mask.
func pollEventsFromEpoll(ev uint32) PollEvents { return PollEvents(ev) & pollEventsAll }

// The 64 data bits of x/sys's EpollEvent are the Fd and Pad fields on every
// 64-bit architecture; the struct is 12 bytes on amd64 (data at offset 4,
// unaligned) and 16 on arm64 (offset 8). Going through the named fields keeps
// one code path for all of them.
func setEventData(ev *unix.EpollEvent, data uint64) {
	ev.Fd = int32(uint32(data))
	ev.Pad = int32(uint32(data >> 32))
}

func eventData(ev *unix.EpollEvent) uint64 {
	return uint64(uint32(ev.Fd)) | uint64(uint32(ev.Pad))<<32
}

// drain resets the eventfd after the loop saw its token. Loop only, like
// wait. EAGAIN means it was drained already, which is fine.
func (b *epollBackend) drain() {
	_ = sys.EventfdDrain(b.wakefd)
}

// close waits for the calls in flight, then closes both fds. Calls from now
// on return ErrClosed. Called once, by Pool.Close after the loop stopped.
func (b *epollBackend) close() error {
	b.guard.Lock()
	defer b.guard.Unlock()
	if b.closed {
		return nil
	}
	b.closed = true
	var errs []error
	if err := unix.Close(b.wakefd); err != nil {
		errs = append(errs, os.NewSyscallError("close eventfd", err))
	}
	if err := unix.Close(b.epfd); err != nil {
		errs = append(errs, os.NewSyscallError("close epoll", err))
	}
	return errors.Join(errs...)
}
