//go:build linux

package iopool

import (
	"errors"
	"sync"
)

// ConnHandler is the state and the code of one connection of a
// LeanServer: a value per connection (usually a pointer to the user's
// struct), made by LeanServer.NewConn or passed to LeanServer.Add.
type ConnHandler interface {
	// ServeReady serves the connection while it has data. It runs in one
	// of the server's worker tasks, first when the connection is added and
	// then each time, after it returned nil, the socket has something to
	// read (data, the peer's end of stream, an error). It reads with
	// s.TryRead and returns nil once that reports ErrWouldBlock: the
	// connection then holds no task and no stack until it is readable
	// again. It may also return nil earlier, after one request, to let
	// other connections run: if data is left, it is called again after
	// the connections that were ready before it.
	//
	// Inside, it is ordinary task code: s.Write(t, ...) waits for room,
	// t.Sleep and Await suspend the worker (other workers serve the other
	// connections meanwhile). buf is the worker's scratch buffer, valid
	// until ServeReady returns and shared with the other connections
	// served by that worker: keep nothing in it across calls.
	//
	// A non-nil error ends the connection: the server closes s and calls
	// ConnClosed with that error (io.EOF for a peer that hung up, by
	// convention). So does a panic, recovered into a *PanicError, and
	// runtime.Goexit, which also ends the worker. If the worker task is
	// canceled (LeanServer.Close), its awaits return ErrCanceled.
	ServeReady(t *Task, s *Socket, buf []byte) error
}

// LeanServer serves stream connections with handlers that hold no task
// while their connection is idle: an idle connection costs its Socket
// registration and its ConnHandler, not a goroutine stack. A small set of
// worker tasks, shared by all the connections of the server, runs the
// ConnHandler of each connection that has become readable, one at a time
// per connection, in the order they became ready.
//
// Workers are spawned when connections are ready and no worker is free
// (each handler that is suspended, in a Write or a Sleep, keeps one), up to
// MaxWorkers, and a few idle ones are kept for the next burst. All of them
// run on the pool of the first socket served.
//
// Set the fields before the first Serve or Add, and do not change them
// afterwards. The zero value with NewConn set is ready to Serve.
type LeanServer struct {
	// NewConn returns the handler (the per-connection state) of a
	// connection accepted by Serve. It runs in Serve's task.
	NewConn func(s *Socket) ConnHandler
	// ConnClosed, if not nil, is called once for every connection that
	// ends, after its socket is closed, with the reason: the error its
	// handler returned, a *PanicError, or ErrClosed for one that Close
	// ended while it was idle. It runs in the goroutine that ended the
	// connection: a worker task, or the caller of Close.
	ConnClosed func(h ConnHandler, err error)
	// BufferSize is the size of each worker's scratch buffer; 0 means
	// 16 KiB.
	BufferSize int
	// MaxWorkers bounds the worker tasks; 0 means no bound. Handlers that
	// are suspended keep their worker, so with a bound, a ready connection
	// waits while that many handlers are suspended.
	MaxWorkers int

	mu        sync.Mutex
	pool      *Pool         // mu: the pool of the first socket, where workers run
	closed    bool          // mu: Close was called
	conns     leanConnList  // mu: every connection not yet ended
	ready     []*leanConn   // mu: connections waiting for a worker, from readyHead
	readyHead int           // mu
	idle      []*leanWorker // mu: parked workers, the last parked on top
	workers   []*leanWorker // mu: live workers, for Close to cancel
	spawning  int           // mu: workers called for the queue that have not looked at it yet
	listeners []*Listener   // mu: in Serve, closed by Close
}

// maxIdleWorkers bounds the workers kept parked for the next burst.
const maxIdleWorkers = 4

// Connection states, guarded by the server's mu. The one who moves a
// connection to connDone ends it (closes the socket, calls ConnClosed).
//
//	connQueued --a worker takes it-->                    connBusy
//	connBusy   --ServeReady returned nil-->               connIdle (then the readiness is polled)
//	connIdle   --Wake (readable, or the socket closed)-->  connQueued
//	connBusy   --error, panic, Goexit, server closed-->  connDone (by the worker)
//	connIdle, connQueued --Close-->                      connDone (by Close)
const (
	connQueued uint8 = iota
	connBusy
	connIdle
	connDone
)

// leanConn is one connection of a LeanServer. While idle, it is the Waker
// stored in its socket's read slot: nothing else of it runs or waits.
type leanConn struct {
	srv        *LeanServer
	sock       *Socket
	h          ConnHandler
	prev, next *leanConn // srv.mu: the server's list of connections
	state      uint8     // srv.mu
}

// Wake queues the connection for a worker. A wake that finds it queued,
// being served or ended is dropped: a worker that finishes serving it
// polls its readiness again before it goes idle.
func (c *leanConn) Wake() {
	srv := c.srv
	srv.mu.Lock()
	if c.state != connIdle || srv.closed {
		srv.mu.Unlock()
		return
	}
	c.state = connQueued
	srv.ready = append(srv.ready, c)
	call := srv.callWorkerLocked()
	srv.mu.Unlock()
	call.run()
}

// Serve accepts connections on l inside task t and serves each with the
// handler NewConn returns, until l is closed, t is canceled or the server
// is closed. It returns nil after Close, else the error of Accept. The
// connections accepted stay served after Serve returns, until they end or
// the server is closed.
func (srv *LeanServer) Serve(t *Task, l *Listener) error {
	if srv.NewConn == nil {
		panic("iopool: LeanServer.Serve with a nil NewConn")
	}
	srv.mu.Lock()
	if srv.closed {
		srv.mu.Unlock()
		return nil
	}
	srv.listeners = append(srv.listeners, l)
	srv.mu.Unlock()
	defer srv.forgetListener(l)
	for {
		s, err := l.Accept(t)
		if err != nil {
			if srv.isClosed() && errors.Is(err, ErrClosed) {
				return nil
			}
			return err
		}
		if err := srv.Add(s, srv.NewConn(s)); err != nil && !errors.Is(err, ErrClosed) {
			return err
		}
	}
}

// Add serves s with h, starting with a ServeReady call, and owns s from
// then on: the server closes it when the connection ends. After Close it
// closes s and returns ErrClosed. Safe from any goroutine; every socket
// of a server must be of one pool.
func (srv *LeanServer) Add(s *Socket, h ConnHandler) error {
	if h == nil {
		panic("iopool: LeanServer.Add with a nil ConnHandler")
	}
	c := &leanConn{srv: srv, sock: s, h: h}
	srv.mu.Lock()
	if srv.closed {
		srv.mu.Unlock()
		s.Close()
		return wrapError(ErrClosed, "LeanServer.Add fd %d", s.fd)
	}
	switch {
	case srv.pool == nil:
		srv.pool = s.fr.p
	case srv.pool != s.fr.p:
		srv.mu.Unlock()
		panic("iopool: LeanServer.Add: a socket of another pool than the server's first")
	}
	srv.conns.push(c)
	c.state = connQueued
	srv.ready = append(srv.ready, c)
	call := srv.callWorkerLocked()
	srv.mu.Unlock()
	call.run()
	return nil
}

// Len returns the number of connections served now.
func (srv *LeanServer) Len() int {
	srv.mu.Lock()
	defer srv.mu.Unlock()
	return srv.conns.n
}

// Close stops the server: it closes the listeners of Serve, ends the idle
// and queued connections (closing their sockets and calling ConnClosed
// with ErrClosed, on the caller's goroutine), closes the sockets of the
// connections being served and cancels every worker; those connections
// end in their workers as their handlers return. It does not wait for
// them. Safe from any goroutine; a second Close does nothing.
func (srv *LeanServer) Close() error {
	srv.mu.Lock()
	if srv.closed {
		srv.mu.Unlock()
		return nil
	}
	srv.closed = true
	var ended, busy []*leanConn
	for c := srv.conns.head; c != nil; {
		next := c.next
		if c.state == connBusy {
			busy = append(busy, c)
		} else {
			c.state = connDone
			srv.conns.remove(c)
			ended = append(ended, c)
		}
		c = next
	}
	srv.ready, srv.readyHead = nil, 0
	listeners := srv.listeners
	var workers []*Task
	for _, w := range srv.workers {
		if w.task != nil { // else it has not started: it will see closed
			workers = append(workers, w.task)
		}
	}
	srv.mu.Unlock()

	for _, l := range listeners {
		l.Close()
	}
	for _, c := range busy {
		c.sock.Close() // its handler sees ErrClosed; its worker ends it
	}
	for _, t := range workers {
		t.Cancel()
	}
	for _, c := range ended {
		c.sock.Close()
		srv.connClosed(c, ErrClosed)
	}
	return nil
}

func (srv *LeanServer) isClosed() bool {
	srv.mu.Lock()
	defer srv.mu.Unlock()
	return srv.closed
}

func (srv *LeanServer) forgetListener(l *Listener) {
	srv.mu.Lock()
	for i, x := range srv.listeners {
		if x == l {
			srv.listeners = append(srv.listeners[:i], srv.listeners[i+1:]...)
			break
		}
	}
	srv.mu.Unlock()
}

// end closes c's socket and reports why c ended. The caller has moved c to
// connDone and taken it off the list.
func (srv *LeanServer) end(c *leanConn, err error) {
	c.sock.Close()
	srv.connClosed(c, err)
}

func (srv *LeanServer) connClosed(c *leanConn, err error) {
	if srv.ConnClosed != nil {
		srv.ConnClosed(c.h, err)
	}
}

// popReadyLocked takes the connection that has waited longest, or nil.
func (srv *LeanServer) popReadyLocked() *leanConn {
	if srv.readyHead == len(srv.ready) {
		return nil
	}
	c := srv.ready[srv.readyHead]
	srv.ready[srv.readyHead] = nil
	srv.readyHead++
	if srv.readyHead == len(srv.ready) {
		// Empty: reuse the array, unless a burst left it large.
		if cap(srv.ready) > 1024 {
			srv.ready = nil
		} else {
			srv.ready = srv.ready[:0]
		}
		srv.readyHead = 0
	}
	return c
}

// workerCall is what callWorkerLocked decided, done once mu is released
// (waking a task or spawning one takes the pool's lock).
type workerCall struct {
	wake  *leanWorker
	spawn bool
	srv   *LeanServer
}

// callWorkerLocked makes sure a worker is coming for the queue: none is
// called while one already is (it will serve the whole queue, calling the
// next worker before it serves a connection of its own); else an idle
// worker is woken, or a new one spawned unless MaxWorkers are running (then
// a busy worker takes the queue when its handler returns).
func (srv *LeanServer) callWorkerLocked() workerCall {
	if srv.spawning > 0 || srv.readyHead == len(srv.ready) || srv.closed {
		return workerCall{}
	}
	if n := len(srv.idle); n > 0 {
		w := srv.idle[n-1]
		srv.idle = srv.idle[:n-1]
		w.idle, w.called = false, true
		srv.spawning++
		return workerCall{wake: w}
	}
	if srv.MaxWorkers > 0 && len(srv.workers) >= srv.MaxWorkers {
		return workerCall{}
	}
	w := &leanWorker{srv: srv, called: true}
	srv.workers = append(srv.workers, w)
	srv.spawning++
	return workerCall{wake: w, spawn: true, srv: srv}
}

func (call workerCall) run() {
	switch {
	case call.spawn:
		Spawn(&call.srv.pool.drv, "lean worker", call.wake.run)
	case call.wake != nil:
		call.wake.task.Wake()
	}
}

// leanConnList is a LeanServer's list of its connections, linked through
// them: it costs a connection two pointers, not a slot in a growing table.
type leanConnList struct {
	head *leanConn
	n    int
}

func (l *leanConnList) push(c *leanConn) {
	c.next = l.head
	if l.head != nil {
		l.head.prev = c
	}
	l.head = c
	l.n++
}

// remove unlinks c; a connection not in the list is left alone.
func (l *leanConnList) remove(c *leanConn) {
	if c.prev == nil && l.head != c {
		return
	}
	if c.prev != nil {
		c.prev.next = c.next
	} else {
		l.head = c.next
	}
	if c.next != nil {
		c.next.prev = c.prev
	}
	c.prev, c.next = nil, nil
	l.n--
}
