//go:build linux

package iopool

// The io_uring submitter: the ring and the loop's side (push, enter, flush,
// drain, close). The op table and its states are in uring_optable.go, the
// operations in uring_ops.go, Start and Completion (any goroutine) in uring_remote.go,
// Batch in uring_batch.go.
//
// Ownership. The ring fd and its mappings belong to the Uring, created under
// Pool.uringMu and closed by Pool.Close (which takes that lock first, so a
// ring created while the pool closes is seen and closed). Every operation,
// whoever started it, is one slot of one op table, loop only; the memory it
// lends to the kernel is pinned from before its SQE is published until its
// final completion, and finish is the one function that unpins it and frees
// the slot.

import (
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/iopool/iopool/internal/sys"
	"github.com/iopool/iopool/internal/uring"
)

const defaultUringEntries = 64

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
func WithUringEntries(n uint32) PoolGroupOption {
	return eachPoolOption(func(o *options) error {
		if n < 1 || n > uring.MaxEntries {
			return fmt.Errorf("iopool: WithUringEntries(%d): want 1..%d entries", n, uring.MaxEntries)
		}
		o.uringEntries = n
		return nil
	})
}

// Uring submits io_uring operations on a pool. Operations that take a
// *Task run inside that task: their SQE goes straight into the ring, and
// all SQEs queued in one loop cycle reach the kernel in one io_uring_enter.
// Start, for plain goroutines, queues the SQE for the loop.
//
// Buffer ownership: a buffer passed to an operation is pinned and kept
// reachable until the kernel's final completion for it has been consumed. If
// the waiting task is canceled, the call returns at once what every await
// of a canceled task returns (ErrCanceled, carrying the cancel's cause for
// a SpawnContext task), the operation is canceled in the kernel
// (IORING_OP_ASYNC_CANCEL), and the buffer stays pinned until its
// completion arrives; do not reuse it before the call returns. The package documentation says what happens to an
// operation at cancel, at Close and when its task ends without waiting.
type Uring struct {
	p     *Pool
	ring  *uring.Ring  // loop only
	probe *uring.Probe // read-only

	// The op table, for every operation whoever started it: loop only.
	enabled  bool      // false until a ring created disabled is enabled
	ops      []*opSlot // every op ever made; user_data = index+1
	free     []*opSlot // the ops in state opFree
	inflight int       // ops not free: in the kernel or abandoned
	closing  bool      // close has begun: no new operation

	// Operations started with Start wait here for the loop (uring_remote.go).
	mu        sync.Mutex
	closed    bool          // mu: close has begun; Start returns ErrClosed
	remote    []remoteEntry // mu: queued by Start, not yet in the ring
	spare     []remoteEntry // loop only: remote's previous array, reused
	hasRemote atomic.Bool   // remote is non-empty
}

// uringSlot is the pool's io_uring, created on first use by Driver.Uring.
// uring is read by any goroutine without a lock (the loop drains and
// flushes the ring it finds there); creation and Close's look at it are
// serialized by uringMu.
type uringSlot struct {
	uring    atomic.Pointer[Uring] // nil until created; never replaced
	uringMu  sync.Mutex            // serializes creation with itself and with Close (uringForClose)
	uringErr error                 // uringMu: why the ring could not be created, returned again by later calls
}

// Uring returns the pool's io_uring, creating it on first use: default 64
// entries (WithUringEntries), its fd registered in the epoll set. With
// WithLockOSThread the ring is set up single-issuer with cooperative task
// running (IORING_SETUP_SINGLE_ISSUER|COOP_TASKRUN) where the kernel has
// them: only the loop thread submits, and completions do not interrupt it.
// If the kernel refuses io_uring the error wraps ErrUringUnavailable and the
// cause, and is returned again by later calls. On a closed (or closing)
// pool it returns ErrClosed.
func (d *Driver) Uring() (*Uring, error) {
	p := d.p
	if u := p.uring.Load(); u != nil {
		return u, nil
	}
	// uringMu is held from the closed check to the store: Close takes it
	// before it looks for the ring (uringForClose), so a ring is either
	// refused here or seen and closed there.
	p.uringMu.Lock()
	defer p.uringMu.Unlock()
	if u := p.uring.Load(); u != nil {
		return u, nil
	}
	if p.uringErr != nil {
		return nil, p.uringErr
	}
	if p.isClosing() {
		return nil, ErrClosed
	}
	u, err := newUring(p)
	if err != nil {
		if !errors.Is(err, ErrClosed) {
			p.uringErr = err
			p.logUringRefused(err)
		}
		return nil, err
	}
	p.uring.Store(u)
	return u, nil
}

// uringForClose returns the pool's ring for Close to close. Called after
// closed is set: a creation in progress holds uringMu and finishes first.
func (p *Pool) uringForClose() *Uring {
	p.uringMu.Lock()
	defer p.uringMu.Unlock()
	return p.uring.Load()
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
	if err := p.be.faults.Inject(sys.CallUringSetup); err != nil {
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
	if err := p.be.add(ring.Fd(), PollIn, tokenRing); err != nil {
		ring.Close()
		return nil, fmt.Errorf("iopool: registering the io_uring fd: %w", err)
	}
	return &Uring{p: p, ring: ring, probe: probe, enabled: ring.Flags()&uring.SetupRDisabled == 0}, nil
}

// Probe reports whether the kernel supports an io_uring opcode.
func (u *Uring) Probe(op uint8) bool { return u.probe.Supported(op) }

// push puts op's SQE into the SQ. Loop only.
func (u *Uring) push(op *opSlot, sqe *uring.SQE) {
	sqe.UserData = uint64(op.index) + 1
	u.pushSQE(sqe)
}

// pushSQE copies an SQE into the ring; the caller runs on the loop
// goroutine. A full SQ is submitted first.
func (u *Uring) pushSQE(sqe *uring.SQE) {
	for !u.ring.PushSQE(sqe) {
		u.enter()
		if u.ring.SQSpace() == 0 {
			// The kernel took nothing (EBUSY: its completion queue is
			// full). Make room by draining completions, whose wakers run
			// in the next cycle, then retry.
			u.drain(&u.p.wakers)
		}
	}
}

// enter makes one io_uring_enter for the queued SQEs. Loop only.
func (u *Uring) enter() {
	if !u.enabled {
		// Binds a single-issuer ring to this thread, the loop's.
		if err := u.ring.Enable(); err != nil {
			panic(fmt.Sprintf("iopool: enabling the io_uring on the loop thread: %v", err))
		}
		u.enabled = true
	}
	if u.p.be.faults.Inject(sys.CallUringEnter) != nil {
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

// flush moves remote operations into the ring and submits everything
// queued in this cycle with one io_uring_enter. Loop only.
func (u *Uring) flush() {
	if u.hasRemote.Load() {
		u.takeRemote()
	}
	if u.ring.SQPending() > 0 || u.ring.CQOverflowPending() {
		u.enter()
	}
}

// drain consumes the completions, finishing the ops whose final CQE it
// sees and collecting their waiters' wakers. Loop only.
func (u *Uring) drain(wakers *WakerList) {
	head, tail := u.ring.CQ()
	if head == tail {
		return
	}
	for i := head; i != tail; i++ {
		c := u.ring.CQE(i)
		if c.UserData == cancelUserData || c.Flags&uring.CQEFMore != 0 {
			continue
		}
		u.finish(u.ops[c.UserData-1], c.Res, wakers)
	}
	u.ring.AdvanceCQ(tail)
	u.p.stats.uringCompleted.Add(uint64(tail - head))
	if u.ring.CQOverflowPending() {
		u.enter() // GETEVENTS flushes the kernel's overflow list
	}
}

// leakedOps keeps the ops that the kernel still held at Close's deadline
// reachable (and pinned) for the life of the process, rather than let it
// write into freed memory.
var leakedOps struct {
	sync.Mutex
	ops []*opSlot
}

// closeDeadline bounds how long Close waits for the kernel to complete the
// operations it cancels. A variable for tests.
var closeDeadline = time.Second

// close cancels every operation still in the kernel (a canceled task's, a
// batch's whose task ended without waiting, a Start's), waits for their
// completions, finishing each through finish, and unmaps the ring. Called
// by Pool.Close on the loop goroutine, after the loop stopped. Operations
// queued by Start and not yet submitted never reach the kernel; they and
// every other remote operation that Close cancels complete with ErrClosed.
func (u *Uring) close() error {
	var wakers WakerList
	u.mu.Lock()
	u.closed = true
	for _, e := range u.remote {
		w := e.c.result.waker
		e.c.result = opResult{res: -int32(unix.ECANCELED), done: true, closed: true}
		wakers.Add(w)
	}
	clear(u.remote)
	u.remote = u.remote[:0]
	u.hasRemote.Store(false)
	u.mu.Unlock()
	u.closing = true
	for _, op := range u.ops {
		if op.state != opInKernel {
			continue
		}
		if op.remote {
			u.mu.Lock()
			op.result.closed = true
			u.mu.Unlock()
		}
		u.pushSQE(&uring.SQE{Opcode: uring.OpAsyncCancel, Addr: uint64(op.index) + 1, UserData: cancelUserData})
	}
	for deadline := time.Now().Add(closeDeadline); ; {
		u.flush()
		u.drain(&wakers)
		left := time.Until(deadline)
		if u.inflight == 0 || left <= 0 {
			break
		}
		// Wait for the ring fd to have completions, one millisecond at a
		// time (left > 0 rounds up to poll's whole millisecond; EINTR is as
		// good as a timeout here).
		fds := []unix.PollFd{{Fd: int32(u.ring.Fd()), Events: unix.POLLIN}}
		_, _ = unix.Poll(fds, int((min(left, time.Millisecond)+time.Millisecond-1)/time.Millisecond))
	}
	// Whatever the kernel still holds stays pinned and reachable forever.
	for _, op := range u.ops {
		if op.state != opInKernel && op.state != opAbandoned {
			continue
		}
		if op.remote {
			u.mu.Lock()
			r := op.result
			r.res, r.done, r.closed = -int32(unix.ECANCELED), true, true
			wakers.Add(r.waker)
			r.waker = nil
			u.mu.Unlock()
		}
		op.state, op.result, op.batch = opLeaked, nil, nil
		leakedOps.Lock()
		leakedOps.ops = append(leakedOps.ops, op)
		leakedOps.Unlock()
	}
	wakers.WakeAll()
	return u.ring.Close()
}
