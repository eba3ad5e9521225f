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

	OpPollAdd     = uring.OpPollAdd
	OpTimeout     = uring.OpTimeout
	OpAccept      = uring.OpAccept
	OpAsyncCancel = uring.OpAsyncCancel
	OpConnect     = uring.OpConnect
	OpOpenat      = uring.OpOpenat
	OpClose       = uring.OpClose
	OpStatx       = uring.OpStatx
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
	p      *Pool
	ring   *uring.Ring  // used on the loop goroutine only
	probe  *uring.Probe // read-only
	closed atomic.Bool  // set on the loop by close, under mu

	// Task-layer operations belong to the loop goroutine, which submits
	// them, drains their completions and closes the ring: no lock.
	enabled  bool       // false until a ring created disabled is enabled
	ops      []*uringOp // user_data = index+1
	free     []*uringOp // ops ready for reuse
	inflight int        // task-layer ops whose completion has not arrived

	// Operations started from other goroutines with Start.
	mu         sync.Mutex
	remoteOps  []*uringOp  // mu: user_data = remoteTag|index
	remoteFree []uint32    // mu: free indexes of remoteOps
	remoteLive int         // mu: remote ops whose completion has not arrived
	remote     []uring.SQE // mu: SQEs queued for the loop
	hasRemote  atomic.Bool // remote is non-empty
}

const (
	// cancelUserData marks the SQEs whose completions are ignored (cancels).
	cancelUserData = 0
	// remoteTag marks the user_data of operations started with Start.
	remoteTag = 1 << 63
)

// uringOp is one operation in the kernel. Its memory is pinned from
// submission until reset, which runs exactly once, after the CQE.
//
//	free --acquire--> submitted --CQE--> done --release--> free
//	submitted --task canceled--> abandoned --CQE--> released by the loop
type uringOp struct {
	userData  uint64
	res       int32          // the CQE's result, once done
	busy      bool           // submitted and not released
	done      bool           // the CQE arrived
	abandoned bool           // nobody waits; release at the CQE
	leaked    bool           // the kernel kept it past Close: never unpinned
	waker     Waker          // the waiting task or poller
	pinner    runtime.Pinner // buffers, iovecs, paths, sockaddrs in use by the kernel
	iov       []unix.Iovec   // reused by Readv/Writev
	ts        unix.Timespec  // Timeout's time
	sa        unix.RawSockaddrAny
}

// Uring returns the pool's io_uring, creating it on first use: default 64
// entries (WithUringEntries), its fd registered in the epoll set. With
// WithLockOSThread the ring is set up single-issuer with cooperative task
// running (IORING_SETUP_SINGLE_ISSUER|COOP_TASKRUN) where the kernel has
// them: only the loop thread submits, and completions do not interrupt it.
// If the kernel refuses io_uring the error wraps ErrUringUnavailable and the
// cause, and is returned again by later calls.
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
		p.logUringRefused(err)
		return nil, err
	}
	p.uring.Store(u)
	return u, nil
}

// setupFlags lists the setup flags to try, best first; a kernel rejects
// flags it does not know with EINVAL. A single-issuer ring is created
// disabled and enabled by its first submission, on the loop thread, which
// binds it to that thread wherever Uring was called.
func setupFlags(locked bool) []uint32 {
	if locked {
		return []uint32{uring.SetupSingleIssuer | uring.SetupCoopTaskrun | uring.SetupRDisabled, uring.SetupCoopTaskrun, 0}
	}
	return []uint32{0}
}

func newUring(p *Pool) (*Uring, error) {
	unavailable := func(err error) error { return fmt.Errorf("%w: %w", ErrUringUnavailable, err) }
	if p.opts.uringRefuse != nil {
		return nil, unavailable(os.NewSyscallError("io_uring_setup", p.opts.uringRefuse))
	}
	if err := sys.Inject(sys.CallUringSetup); err != nil {
		return nil, unavailable(os.NewSyscallError("io_uring_setup", err))
	}
	var ring *uring.Ring
	var err error
	for _, flags := range setupFlags(p.opts.lockOSThread) {
		if ring, err = uring.New(p.opts.uringEntries, flags); !errors.Is(err, unix.EINVAL) {
			break
		}
	}
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
	if err := p.be.add(ring.Fd(), unix.EPOLLIN|unix.EPOLLET, tokenRing); err != nil {
		ring.Close()
		return nil, fmt.Errorf("iopool: registering the io_uring fd: %w", err)
	}
	return &Uring{p: p, ring: ring, probe: probe, enabled: ring.Flags()&uring.SetupRDisabled == 0}, nil
}

// Probe reports whether the kernel supports an io_uring opcode.
func (u *Uring) Probe(op uint8) bool { return u.probe.Supported(op) }

// acquire takes a task-layer op. Loop only.
func (u *Uring) acquire() (*uringOp, error) {
	if u.closed.Load() {
		return nil, ErrClosed
	}
	var op *uringOp
	if n := len(u.free); n > 0 {
		op = u.free[n-1]
		u.free = u.free[:n-1]
	} else {
		op = &uringOp{}
		u.ops = append(u.ops, op)
		op.userData = uint64(len(u.ops))
	}
	op.busy = true
	u.inflight++
	return op, nil
}

// reset unpins the op's memory: the one place where memory held for the
// kernel is given back. Called once per operation, after its CQE.
func (op *uringOp) reset() {
	op.pinner.Unpin()
	op.busy, op.done, op.abandoned, op.waker, op.res = false, false, false, nil, 0
	clear(op.iov)
	op.iov = op.iov[:0]
}

// release recycles a task-layer op. Loop only.
func (u *Uring) release(op *uringOp) {
	op.reset()
	u.free = append(u.free, op)
}

// pushOnLoop puts an SQE straight into the ring; the caller runs on the
// loop goroutine. A full SQ is submitted first.
func (u *Uring) pushOnLoop(sqe *uring.SQE) {
	slot := u.ring.NextSQE()
	if slot == nil {
		u.submit()
		slot = u.ring.NextSQE()
		for slot == nil {
			// The kernel took nothing (EBUSY: its completion queue is
			// full). Make room by draining completions, whose wakers
			// run in the next cycle, then retry.
			u.drain(&u.p.wakers)
			u.submit()
			slot = u.ring.NextSQE()
		}
	}
	*slot = *sqe
}

// submit makes one io_uring_enter for the queued SQEs. Loop only.
func (u *Uring) submit() {
	if !u.enabled {
		// Binds a single-issuer ring to this thread, the loop's.
		if err := u.ring.Enable(); err != nil {
			panic(fmt.Sprintf("iopool: enabling the io_uring on the loop thread: %v", err))
		}
		u.enabled = true
	}
	if sys.Inject(sys.CallUringEnter) != nil {
		return // as EBUSY: the SQEs stay queued for the next try
	}
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
// Loop only; the lock is taken only for completions of remote operations.
func (u *Uring) drain(wakers *WakerList) {
	locked := false
	n := u.ring.DrainCQ(func(c uring.CQE) {
		var op *uringOp
		switch {
		case c.UserData == cancelUserData:
			return
		case c.UserData&remoteTag != 0:
			if !locked {
				u.mu.Lock()
				locked = true
			}
			op = u.remoteOps[c.UserData&^remoteTag]
			u.remoteLive--
		default:
			op = u.ops[c.UserData-1]
			u.inflight--
		}
		op.res, op.done = c.Res, true
		switch {
		case !op.abandoned:
			wakers.Add(op.waker)
			op.waker = nil
		case c.UserData&remoteTag != 0:
			u.releaseRemoteLocked(op)
		default:
			u.release(op)
		}
	})
	if locked {
		u.mu.Unlock()
	}
	if n > 0 {
		u.p.stats.uringCompleted.Add(uint64(n))
	}
	if u.ring.CQOverflowPending() {
		u.submit() // GETEVENTS flushes the kernel's overflow list
	}
}

// run submits one operation inside task t and waits for its result. An
// empty name is derived from the opcode, only if an error needs it.
func (u *Uring) run(t *Task, name string, op *uringOp, sqe *uring.SQE) (int32, error) {
	sqe.UserData = op.userData
	u.pushOnLoop(sqe)
	res, err := Await[int32](t, (*taskOp)(op))
	if err != nil {
		u.abandon(op)
		return 0, err
	}
	u.release(op)
	if res < 0 {
		if name == "" {
			name = opName(sqe.Opcode)
		}
		return res, opError(name, res)
	}
	return res, nil
}

// abandon gives up waiting for op: a completed op is recycled at once, one
// still in the kernel is canceled and recycled when its CQE arrives, its
// buffers pinned until then. Loop only.
func (u *Uring) abandon(op *uringOp) {
	if op.done {
		u.release(op)
		return
	}
	op.abandoned = true
	cancel := uring.SQE{Opcode: uring.OpAsyncCancel, Addr: op.userData, UserData: cancelUserData}
	u.pushOnLoop(&cancel)
}

// opError is the error of a CQE with a negative result.
func opError(name string, res int32) error {
	return fmt.Errorf("iopool: %w", os.NewSyscallError("io_uring "+name, unix.Errno(-res)))
}

// opName names an opcode for an error message.
func opName(opcode uint8) string {
	return fmt.Sprintf("op %d", opcode)
}

// taskOp is a uringOp awaited by a task; both run on the loop goroutine.
type taskOp uringOp

// Poll is ready with the CQE's result.
func (f *taskOp) Poll(cx *Context) (int32, bool) {
	if f.done {
		return f.res, true
	}
	f.waker = cx.waker
	return 0, false
}

// prepare takes an op inside task t and pins bufs.
func (u *Uring) prepare(t *Task, bufs ...[]byte) (*uringOp, error) {
	t.checkCurrent()
	op, err := u.acquire()
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
	if off < -1 {
		return fmt.Errorf("iopool: io_uring %s: negative offset %d (-1 means the file position)", name, off)
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
	op, err := u.prepare(t)
	if err != nil {
		return err
	}
	_, err = u.run(t, "nop", op, &uring.SQE{Opcode: uring.OpNop})
	return err
}

// Read reads into buf from fd at offset off, inside task t. An offset of -1
// reads at the file's position and advances it, as read(2) does; pipes and
// sockets ignore the offset.
func (u *Uring) Read(t *Task, fd int, buf []byte, off int64) (int, error) {
	return u.rw(t, "read", uring.OpRead, fd, buf, off)
}

// Write writes buf to fd at offset off, inside task t. Like pwrite, it may
// write less than len(buf).
func (u *Uring) Write(t *Task, fd int, buf []byte, off int64) (int, error) {
	return u.rw(t, "write", uring.OpWrite, fd, buf, off)
}

func (u *Uring) rw(t *Task, name string, opcode uint8, fd int, buf []byte, off int64) (int, error) {
	op, sqe, err := u.prepareRW(t, name, opcode, fd, buf, off)
	if err != nil {
		return 0, err
	}
	n, err := u.run(t, name, op, &sqe)
	return int(n), err
}

// prepareRW checks a read or write, takes its op and pins buf.
func (u *Uring) prepareRW(t *Task, name string, opcode uint8, fd int, buf []byte, off int64) (*uringOp, uring.SQE, error) {
	if err := checkRW(name, buf, off); err != nil {
		return nil, uring.SQE{}, err
	}
	op, err := u.prepare(t, buf)
	if err != nil {
		return nil, uring.SQE{}, err
	}
	return op, uring.SQE{Opcode: opcode, Fd: int32(fd), Addr: bufAddr(buf), Len: uint32(len(buf)), Off: uint64(off)}, nil
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
	if off < -1 {
		return 0, fmt.Errorf("iopool: io_uring %s: negative offset %d (-1 means the file position)", name, off)
	}
	if len(bufs) == 0 {
		return 0, fmt.Errorf("iopool: io_uring %s: no buffers", name)
	}
	op, err := u.prepare(t, bufs...)
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
	op, err := u.prepare(t)
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
	op, err := u.prepare(t)
	if err != nil {
		return -1, err
	}
	op.pinner.Pin(p)
	sqe := uring.SQE{Opcode: uring.OpOpenat, Fd: int32(dirfd), Addr: uint64(uintptr(unsafe.Pointer(p))), Len: mode, OpFlags: uint32(flags | unix.O_CLOEXEC)}
	fd, err := u.run(t, "openat", op, &sqe)
	if fd < 0 {
		return -1, pathError("openat", path, fd)
	}
	return int(fd), err
}

// pathError is the error of a negative result of an operation on path: an
// *os.PathError naming it, so errors.Is(err, fs.ErrNotExist) works too.
func pathError(name, path string, res int32) error {
	return fmt.Errorf("iopool: %w", &os.PathError{Op: "io_uring " + name, Path: path, Err: unix.Errno(-res)})
}

// Close closes fd, inside task t.
func (u *Uring) Close(t *Task, fd int) error {
	op, err := u.prepare(t)
	if err != nil {
		return err
	}
	_, err = u.run(t, "close", op, &uring.SQE{Opcode: uring.OpClose, Fd: int32(fd)})
	return err
}

// Statx fills st with the status of path relative to dirfd (unix.AT_FDCWD
// for the working directory; with unix.AT_EMPTY_PATH in flags and an empty
// path, of dirfd itself), inside task t. mask says which fields are wanted
// (unix.STATX_BASIC_STATS for all the usual ones).
func (u *Uring) Statx(t *Task, dirfd int, path string, flags int, mask uint32, st *unix.Statx_t) error {
	if st == nil {
		return fmt.Errorf("iopool: io_uring statx %q: nil Statx_t", path)
	}
	p, err := unix.BytePtrFromString(path)
	if err != nil {
		return fmt.Errorf("iopool: io_uring statx %q: %w", path, err)
	}
	op, err := u.prepare(t)
	if err != nil {
		return err
	}
	op.pinner.Pin(p)
	op.pinner.Pin(st)
	sqe := uring.SQE{Opcode: uring.OpStatx, Fd: int32(dirfd), Addr: uint64(uintptr(unsafe.Pointer(p))), Len: mask,
		Off: uint64(uintptr(unsafe.Pointer(st))), OpFlags: uint32(flags)}
	res, err := u.run(t, "statx", op, &sqe)
	if res < 0 {
		return pathError("statx", path, res)
	}
	return err
}

// Accept accepts a connection on the listening socket fd inside task t
// and returns the new fd, nonblocking and close-on-exec. Unlike a readiness
// wait, the kernel completes it when a connection arrives. The peer's
// address is unix.Getpeername(nfd).
func (u *Uring) Accept(t *Task, fd int) (int, error) {
	op, err := u.prepare(t)
	if err != nil {
		return -1, err
	}
	sqe := uring.SQE{Opcode: uring.OpAccept, Fd: int32(fd), OpFlags: unix.SOCK_NONBLOCK | unix.SOCK_CLOEXEC}
	nfd, err := u.run(t, "accept", op, &sqe)
	if err != nil {
		return -1, err
	}
	return int(nfd), nil
}

// Connect connects the socket fd to sa inside task t. sa is a
// *unix.SockaddrInet4, *unix.SockaddrInet6 or *unix.SockaddrUnix.
func (u *Uring) Connect(t *Task, fd int, sa unix.Sockaddr) error {
	var raw unix.RawSockaddrAny
	n, err := rawSockaddr(sa, &raw)
	if err != nil {
		return fmt.Errorf("iopool: io_uring connect: %w", err)
	}
	op, err := u.prepare(t)
	if err != nil {
		return err
	}
	op.sa = raw
	op.pinner.Pin(op)
	sqe := uring.SQE{Opcode: uring.OpConnect, Fd: int32(fd), Addr: uint64(uintptr(unsafe.Pointer(&op.sa))), Off: uint64(n)}
	_, err = u.run(t, "connect", op, &sqe)
	return err
}

// rawSockaddr encodes sa in the kernel's layout and returns its length.
func rawSockaddr(sa unix.Sockaddr, raw *unix.RawSockaddrAny) (uint32, error) {
	*raw = unix.RawSockaddrAny{}
	port := func(p *uint16, v int) error {
		if v < 0 || v > 0xffff {
			return fmt.Errorf("port %d out of range", v)
		}
		b := (*[2]byte)(unsafe.Pointer(p))
		b[0], b[1] = byte(v>>8), byte(v) // network byte order
		return nil
	}
	switch sa := sa.(type) {
	case *unix.SockaddrInet4:
		in := (*unix.RawSockaddrInet4)(unsafe.Pointer(raw))
		in.Family, in.Addr = unix.AF_INET, sa.Addr
		return unix.SizeofSockaddrInet4, port(&in.Port, sa.Port)
	case *unix.SockaddrInet6:
		in := (*unix.RawSockaddrInet6)(unsafe.Pointer(raw))
		in.Family, in.Addr, in.Scope_id = unix.AF_INET6, sa.Addr, sa.ZoneId
		return unix.SizeofSockaddrInet6, port(&in.Port, sa.Port)
	case *unix.SockaddrUnix:
		un := (*unix.RawSockaddrUnix)(unsafe.Pointer(raw))
		n := len(sa.Name)
		if n == 0 || n >= len(un.Path) {
			return 0, fmt.Errorf("unix socket path %q: want 1..%d bytes", sa.Name, len(un.Path)-1)
		}
		un.Family = unix.AF_UNIX
		for i := range n {
			un.Path[i] = int8(sa.Name[i])
		}
		size := uint32(2 + n + 1)
		if sa.Name[0] == '@' { // abstract: a leading NUL, no trailing one
			un.Path[0] = 0
			size--
		}
		return size, nil
	case nil:
		return 0, errors.New("nil address")
	default:
		return 0, fmt.Errorf("unsupported address type %T", sa)
	}
}

// Send sends buf on a socket, inside task t.
func (u *Uring) Send(t *Task, fd int, buf []byte, flags int) (int, error) {
	if err := checkRW("send", buf, 0); err != nil {
		return 0, err
	}
	op, err := u.prepare(t, buf)
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
	op, err := u.prepare(t, buf)
	if err != nil {
		return 0, err
	}
	sqe := uring.SQE{Opcode: uring.OpRecv, Fd: int32(fd), Addr: bufAddr(buf), Len: uint32(len(buf)), OpFlags: uint32(flags)}
	n, err := u.run(t, "recv", op, &sqe)
	return int(n), err
}

// PollAdd waits inside task t until fd signals one of events (one-shot).
func (u *Uring) PollAdd(t *Task, fd int, events PollEvents) (PollEvents, error) {
	op, err := u.prepare(t)
	if err != nil {
		return 0, err
	}
	sqe := uring.SQE{Opcode: uring.OpPollAdd, Fd: int32(fd), OpFlags: uint32(events)}
	res, err := u.run(t, "poll_add", op, &sqe)
	return PollEvents(res), err
}

// Timeout completes after d, inside task t (an io_uring timer).
func (u *Uring) Timeout(t *Task, d time.Duration) error {
	op, err := u.prepare(t)
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
	op, err := u.prepare(t, keep...)
	if err != nil {
		return 0, err
	}
	var sqe uring.SQE
	prep(&sqe)
	return u.run(t, "", op, &sqe)
}

// Completion is an operation started from any goroutine with Start: a
// Future of its CQE result, and Wait for plain goroutines. Poll or Wait it
// until it is ready: its buffers are released then.
type Completion struct {
	u     *Uring
	op    *uringOp
	res   int32
	taken bool // res holds the result and op went back to the pool
}

// Start submits an operation from any goroutine: the SQE is queued for the
// loop, which submits it in its next cycle. keep lists the buffers the
// kernel will use; they stay pinned until the completion is consumed.
func (u *Uring) Start(prep func(*SQE), keep ...[]byte) (*Completion, error) {
	var sqe uring.SQE
	prep(&sqe)
	u.mu.Lock()
	if u.closed.Load() {
		u.mu.Unlock()
		return nil, ErrClosed
	}
	var op *uringOp
	if n := len(u.remoteFree); n > 0 {
		op = u.remoteOps[u.remoteFree[n-1]]
		u.remoteFree = u.remoteFree[:n-1]
	} else {
		op = &uringOp{userData: remoteTag | uint64(len(u.remoteOps))}
		u.remoteOps = append(u.remoteOps, op)
	}
	for _, b := range keep {
		if len(b) > 0 {
			op.pinner.Pin(&b[0])
		}
	}
	op.busy = true
	u.remoteLive++
	sqe.UserData = op.userData
	u.remote = append(u.remote, sqe)
	first := !u.hasRemote.Swap(true)
	u.mu.Unlock()
	if first {
		u.p.wake()
	}
	return &Completion{u: u, op: op}, nil
}

// releaseRemoteLocked recycles a remote op. Called with u.mu held.
func (u *Uring) releaseRemoteLocked(op *uringOp) {
	op.reset()
	u.remoteFree = append(u.remoteFree, uint32(op.userData&^remoteTag))
}

// Poll is ready with the CQE's result; the buffers are released then.
func (c *Completion) Poll(cx *Context) (int32, bool) {
	if c.taken {
		return c.res, true
	}
	u := c.u
	u.mu.Lock()
	defer u.mu.Unlock()
	if !c.op.done {
		c.op.waker = cx.waker
		return 0, false
	}
	c.res, c.taken = c.op.res, true
	if !c.op.leaked {
		u.releaseRemoteLocked(c.op)
	}
	return c.res, true
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
// their completions, and unmaps the ring. Called by Pool.Close on the loop
// goroutine, after the loop stopped: the tasks are gone, and a task's
// operation still in flight was abandoned and canceled when its task was.
// Remote operations are canceled; their waiters see -ECANCELED.
func (u *Uring) close() error {
	u.mu.Lock()
	u.closed.Store(true)
	u.mu.Unlock()
	u.flush() // SQEs queued before the close reach the kernel, to be canceled
	u.mu.Lock()
	for _, op := range u.remoteOps {
		if op.busy && !op.done {
			u.pushOnLoop(&uring.SQE{Opcode: uring.OpAsyncCancel, Addr: op.userData, UserData: cancelUserData})
		}
	}
	u.mu.Unlock()
	var wakers WakerList
	for start := time.Now(); ; {
		u.flush()
		u.drain(&wakers)
		u.mu.Lock()
		left := u.inflight + u.remoteLive
		u.mu.Unlock()
		if left == 0 || time.Since(start) > time.Second {
			break
		}
		time.Sleep(time.Millisecond)
	}
	// An op the kernel is done with but nobody consumed (a Batch never
	// waited for, a Completion dropped) is unpinned now: a Pinner that
	// becomes garbage while still pinning panics the process.
	for _, op := range u.ops {
		if op.busy && op.done {
			op.pinner.Unpin()
		}
	}
	u.mu.Lock()
	for _, op := range u.remoteOps {
		if op.busy && op.done {
			op.pinner.Unpin()
		}
	}
	u.mu.Unlock()
	// Whatever the kernel still holds stays pinned and reachable forever.
	leak := func(op *uringOp) {
		op.leaked = true
		leakedOps.Lock()
		leakedOps.ops = append(leakedOps.ops, op)
		leakedOps.Unlock()
	}
	for _, op := range u.ops {
		if op.busy && !op.done {
			leak(op)
		}
	}
	u.mu.Lock()
	for _, op := range u.remoteOps {
		if op.busy && !op.done {
			leak(op)
			op.res, op.done = -int32(unix.ECANCELED), true
			wakers.Add(op.waker)
			op.waker = nil
		}
	}
	u.mu.Unlock()
	wakers.WakeAll()
	return u.ring.Close()
}
