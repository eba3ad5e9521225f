package iopool

import (
	"runtime"
	"sync/atomic"
)

// fdRef counts the operations in flight on a registered fd, after Go's
// internal/poll fdMutex (without its reader and writer queues: a task pool
// serializes its own callers, and NetConn keeps its own locks). Each
// operation that makes a syscall on the fd number (read, write, accept4,
// shutdown) holds a reference for exactly the length of that syscall and
// never across an await; Close marks the object closing, after which no
// reference is granted; and whoever drops the last reference destroys the
// object: deregisters it and, for a Socket, closes the number. So a number
// is never closed under a syscall that uses it, and no syscall is made with
// it once Close has begun.
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
//	open, n       --markClosing--> closing, n+1   (Close takes a reference)
//	closing, n    --incref-->      refused, unchanged (the caller reports ErrClosed)
//	closing, n+1  --decref-->      closing, n; at n == 0 the caller destroys
//
// Every operation is one atomic instruction, or a compare-and-swap loop that
// retries only when another goroutine changed the word in between.
type fdRef struct {
	state     atomic.Uint64
	destroyed atomic.Bool // set by destroy, once; Close waits for it
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

// decref drops a reference and reports whether it was the last one of a
// closing object: then the caller must destroy it.
func (r *fdRef) decref() bool {
	return r.state.Add(^(refOne - 1)) == refClosing // subtract refOne
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

// waitDestroyed waits until the last reference is dropped and the object
// destroyed. The references in flight are nonblocking syscalls made by other
// goroutines (never by a task suspended in an await, which holds none), so
// the wait is as long as one syscall.
func (r *fdRef) waitDestroyed() {
	for !r.destroyed.Load() {
		runtime.Gosched()
	}
}
