//go:build linux

package iopool

import (
	"fmt"
	"runtime/debug"
)

// leanWorker is one worker task of a LeanServer: it takes ready
// connections off the queue and runs their handlers, and parks when there
// are none.
type leanWorker struct {
	srv    *LeanServer
	task   *Task  // mu: set when it starts
	buf    []byte // the handlers' scratch buffer
	idle   bool   // mu: in srv.idle
	called bool   // mu: counted in srv.spawning
}

// run is the worker task. It ends when the server closes, when it is
// canceled, when enough others are idle, or with a handler's Goexit.
func (w *leanWorker) run(t *Task) (struct{}, error) {
	srv := w.srv
	srv.mu.Lock()
	w.task = t
	srv.mu.Unlock()
	defer w.exit()
	size := srv.BufferSize
	if size <= 0 {
		size = 16 << 10
	}
	w.buf = make([]byte, size)
	for served := 1; ; served++ {
		c, err := Await[*leanConn](t, w)
		if err != nil || c == nil {
			return struct{}{}, nil
		}
		w.serve(t, c)
		// A queue that never empties (handlers that return with data left
		// are queued again at once) must not keep the loop from its
		// events, timers and other tasks.
		if served%leanBatch == 0 {
			if err := t.Yield(); err != nil {
				return struct{}{}, nil
			}
		}
	}
}

// leanBatch is how many connections a worker serves in a row before it
// lets the loop run.
const leanBatch = 64

// Poll is ready with the next ready connection, or with nil when the
// worker should end; it is pending while the queue is empty.
func (w *leanWorker) Poll(cx *PollContext) (*leanConn, error) {
	srv := w.srv
	srv.mu.Lock()
	if w.called {
		w.called = false
		srv.spawning--
	}
	if srv.closed {
		srv.mu.Unlock()
		return nil, nil
	}
	if c := srv.popReadyLocked(); c != nil {
		if w.idle { // woken by something else than a call
			w.idle = false
			srv.idle = removeWorker(srv.idle, w)
		}
		c.state = connBusy
		call := srv.callWorkerLocked() // for the rest of the queue
		srv.mu.Unlock()
		call.run()
		return c, nil
	}
	if !w.idle {
		if len(srv.idle) >= maxIdleWorkers {
			srv.mu.Unlock()
			return nil, nil
		}
		w.idle = true
		srv.idle = append(srv.idle, w)
	}
	srv.mu.Unlock()
	return nil, ErrPending
}

// exit takes the worker out of the server's books, and calls another
// worker if it leaves connections waiting.
func (w *leanWorker) exit() {
	srv := w.srv
	srv.mu.Lock()
	if w.called {
		w.called = false
		srv.spawning--
	}
	if w.idle {
		w.idle = false
		srv.idle = removeWorker(srv.idle, w)
	}
	srv.workers = removeWorker(srv.workers, w)
	call := srv.callWorkerLocked()
	srv.mu.Unlock()
	call.run()
}

func removeWorker(ws []*leanWorker, w *leanWorker) []*leanWorker {
	for i, x := range ws {
		if x == w {
			last := len(ws) - 1
			ws[i] = ws[last]
			ws[last] = nil
			return ws[:last]
		}
	}
	return ws
}

// serve runs c's handler once and then ends c or lets it go idle. A panic
// in the handler is recovered and ends c (the worker goes on); a Goexit
// ends c and then the worker.
func (w *leanWorker) serve(t *Task, c *leanConn) {
	returned := false
	defer func() {
		if returned {
			return
		}
		var err error
		if v := recover(); v != nil {
			pe := &PanicError{Task: t.name, Value: v, Stack: debug.Stack()}
			t.pool.logTaskPanic(pe)
			err = pe
		} else {
			err = fmt.Errorf("iopool: LeanServer handler ended: %w", ErrGoexit)
		}
		w.srv.finish(c, err)
	}()
	err := c.h.ServeReady(t, c.sock, w.buf)
	returned = true
	if err != nil {
		w.srv.finish(c, err)
		return
	}
	w.srv.rearm(c)
}

// finish ends c, which its worker has been serving.
func (srv *LeanServer) finish(c *leanConn, err error) {
	srv.mu.Lock()
	c.state = connDone
	srv.conns.remove(c)
	srv.mu.Unlock()
	srv.end(c, err)
}

// rearm lets c go idle, with c as the waker of its socket's read slot, or
// queues it again at once if the socket is readable already. The state
// moves to idle first, so that a wake from now on (the readiness, or the
// socket closed by Close on another goroutine) queues it.
func (srv *LeanServer) rearm(c *leanConn) {
	srv.mu.Lock()
	if srv.closed {
		c.state = connDone
		srv.conns.remove(c)
		srv.mu.Unlock()
		srv.end(c, ErrClosed)
		return
	}
	c.state = connIdle
	srv.mu.Unlock()
	cx := PollContext{waker: c}
	if _, ok := c.sock.fr.PollReady(&cx, SlotRead, PollIn|PollRdHup); ok {
		c.Wake()
	}
}
