//go:build linux

// Package sys holds the raw Linux system calls iopool's loop makes, behind a
// small seam through which tests inject faults into one pool's calls (Faults).
//
// Every wrapper follows the x/sys convention: pointers are converted inside
// the Syscall argument list, and a nil error (never a typed zero Errno) is
// returned on success.
package sys

import (
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Call names a system call that can have a fault injected.
type Call uint8

// The calls with an injection point.
const (
	CallEpollWait    Call = iota // epoll_pwait2 / epoll_wait
	CallEpollCtl                 // epoll_ctl ADD and DEL
	CallEventfd                  // eventfd2 when a pool is created
	CallAccept                   // accept4 on a listener
	CallRead                     // read on a registered fd
	CallWrite                    // write on a registered fd
	CallUringSetup               // io_uring_setup
	CallUringEnter               // io_uring_enter submitting a pool's SQEs
	CallEventfdWrite             // the 8-byte write that wakes a pool's loop
	CallShutdown                 // shutdown of a registered socket
	CallRecvfrom                 // recvfrom on a registered datagram socket
	CallSendto                   // sendto on a registered datagram socket
	numCalls
)

var callNames = [numCalls]string{"epoll_wait", "epoll_ctl", "eventfd", "accept4", "read", "write", "io_uring_setup", "io_uring_enter", "eventfd write", "shutdown", "recvfrom", "sendto"}

func (c Call) String() string {
	if c < numCalls {
		return callNames[c]
	}
	return "call?"
}

// FaultFunc decides, before a system call, whether it fails: a non-nil
// result is returned in place of calling the kernel. It must return: a
// socket's read or write calls it holding the fd's reference (iopool's
// ioLoop takes and drops it around the call without a defer, to keep a
// task's deepest frame small), and a panic or runtime.Goexit there would
// leave the fd's Close waiting for it forever. A test reports a failure
// from it with t.Error, not t.Fatal or require.
type FaultFunc func(c Call) error

// Faults is one pool's fault hook. A pool made for a test holds one (see
// the pool's options); the calls made on the pool's behalf consult it, so a
// test's faults reach its own pool and no other, and tests run in parallel.
// A nil *Faults injects nothing, at the cost of one nil check per call; a
// non-nil one costs one atomic load while no function is set.
type Faults struct {
	fn atomic.Pointer[FaultFunc]
}

// Set installs fn (nil removes it) and returns the previous function. It
// may be called at any time, from any goroutine; calls already past their
// injection point are not affected.
func (fs *Faults) Set(fn FaultFunc) FaultFunc {
	var p *FaultFunc
	if fn != nil {
		p = &fn
	}
	old := fs.fn.Swap(p)
	if old == nil {
		return nil
	}
	return *old
}

// Inject reports the fault to inject into c, if any. fs may be nil.
func (fs *Faults) Inject(c Call) error {
	if fs == nil {
		return nil
	}
	if f := fs.fn.Load(); f != nil {
		return (*f)(c)
	}
	return nil
}

// forNewPools is the hook given to pools created without one of their own.
var forNewPools atomic.Pointer[Faults]

// SetForNewPools makes fs the hook of every pool created from now on
// without a hook of its own (nil: such pools get none), and returns the
// previous one. It is for tests that cannot reach the options of the pool
// they exercise (a command's tests, in another package); being process-wide,
// such a test must not run in parallel with tests that create pools.
func SetForNewPools(fs *Faults) *Faults {
	return forNewPools.Swap(fs)
}

// ForNewPools returns the hook set by SetForNewPools, or nil.
func ForNewPools() *Faults {
	return forNewPools.Load()
}

// errnoErr returns nil for a zero errno, so that callers never see a non-nil
// error that holds errno 0.
func errnoErr(e unix.Errno) error {
	if e == 0 {
		return nil
	}
	return e
}

// pwait2State records whether the kernel has epoll_pwait2 (Linux 5.11+):
// 0 unknown, 1 yes, 2 no.
var pwait2State atomic.Int32

// EpollWait waits for events on epfd for at most timeoutNs nanoseconds
// (negative: forever; zero: poll). It uses epoll_pwait2 for nanosecond
// precision where the kernel has it; otherwise epoll_wait with the timeout
// rounded up to whole milliseconds, so that a sleep never ends before its
// deadline and the loop never spins on a sub-millisecond remainder.
//
// EINTR is returned to the caller, which retries: the Go runtime preempts
// goroutines with signals, so EINTR is frequent and not an error.
func EpollWait(fs *Faults, epfd int, events []unix.EpollEvent, timeoutNs int64) (int, error) {
	if err := fs.Inject(CallEpollWait); err != nil {
		return 0, err
	}
	if len(events) == 0 {
		return 0, unix.EINVAL
	}
	if pwait2State.Load() != 2 {
		var ts *unix.Timespec
		var tsv unix.Timespec
		if timeoutNs >= 0 {
			tsv = unix.NsecToTimespec(timeoutNs)
			ts = &tsv
		}
		// Safe: the pointers are converted inside the argument list, so
		// events and tsv stay alive and unmoved for the call.
		r, _, e := unix.Syscall6(unix.SYS_EPOLL_PWAIT2, uintptr(epfd),
			uintptr(unsafe.Pointer(&events[0])), uintptr(len(events)),
			uintptr(unsafe.Pointer(ts)), 0, 0)
		if e != unix.ENOSYS {
			pwait2State.Store(1)
			return int(r), errnoErr(e)
		}
		pwait2State.Store(2)
	}
	return unix.EpollWait(epfd, events, MillisRoundedUp(timeoutNs))
}

// ForceEpollWaitFallback makes EpollWait use epoll_wait (milliseconds) as if
// the kernel lacked epoll_pwait2; for tests of the fallback path.
func ForceEpollWaitFallback(on bool) {
	if on {
		pwait2State.Store(2)
	} else {
		pwait2State.Store(0)
	}
}

// MillisRoundedUp converts a nanosecond timeout to epoll_wait's milliseconds,
// rounding up: rounding down would wake the loop before its deadline and make
// it spin with zero timeouts until the deadline passes.
func MillisRoundedUp(ns int64) int {
	if ns < 0 {
		return -1
	}
	ms := (ns + 999_999) / 1_000_000
	if ms > 1<<31-1 {
		ms = 1<<31 - 1
	}
	return int(ms)
}

// EpollCtl is epoll_ctl with an injection point.
func EpollCtl(fs *Faults, epfd, op, fd int, ev *unix.EpollEvent) error {
	if err := fs.Inject(CallEpollCtl); err != nil {
		return err
	}
	return unix.EpollCtl(epfd, op, fd, ev)
}

// Eventfd is eventfd2 with an injection point.
func Eventfd(fs *Faults, initval uint, flags int) (int, error) {
	if err := fs.Inject(CallEventfd); err != nil {
		return -1, err
	}
	return unix.Eventfd(initval, flags)
}

// Accept4 is accept4 with an injection point.
func Accept4(fs *Faults, fd int, flags int) (int, unix.Sockaddr, error) {
	if err := fs.Inject(CallAccept); err != nil {
		return -1, nil, err
	}
	return unix.Accept4(fd, flags)
}

// Read is read(2) with an injection point.
//
// Read and Write make the system call themselves instead of through
// unix.Read and unix.Write, whose two wrapper frames (136 bytes) would sit
// at the deepest point of a task's I/O: a task's goroutine starts with a
// 2 KiB stack, grows it to 4 KiB when a call goes deeper than about 1,100
// bytes, and a task suspended in a wait never gets it back (iopool's
// TestRegressionTaskEchoFitsTheSmallestStack). They tell the race detector
// what unix.Read and unix.Write tell it (race.go).
func Read(fs *Faults, fd int, p []byte) (int, error) {
	if err := fs.Inject(CallRead); err != nil {
		return -1, err
	}
	ptr := bufPtr(p)
	r, _, e := unix.Syscall(unix.SYS_READ, uintptr(fd), uintptr(ptr), uintptr(len(p)))
	n := int(r)
	if raceEnabled {
		if n > 0 {
			raceWriteRange(ptr, n)
		}
		if e == 0 {
			raceAcquire(unsafe.Pointer(&ioSync))
		}
	}
	if e != 0 {
		return n, e // an Errno below 256: no allocation
	}
	return n, nil
}

// Write is write(2) with an injection point; see Read.
func Write(fs *Faults, fd int, p []byte) (int, error) {
	if err := fs.Inject(CallWrite); err != nil {
		return -1, err
	}
	if raceEnabled {
		raceReleaseMerge(unsafe.Pointer(&ioSync))
	}
	ptr := bufPtr(p)
	r, _, e := unix.Syscall(unix.SYS_WRITE, uintptr(fd), uintptr(ptr), uintptr(len(p)))
	n := int(r)
	if raceEnabled && n > 0 {
		raceReadRange(ptr, n)
	}
	if e != 0 {
		return n, e
	}
	return n, nil
}

// zero is what an empty buffer's pointer points to (the kernel reads and
// writes nothing there, but the pointer must be valid Go memory).
var zero byte

// bufPtr is the address of p's first byte, or of zero if p is empty.
func bufPtr(p []byte) unsafe.Pointer {
	if len(p) > 0 {
		return unsafe.Pointer(&p[0])
	}
	return unsafe.Pointer(&zero)
}

// Recvfrom is recvfrom(2) with an injection point.
func Recvfrom(fs *Faults, fd int, p []byte, flags int) (int, unix.Sockaddr, error) {
	if err := fs.Inject(CallRecvfrom); err != nil {
		return -1, nil, err
	}
	return unix.Recvfrom(fd, p, flags)
}

// Sendto is sendto(2) with an injection point.
func Sendto(fs *Faults, fd int, p []byte, flags int, to unix.Sockaddr) error {
	if err := fs.Inject(CallSendto); err != nil {
		return err
	}
	return unix.Sendto(fd, p, flags, to)
}

// Shutdown is shutdown(2) with an injection point.
func Shutdown(fs *Faults, fd, how int) error {
	if err := fs.Inject(CallShutdown); err != nil {
		return err
	}
	return unix.Shutdown(fd, how)
}

// EventfdSignal adds one to an eventfd counter. EAGAIN (the counter is at
// its maximum) is fine: the fd is readable either way.
func EventfdSignal(fs *Faults, fd int) error {
	if err := fs.Inject(CallEventfdWrite); err != nil {
		return err
	}
	one := uint64(1)
	// Safe: one is a live, aligned 8-byte variable, viewed as its 8 bytes
	// for the length of the write.
	buf := (*[8]byte)(unsafe.Pointer(&one))[:]
	for {
		_, err := unix.Write(fd, buf)
		if err == unix.EINTR {
			continue
		}
		if err == unix.EAGAIN {
			return nil
		}
		return err
	}
}

// EventfdDrain resets an eventfd counter to zero. EAGAIN means another
// reader got there first, which is fine.
func EventfdDrain(fd int) error {
	var buf [8]byte
	for {
		_, err := unix.Read(fd, buf[:])
		if err == unix.EINTR {
			continue
		}
		if err == unix.EAGAIN {
			return nil
		}
		return err
	}
}
