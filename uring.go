package iopool

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/iopool/iopool/internal/sys"
	"github.com/iopool/iopool/internal/uring"
)

const defaultUringEntries = 64

// ErrUringUnavailable is returned, wrapped with the cause, by Driver.Uring
// when the kernel refuses io_uring (ENOSYS, EPERM from seccomp or
// io_uring_disabled, ENOMEM from a low memlock limit). The rest of the pool
// works without it.
var ErrUringUnavailable = errors.New("iopool: io_uring unavailable")

// SQE is an io_uring submission queue entry (struct io_uring_sqe), prepared
// by the function given to Uring.Submit.
type SQE = uring.SQE

// Opcodes for Uring.Submit and Uring.Probe (enum io_uring_op).
const (
	OpNop    = uring.OpNop
	OpReadv  = uring.OpReadv
	OpWritev = uring.OpWritev
	OpFsync  = uring.OpFsync
	OpRead   = uring.OpRead
	OpWrite  = uring.OpWrite
	OpSend   = uring.OpSend
	OpRecv   = uring.OpRecv
)

// WithUringEntries sets the io_uring submission queue size (default 64).
func WithUringEntries(n uint32) Option {
	return func(o *options) error {
		if n < 1 || n > uring.MaxEntries {
			return fmt.Errorf("iopool: WithUringEntries(%d): want 1..%d entries", n, uring.MaxEntries)
		}
		o.uringEntries = n
		return nil
	}
}

// withUringRefused makes io_uring setup fail with err; for tests.
func withUringRefused(err error) Option {
	return func(o *options) error { o.uringRefuse = err; return nil }
}

// Uring submits io_uring operations on a pool. Operations that take a
// *Task run inside that task: their SQE goes straight into the ring, and
// all SQEs queued in one loop cycle reach the kernel in one io_uring_enter.
// Start, for plain goroutines, queues the SQE for the loop.
//
// Buffer ownership: a buffer passed to an operation is pinned and kept
// reachable until the kernel's completion for it has been consumed. If the
// waiting task is canceled, the call returns ErrCanceled at once, the
// operation is canceled in the kernel (IORING_OP_ASYNC_CANCEL), and the
// buffer stays pinned until its completion arrives; do not reuse it before
// the call returns.
type Uring struct {
	p     *Pool
	ring  *uring.Ring  // the loop's (and Close's once the loop stopped)
	probe *uring.Probe // read-only

	mu        sync.Mutex
	ops       []*uringOp  // mu: slot table; user_data = index+1
	free      []*uringOp  // mu: task-layer ops ready for reuse
	remote    []uring.SQE // mu: SQEs from other goroutines
	hasRemote atomic.Bool // remote is non-empty
	inflight  int         // mu: ops whose completion has not arrived
	closed    bool        // mu
}

// cancelUserData marks the SQEs whose completions are ignored (cancels).
const cancelUserData = 0

// uringOp is one operation in the kernel. Its buffers are pinned from
// submission until release, which runs exactly once, after the CQE.
//
//	free --acquire--> submitted --CQE--> done --release--> free
//	submitted --task canceled--> abandoned --CQE--> released by the loop
type uringOp struct {
	userData  uint64
	name      string         // for errors
	res       int32          // mu: the CQE's result, once done
	done      bool           // mu
	abandoned bool           // mu: nobody waits; release at the CQE
	reusable  bool           // task-layer op: back to the free list on release
	waker     Waker          // mu
	pinner    runtime.Pinner // buffers, iovecs, paths, timespecs in use by the kernel
	iov       []unix.Iovec   // reused by Readv/Writev
	ts        unix.Timespec  // Timeout's time
}

// Poll is ready with the CQE's result.
func (op *uringOp) poll(u *Uring, cx *Context) (int32, bool) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if op.done {
		return op.res, true
	}
	op.waker = cx.waker
	return 0, false
}

// Uring returns the pool's io_uring, creating it on first use: default 64
// entries (WithUringEntries), its fd registered in the epoll set. If the
// kernel refuses io_uring the error wraps ErrUringUnavailable and the cause,
// and is returned again by later calls.
func (d *Driver) Uring() (*Uring, error) {
	p := d.p
	if u := p.uring.Load(); u != nil {
		return u, nil
	}
	p.uringMu.Lock()
	defer p.uringMu.Unlock()
	if u := p.uring.Load(); u != nil {
		return u, nil
	}
	if p.uringErr != nil {
		return nil, p.uringErr
	}
	p.mu.Lock()
	closed := p.closing || p.closed
	p.mu.Unlock()
	if closed {
		return nil, ErrClosed
	}
	u, err := newUring(p)
	if err != nil {
		p.uringErr = err
		return nil, err
	}
	p.uring.Store(u)
	return u, nil
}

func newUring(p *Pool) (*Uring, error) {
	unavailable := func(err error) error { return fmt.Errorf("%w: %w", ErrUringUnavailable, err) }
	if p.opts.uringRefuse != nil {
		return nil, unavailable(os.NewSyscallError("io_uring_setup", p.opts.uringRefuse))
	}
	if err := sys.Inject(sys.CallUringSetup); err != nil {
		return nil, unavailable(os.NewSyscallError("io_uring_setup", err))
	}
	ring, err := uring.New(p.opts.uringEntries, 0)
	if err != nil {
		return nil, unavailable(err)
	}
	probe, err := ring.Probe()
	if err != nil {
		ring.Close()
		return nil, unavailable(err)
	}
	// Edge-triggered: the ring fd is readable when completions are posted;
	// the loop drains them at the top of every cycle.
	ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLET}
	setEventData(&ev, tokenRing)
	if err := sys.EpollCtl(p.epfd, unix.EPOLL_CTL_ADD, ring.Fd(), &ev); err != nil {
		ring.Close()
		return nil, fmt.Errorf("iopool: registering the io_uring fd: %w", os.NewSyscallError("epoll_ctl", err))
	}
	return &Uring{p: p, ring: ring, probe: probe}, nil
}

// Probe reports whether the kernel supports an io_uring opcode.
func (u *Uring) Probe(op uint8) bool { return u.probe.Supported(op) }

// acquire takes an op for a new operation.
func (u *Uring) acquire(name string, reusable bool) (*uringOp, error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.closed {
		return nil, ErrClosed
	}
	var op *uringOp
	if n := len(u.free); reusable && n > 0 {
		op = u.free[n-1]
		u.free = u.free[:n-1]
	} else {
		op = &uringOp{reusable: reusable}
		u.ops = append(u.ops, op)
		op.userData = uint64(len(u.ops))
	}
	op.name = name
	u.inflight++
	return op, nil
}

// releaseLocked unpins the op's memory and recycles its slot: the one place
// where kernel-held memory is given back. Called with u.mu held, once the
// CQE has been consumed.
func (u *Uring) releaseLocked(op *uringOp) {
	op.pinner.Unpin()
	op.done, op.abandoned, op.waker, op.res = false, false, nil, 0
	clear(op.iov)
	op.iov = op.iov[:0]
	if op.reusable {
		u.free = append(u.free, op)
	} else {
		u.ops[op.userData-1] = nil // a Completion keeps the op; its slot is not reused
	}
}

// pushOnLoop puts an SQE straight into the ring; the caller runs on the
// loop goroutine. A full SQ is submitted first.
func (u *Uring) pushOnLoop(sqe *uring.SQE) {
	slot := u.ring.NextSQE()
	if slot == nil {
		u.submit()
		slot = u.ring.NextSQE()
		for slot == nil {
			// The kernel took nothing (CQ pressure): make room by
			// draining completions, then retry.
			runtime.Gosched()
			u.submit()
			slot = u.ring.NextSQE()
		}
	}
	*slot = *sqe
}

// pushRemote queues an SQE from another goroutine and wakes the loop on the
// queue's empty→non-empty transition.
func (u *Uring) pushRemote(sqe *uring.SQE) {
	u.mu.Lock()
	u.remote = append(u.remote, *sqe)
	first := !u.hasRemote.Swap(true)
	u.mu.Unlock()
	if first {
		u.p.wake()
	}
}

func (u *Uring) submit() {
	pending := u.ring.SQPending()
	n, err := u.ring.Submit()
	if pending > 0 || n > 0 {
		u.p.stats.uringEnters.Add(1)
	}
	if err == nil {
		u.p.stats.uringSubmitted.Add(uint64(n))
	}
	// EAGAIN/EBUSY (the kernel is short of resources or the CQ is full):
	// the SQEs stay queued and the next cycle submits them again.
}

// flush moves remote SQEs into the ring and submits everything queued in
// this cycle with one io_uring_enter. Loop only.
func (u *Uring) flush() {
	if u.hasRemote.Load() {
		u.mu.Lock()
		for i := range u.remote {
			u.pushOnLoop(&u.remote[i])
		}
		clear(u.remote)
		u.remote = u.remote[:0]
		u.hasRemote.Store(false)
		u.mu.Unlock()
	}
	if u.ring.SQPending() > 0 || u.ring.CQOverflowPending() {
		u.submit()
	}
}

// drain consumes the completions, collecting the wakers of their waiters.
// Loop only.
func (u *Uring) drain(wakers *WakerList) {
	u.mu.Lock()
	n := u.ring.DrainCQ(func(c uring.CQE) {
		if c.UserData == cancelUserData {
			return
		}
		op := u.ops[c.UserData-1]
		u.inflight--
		op.res, op.done = c.Res, true
		if op.abandoned {
			u.releaseLocked(op)
			return
		}
		wakers.Add(op.waker)
		op.waker = nil
	})
	u.mu.Unlock()
	if n > 0 {
		u.p.stats.uringCompleted.Add(uint64(n))
	}
	if u.ring.CQOverflowPending() {
		u.submit() // GETEVENTS flushes the kernel's overflow list
	}
}

// run submits one operation inside task t and waits for its result.
func (u *Uring) run(t *Task, name string, op *uringOp, sqe *uring.SQE) (int32, error) {
	sqe.UserData = op.userData
	u.pushOnLoop(sqe)
	res, err := Await[int32](t, (*taskOp)(op))
	u.mu.Lock()
	defer u.mu.Unlock()
	if err != nil {
		if op.done {
			u.releaseLocked(op)
		} else {
			op.abandoned = true
			cancel := uring.SQE{Opcode: uring.OpAsyncCancel, Addr: op.userData, UserData: cancelUserData}
			u.pushOnLoop(&cancel)
		}
		return 0, err
	}
	u.releaseLocked(op)
	if res < 0 {
		return res, fmt.Errorf("iopool: %w", os.NewSyscallError("io_uring "+name, unix.Errno(-res)))
	}
	return res, nil
}

// taskOp is a uringOp awaited by a task; its pool is found through the task.
type taskOp uringOp

func (f *taskOp) Poll(cx *Context) (int32, bool) {
	op := (*uringOp)(f)
	t := cx.waker.(*Task)
	u := t.pool.uring.Load()
	return op.poll(u, cx)
}

// prepare takes an op inside task t and pins bufs.
func (u *Uring) prepare(t *Task, name string, bufs ...[]byte) (*uringOp, error) {
	t.checkCurrent()
	op, err := u.acquire(name, true)
	if err != nil {
		return nil, err
	}
	for _, b := range bufs {
		if len(b) > 0 {
			op.pinner.Pin(&b[0])
		}
	}
	return op, nil
}

func checkRW(name string, buf []byte, off int64) error {
	if buf == nil {
		return fmt.Errorf("iopool: io_uring %s: nil buffer", name)
	}
	if off < 0 {
		return fmt.Errorf("iopool: io_uring %s: negative offset %d", name, off)
	}
	if len(buf) > 1<<31-1 {
		return fmt.Errorf("iopool: io_uring %s: buffer of %d bytes is larger than one operation can take", name, len(buf))
	}
	return nil
}

func bufAddr(b []byte) uint64 {
	if len(b) == 0 {
		return 0
	}
	return uint64(uintptr(unsafe.Pointer(&b[0])))
}

// Nop submits a no-op and waits for its completion.
func (u *Uring) Nop(t *Task) error {
	op, err := u.prepare(t, "nop")
	if err != nil {
		return err
	}
	_, err = u.run(t, "nop", op, &uring.SQE{Opcode: uring.OpNop})
	return err
}

// Read reads into buf from fd at offset off, inside task t.
func (u *Uring) Read(t *Task, fd int, buf []byte, off int64) (int, error) {
	return u.rw(t, "read", uring.OpRead, fd, buf, off)
}

// Write writes buf to fd at offset off, inside task t. Like pwrite, it may
// write less than len(buf).
func (u *Uring) Write(t *Task, fd int, buf []byte, off int64) (int, error) {
	return u.rw(t, "write", uring.OpWrite, fd, buf, off)
}

func (u *Uring) rw(t *Task, name string, opcode uint8, fd int, buf []byte, off int64) (int, error) {
	if err := checkRW(name, buf, off); err != nil {
		return 0, err
	}
	op, err := u.prepare(t, name, buf)
	if err != nil {
		return 0, err
	}
	sqe := uring.SQE{Opcode: opcode, Fd: int32(fd), Addr: bufAddr(buf), Len: uint32(len(buf)), Off: uint64(off)}
	n, err := u.run(t, name, op, &sqe)
	return int(n), err
}

// Readv reads into bufs from fd at offset off, inside task t.
func (u *Uring) Readv(t *Task, fd int, bufs [][]byte, off int64) (int, error) {
	return u.rwv(t, "readv", uring.OpReadv, fd, bufs, off)
}

// Writev writes bufs to fd at offset off, inside task t.
func (u *Uring) Writev(t *Task, fd int, bufs [][]byte, off int64) (int, error) {
	return u.rwv(t, "writev", uring.OpWritev, fd, bufs, off)
}

func (u *Uring) rwv(t *Task, name string, opcode uint8, fd int, bufs [][]byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("iopool: io_uring %s: negative offset %d", name, off)
	}
	if len(bufs) == 0 {
		return 0, fmt.Errorf("iopool: io_uring %s: no buffers", name)
	}
	op, err := u.prepare(t, name, bufs...)
	if err != nil {
		return 0, err
	}
	for _, b := range bufs {
		op.iov = append(op.iov, unix.Iovec{Base: unsafe.SliceData(b), Len: uint64(len(b))})
	}
	op.pinner.Pin(&op.iov[0])
	sqe := uring.SQE{Opcode: opcode, Fd: int32(fd), Addr: uint64(uintptr(unsafe.Pointer(&op.iov[0]))), Len: uint32(len(op.iov)), Off: uint64(off)}
	n, err := u.run(t, name, op, &sqe)
	return int(n), err
}

// Fsync flushes fd's data and metadata to storage, inside task t.
func (u *Uring) Fsync(t *Task, fd int) error {
	op, err := u.prepare(t, "fsync")
	if err != nil {
		return err
	}
	_, err = u.run(t, "fsync", op, &uring.SQE{Opcode: uring.OpFsync, Fd: int32(fd)})
	return err
}

// Openat opens path relative to dirfd (unix.AT_FDCWD for the working
// directory) and returns the new fd, inside task t.
func (u *Uring) Openat(t *Task, dirfd int, path string, flags int, mode uint32) (int, error) {
	p, err := unix.BytePtrFromString(path)
	if err != nil {
		return -1, fmt.Errorf("iopool: io_uring openat %q: %w", path, err)
	}
	op, err := u.prepare(t, "openat")
	if err != nil {
		return -1, err
	}
	op.pinner.Pin(p)
	sqe := uring.SQE{Opcode: uring.OpOpenat, Fd: int32(dirfd), Addr: uint64(uintptr(unsafe.Pointer(p))), Len: mode, OpFlags: uint32(flags | unix.O_CLOEXEC)}
	fd, err := u.run(t, "openat", op, &sqe)
	return int(fd), err
}

// Close closes fd, inside task t.
func (u *Uring) Close(t *Task, fd int) error {
	op, err := u.prepare(t, "close")
	if err != nil {
		return err
	}
	_, err = u.run(t, "close", op, &uring.SQE{Opcode: uring.OpClose, Fd: int32(fd)})
	return err
}

// Send sends buf on a socket, inside task t.
func (u *Uring) Send(t *Task, fd int, buf []byte, flags int) (int, error) {
	if err := checkRW("send", buf, 0); err != nil {
		return 0, err
	}
	op, err := u.prepare(t, "send", buf)
	if err != nil {
		return 0, err
	}
	sqe := uring.SQE{Opcode: uring.OpSend, Fd: int32(fd), Addr: bufAddr(buf), Len: uint32(len(buf)), OpFlags: uint32(flags)}
	n, err := u.run(t, "send", op, &sqe)
	return int(n), err
}

// Recv receives into buf from a socket, inside task t.
func (u *Uring) Recv(t *Task, fd int, buf []byte, flags int) (int, error) {
	if err := checkRW("recv", buf, 0); err != nil {
		return 0, err
	}
	op, err := u.prepare(t, "recv", buf)
	if err != nil {
		return 0, err
	}
	sqe := uring.SQE{Opcode: uring.OpRecv, Fd: int32(fd), Addr: bufAddr(buf), Len: uint32(len(buf)), OpFlags: uint32(flags)}
	n, err := u.run(t, "recv", op, &sqe)
	return int(n), err
}

// PollAdd waits inside task t until fd signals one of events (one-shot).
func (u *Uring) PollAdd(t *Task, fd int, events PollEvents) (PollEvents, error) {
	op, err := u.prepare(t, "poll_add")
	if err != nil {
		return 0, err
	}
	sqe := uring.SQE{Opcode: uring.OpPollAdd, Fd: int32(fd), OpFlags: uint32(events)}
	res, err := u.run(t, "poll_add", op, &sqe)
	return PollEvents(res), err
}

// Timeout completes after d, inside task t (an io_uring timer).
func (u *Uring) Timeout(t *Task, d time.Duration) error {
	op, err := u.prepare(t, "timeout")
	if err != nil {
		return err
	}
	op.ts = unix.NsecToTimespec(max(int64(d), 0))
	op.pinner.Pin(op)
	sqe := uring.SQE{Opcode: uring.OpTimeout, Addr: uint64(uintptr(unsafe.Pointer(&op.ts))), Len: 1}
	_, err = u.run(t, "timeout", op, &sqe)
	if errors.Is(err, unix.ETIME) {
		return nil // the timeout expired: its success
	}
	return err
}

// Submit runs any operation inside task t: prep fills the SQE (user_data is
// set by Submit), keep lists the buffers the kernel will use, pinned until
// the completion. It returns the CQE's result, or an error for a negative
// one.
func (u *Uring) Submit(t *Task, prep func(*SQE), keep ...[]byte) (int32, error) {
	op, err := u.prepare(t, "submit", keep...)
	if err != nil {
		return 0, err
	}
	var sqe uring.SQE
	prep(&sqe)
	return u.run(t, fmt.Sprintf("op %d", sqe.Opcode), op, &sqe)
}

// Completion is an operation started from any goroutine with Start: a
// Future of its CQE result, and Wait for plain goroutines.
type Completion struct {
	u  *Uring
	op *uringOp
}

// Start submits an operation from any goroutine: the SQE is queued for the
// loop, which submits it in its next cycle. keep lists the buffers the
// kernel will use; they stay pinned until the completion is consumed.
func (u *Uring) Start(prep func(*SQE), keep ...[]byte) (*Completion, error) {
	op, err := u.acquire("start", false)
	if err != nil {
		return nil, err
	}
	for _, b := range keep {
		if len(b) > 0 {
			op.pinner.Pin(&b[0])
		}
	}
	var sqe uring.SQE
	prep(&sqe)
	sqe.UserData = op.userData
	u.pushRemote(&sqe)
	return &Completion{u: u, op: op}, nil
}

// Poll is ready with the CQE's result; the buffers are released then.
func (c *Completion) Poll(cx *Context) (int32, bool) {
	res, ok := c.op.poll(c.u, cx)
	if ok {
		c.u.mu.Lock()
		if c.op.userData != 0 && c.u.ops[c.op.userData-1] == c.op {
			c.u.releaseLocked(c.op)
		}
		c.u.mu.Unlock()
	}
	return res, ok
}

// Wait blocks a plain goroutine until the operation completes and returns
// its result, or an error for a negative one.
func (c *Completion) Wait() (int32, error) {
	res := BlockOn[int32](c)
	if res < 0 {
		return res, fmt.Errorf("iopool: %w", os.NewSyscallError("io_uring", unix.Errno(-res)))
	}
	return res, nil
}

// leakedOps keeps ops that the kernel never completed at Close reachable
// (and pinned) for the life of the process, rather than let it write into
// freed memory.
var leakedOps struct {
	sync.Mutex
	ops []*uringOp
}

// close cancels the operations in flight, waits (at most a second) for
// their completions, and unmaps the ring. Called by Pool.Close after the
// loop stopped.
func (u *Uring) close() error {
	u.mu.Lock()
	u.closed = true
	for _, op := range u.ops {
		if op != nil && !op.done && u.inflight > 0 {
			if slot := u.ring.NextSQE(); slot != nil {
				*slot = uring.SQE{Opcode: uring.OpAsyncCancel, Addr: op.userData, UserData: cancelUserData}
			}
			op.abandoned = true
		}
	}
	u.mu.Unlock()
	var wakers WakerList
	for start := time.Now(); ; {
		u.flush()
		u.drain(&wakers)
		u.mu.Lock()
		left := u.inflight
		u.mu.Unlock()
		if left == 0 || time.Since(start) > time.Second {
			break
		}
		time.Sleep(time.Millisecond)
	}
	wakers.WakeAll()
	u.mu.Lock()
	for _, op := range u.ops {
		if op != nil && !op.done && op.abandoned {
			leakedOps.Lock()
			leakedOps.ops = append(leakedOps.ops, op)
			leakedOps.Unlock()
		}
	}
	u.mu.Unlock()
	return u.ring.Close()
}
