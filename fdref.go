//go:build linux

package iopool

import (
	"runtime"
	"sync/atomic"
)

// fdRef counts the operations in flight on a registered fd, after Go's
// internal/poll fdMutex (without its reader and writer queues: a task pool
// serializes its own callers, and NetConn keeps its own locks). Each
// operation that makes a syscall on the fd number (read, write, accept4,
// shutdown, setsockopt) holds a reference for exactly the length of that
// syscall and never across an await. Close marks the object closing, after
// which no reference is granted, and holds a reference of its own; it waits
// for the syscalls in flight to drop theirs, deregisters the fd and closes
// the number (a Socket's), and drops its reference last. So a number is
// never closed under a syscall that uses it, and no syscall is made with it
// once Close has begun.
//
// The state word:
//
//	bit 0      closing: Close has begun; incref fails from now on
//	bits 1-63  references held: syscalls in flight, plus Close's own one
//	           while Close runs
//
// Transitions (n is the reference count):
//
//	open, n       --incref-->      open, n+1
//	open, n+1     --decref-->      open, n
//	open, n       --markClosing--> closing, n+1   (Close takes its reference)
//	closing, n    --incref-->      refused, unchanged (the caller reports ErrClosed)
//	closing, n+1  --decref-->      closing, n     (syscalls finishing)
//	closing, 1    Close deregisters and closes, then drops the last reference: closing, 0
//
// Every operation is one atomic instruction, or a compare-and-swap loop that
// retries only when another goroutine changed the word in between. The word
// is the whole cost per registration: 8 bytes.
type fdRef struct {
	state atomic.Uint64
}

const (
	refClosing uint64 = 1 // bit 0 of the state word
	refOne     uint64 = 2 // one reference
)

// incref takes a reference for one syscall. It fails once Close has begun.
func (r *fdRef) incref() bool {
	for {
		old := r.state.Load()
		if old&refClosing != 0 {
			return false
		}
		if r.state.CompareAndSwap(old, old+refOne) {
			return true
		}
	}
}

// decref drops a reference.
func (r *fdRef) decref() {
	r.state.Add(^(refOne - 1)) // subtract refOne
}

// markClosing starts Close: it sets the closing bit and takes Close's own
// reference. It reports false if Close had begun already.
func (r *fdRef) markClosing() bool {
	for {
		old := r.state.Load()
		if old&refClosing != 0 {
			return false
		}
		if r.state.CompareAndSwap(old, (old|refClosing)+refOne) {
			return true
		}
	}
}

// closing reports whether Close has begun.
func (r *fdRef) closing() bool { return r.state.Load()&refClosing != 0 }

// waitFor waits until the state word is want: closing with only Close's
// reference left (refClosing+refOne, before Close deregisters), or with none
// (refClosing, once Close is done). The references in flight are
// nonblocking syscalls made by other goroutines (never by a task suspended
// in an await, which holds none), so the wait is as long as one syscall.
func (r *fdRef) waitFor(want uint64) {
	for r.state.Load() != want {
		runtime.Gosched()
	}
}
