//go:build linux

package iopool

// Operations started from any goroutine: Start queues the SQE under u.mu,
// the loop moves it into a slot of the op table and the SQ before its next
// io_uring_enter (takeRemote), and the Completion receives the result under
// u.mu.

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"

	"github.com/iopool/iopool/internal/uring"
)

// remoteEntry is an operation started with Start, waiting for the loop.
// lent and keep hold the memory the entry names reachable until the loop
// pins it in the op.
type remoteEntry struct {
	sqe  uring.SQE
	lent []any
	keep [][]byte
	c    *Completion
}

// Completion is an operation started from any goroutine with Start: a
// Future of its final CQE's result, and Wait for plain goroutines. The
// operation's buffers are unpinned when its completion arrives, whether or
// not anybody polls the Completion.
type Completion struct {
	u      *Uring
	result opResult // u.mu
}

// Start submits an operation from any goroutine: prep fills the SQE, which
// is queued for the loop and submitted in its next cycle. keep lists the
// buffers the kernel will use; they stay reachable, and pinned once the
// loop submits the SQE, until its completion arrives. SQEs that would post
// several completions or none are refused with ErrUnsupportedSQE (see
// Submit); a nil prep panics. On a closed pool Start returns ErrClosed.
func (u *Uring) Start(prep func(*SQE), keep ...[]byte) (*Completion, error) {
	sqe, lent, err := prepSQE("Uring.Start", prep)
	if err != nil {
		return nil, err
	}
	c := &Completion{u: u}
	u.mu.Lock()
	if u.closed {
		u.mu.Unlock()
		return nil, ErrClosed
	}
	u.remote = append(u.remote, remoteEntry{sqe: sqe, lent: lent, keep: keep, c: c})
	first := !u.hasRemote.Swap(true)
	u.mu.Unlock()
	if first {
		u.p.wake()
	}
	return c, nil
}

// takeRemote moves the operations queued by Start into slots of the op
// table and into the SQ. The queue is swapped out under u.mu and processed
// without it: pushing may drain completions, and finish takes u.mu for a
// Completion's result. Loop only.
func (u *Uring) takeRemote() {
	u.mu.Lock()
	queued := u.remote
	u.remote, u.spare = u.spare[:0], nil
	u.hasRemote.Store(false)
	u.mu.Unlock()
	for i := range queued {
		e := &queued[i]
		op := u.take(e.sqe.Opcode)
		op.pinLent(e.lent, e.keep)
		op.remote, op.result = true, &e.c.result
		u.push(op, &e.sqe)
	}
	clear(queued)
	u.spare = queued[:0]
}

// Poll is ready once the operation's completion arrived, with its result,
// and an error for a negative one (the result is then the negated errno).
// If the pool closed first (the operation was canceled by Close, or never
// submitted), the error wraps ErrClosed as well as ECANCELED.
func (c *Completion) Poll(cx *PollContext) (int32, error) {
	u := c.u
	u.mu.Lock()
	defer u.mu.Unlock()
	if !c.result.done {
		c.result.waker = cx.waker
		u.p.notePark(cx.waker)
		return 0, ErrPending
	}
	res := c.result.res
	if res >= 0 {
		return res, nil
	}
	err := os.NewSyscallError("io_uring", unix.Errno(-res))
	if c.result.closed && errors.Is(err, unix.ECANCELED) {
		return res, fmt.Errorf("%w: %w", ErrClosed, err)
	}
	return res, fmt.Errorf("iopool: %w", err)
}

// Wait blocks a plain goroutine until the operation completes and returns
// its result and error, as Poll does.
func (c *Completion) Wait() (int32, error) {
	return BlockOn[int32](c)
}
