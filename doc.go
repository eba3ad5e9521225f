//go:build linux

// Package iopool is an embeddable, single-threaded epoll + io_uring executor.
//
// A Pool is one event loop on one goroutine (optionally one locked OS
// thread). It owns an epoll instance, an eventfd that wakes it, a timer heap
// and, created on first use, an io_uring. Everything it runs — tasks, fd
// readiness, timers, io_uring completions — is driven from the goroutine
// the pool starts for Run (or Start), one task at a time, so code inside a
// pool needs no locks. Run drives the pool while a root task runs; Start
// runs it until Close, for programs whose work is goroutine code (net/http
// over Listener.NetListener). It follows the design of the epoll executor
// of OpenVMM's pal_async.
//
// # Two layers
//
// The poll layer is made of futures: a Future's Poll is ready now, with its
// value and error (the one way a future reports failure), or stores the
// PollContext's Waker and returns ErrPending. The channels, Handle, Timer,
// FdSignal and Completion are futures; FdReady.PollReady and
// Timer.PollTimer are poll functions of the same kind that cannot fail and
// report readiness as a bool. They allocate nothing in steady state. The task layer turns them into straight-line Go: a task is a
// func(t *Task) running as a coroutine on the pool, and Await(t, fut) polls
// fut and, while it is pending, switches back to the loop until its waker
// fires (docs/micro.md measures a switch out and back).
//
// A task's coroutine is a goroutine: it starts with Go's smallest stack
// (2 KiB) and keeps it while every call it makes fits; its stack doubles
// the first time one does not, and a task suspended in a wait never gets
// the memory back. Socket I/O leaves a task about 380 bytes of its own
// frames (big arrays on the stack, deep helpers) at a Read or Write before
// that happens; a server that holds many idle connections keeps its
// per-connection code within that, or serves them with LeanServer, which
// holds no task while a connection is idle (docs/conns.md measures both).
//
//	p, _ := iopool.New()
//	defer p.Close()
//	err := p.Run(func(t *iopool.Task) error {
//		h := iopool.Spawn(p.Driver(), "worker", func(t *iopool.Task) (int, error) {
//			return 42, t.Sleep(10 * time.Millisecond)
//		})
//		v, err := h.Join(t)
//		...
//	})
//
// # Calling conventions
//
// A call that may wait takes the task first: Dial(t, ...), Socket.Read(t,
// buf), Handle.Join(t), Select(t, ...), WaitProcess(t, proc). Everything
// bound to a pool is made by its Driver: as a method (Driver.NewFdReady,
// NewFdSignal, NewTimer, After, NewTicker, Listen, ListenPacket, NewSocket,
// NewNetConn, NotifySignals, Uring), or, where Go has no generic methods,
// as a function taking the driver first (Spawn(drv, ...), SpawnContext(drv,
// ctx, ...), NewJoinSet[T](drv)).
//
// # Edge-triggered readiness and ClearReady
//
// Driver.NewFdReady registers any fd (socket, pipe, eventfd, timerfd,
// signalfd, pidfd, tun, vfio, netlink) once, edge-triggered, for IN, OUT,
// PRI, RDHUP (ERR and HUP are always reported). Readiness is kept in two
// slots, SlotRead and SlotWrite, so one task can wait to read while another
// waits to write. The protocol is epoll's: wait for readiness, do I/O until
// the fd returns EAGAIN, then call ClearReady for that slot and wait again.
// Waiting without ClearReady after EAGAIN returns at once with the old
// readiness; calling ClearReady while data remains waits for an edge that
// may never come. Close an FdReady before closing its fd. Several tasks may
// wait on one slot: its next readiness wakes them all.
//
// A short read ends the data only on a TCP stream without urgent data;
// Socket.Read relies on it there and nowhere else (a terminal in canonical
// mode, a datagram, seqpacket or tun fd, a unix stream carrying fds and TCP
// at an urgent mark all return short reads with data behind them), so
// every other fd is read until EAGAIN.
//
// # Close and fd numbers
//
// A closed fd number is reused at once by the next open, accept or socket
// in the process, so iopool never makes a syscall on a number its owner may
// have closed. Sockets, Listeners, FdSignals and NetConns work like Go's own
// net.Conn: each read, write, accept or shutdown holds a reference for the
// time of its syscall; Close, from any goroutine, marks the object closing
// and wakes its waiters, which return an error matching both ErrClosed and
// net.ErrClosed without another syscall; Close closes the fd once the syscalls
// in flight on other goroutines have dropped their references. The pool's own epoll
// fd and eventfd are guarded the same way: a registration, deregistration
// or wake racing Pool.Close either finishes before the fds are closed or
// fails with ErrClosed and touches nothing. Pool.Close also wakes plain
// goroutines blocked on its timers (Timer.Err then reports ErrClosed) and
// FdSignals.
//
// # Timers
//
// The loop sleeps exactly until the earliest armed timer, with a nanosecond
// timeout (epoll_pwait2; epoll_wait with the timeout rounded up on kernels
// without it, never a busy spin). A sleep ends late by the kernel's wake-up
// latency plus the thread's timer slack (50 µs by default); the loop lowers
// the slack to 1 ns for its timed waits (for the whole Run on a pool created
// WithLockOSThread, for each wait shorter than 2 ms otherwise); docs/micro.md
// measures the overshoot against time.Sleep.
// Timers may be polled and re-armed
// from any goroutine; re-arming allocates nothing. Timers due at the same
// instant fire in the order they were armed.
//
// A pool created WithVirtualClock has a virtual clock instead, for tests:
// it stands still while the pool has work and jumps to the next timer when
// the pool is idle, so timeouts of hours take microseconds. Task.Now and
// Pool.Now read the pool's clock, real or virtual; compute deadlines from
// them. WithVirtualClock says what goroutines outside the pool, io_uring
// operations and context deadlines do to it.
//
// # io_uring buffer ownership
//
// Submissions queued during a loop cycle reach the kernel in one
// io_uring_enter just before the loop sleeps. Operations that complete
// inside that io_uring_enter (NOPs, reads served from the page cache) are
// drained by the next cycle without an epoll_wait. With WithLockOSThread the
// ring is single-issuer and cooperative (IORING_SETUP_SINGLE_ISSUER|
// COOP_TASKRUN) where the kernel has them: only the loop thread talks to it,
// Pool.Close included.
//
// Every operation, whether a task's, a Batch entry or one started with
// Uring.Start, lends memory to the kernel (buffers, iovecs, paths, socket
// addresses). That memory stays reachable and pinned from before the SQE is
// published until the operation's final completion has been consumed, and
// is released then, once, by the loop, whatever became of whoever started
// it:
//
//   - Cancel. A task canceled while its operation is in the kernel gets
//     ErrCanceled at once; the operation is canceled in the kernel
//     (IORING_OP_ASYNC_CANCEL) and its memory stays pinned until its
//     completion arrives, so do not reuse a buffer before the call returned.
//     If the completion was consumed before the task saw the cancel, the
//     result wins: the call returns it (a new fd, the bytes read). If an
//     Openat or Accept the task gave up on succeeds anyway, the pool closes
//     the new fd. A canceled Batch.Await cancels the entries still in the
//     kernel the same way and closes the fds its completed entries opened.
//   - A task that ends without waiting. A Batch whose task returned or
//     panicked before Await, or a Completion nobody waits for, holds its
//     memory until the operation completes and not a moment longer: the
//     result is stored where Await or Wait would have found it, and the slot freed.
//   - Close. Pool.Close cancels every operation still in the kernel, task,
//     batch and remote alike, waits for their completions (at most a
//     second: an operation the kernel will not let go of stays pinned for
//     the life of the process rather than be written after it is freed),
//     and unmaps the ring. A Completion's Wait then returns an error
//     wrapping ErrClosed (and ECANCELED); Start and the task-layer
//     operations return ErrClosed.
//
// Each operation lives from one SQE to one completion: Submit, Start and
// Batch.Submit refuse SQEs that would post several completions or none
// (multishot poll, recv, accept and timeouts, zero-copy sends,
// IOSQE_IO_LINK, IOSQE_IO_HARDLINK, IOSQE_CQE_SKIP_SUCCESS) with
// ErrUnsupportedSQE. A ring belongs to its pool: its task-layer operations
// panic in a task of another pool; use Uring.Start from other goroutines.
//
// A task waiting for each of its operations pays two coroutine switches per
// operation. A Batch (Uring.NewBatch) queues many operations and waits for
// all of them with one suspension; docs/micro.md compares the two with a
// bare ring.
//
// # Go conventions
//
// The pool speaks the types Go code already uses: Listener.NetListener is a
// net.Listener (net/http serves from a pool), Driver.ListenPacket opens UDP and
// unixgram sockets with a net.PacketConn view, Dial resolves host names off
// the loop, Driver.NotifySignals brings os/signal into tasks, SpawnContext ties a
// task to a context.Context (the cause survives in its error), JoinSet and
// Select wait for many tasks or for the first of several futures, Ticker
// ticks on a grid. Every task runs with the pprof labels "pool" and "task";
// WithLogger and WithStallReport report rare events and tasks that hog the
// loop.
//
// # Thread per core
//
// A Group is N pools, one per CPU (NewGroup(0, WithPinCPU()) pins each to
// its own), run together by Group.Run with a root per pool. Group.Listen
// opens one SO_REUSEPORT listener per pool on one address; each pool
// accepts only from its own (GroupListener.Accept), so a connection lives
// and dies on the pool that accepted it and the pools share no lock.
// GroupListenConfig.SteerByCPU hands each connection to the pool of the
// CPU that processed its SYN. A pool closed first takes its listener with
// it: the kernel sends later connections to the others and resets what the
// closed one had queued (GroupListener.Dropped counts them). Work crosses
// pools with Spawn(g.Driver(j), ...), the answer coming back through a
// Oneshot or the Handle; a pool runs tasks only while its root runs, or
// from Group.Start until Close.
//
// # What is safe off the loop goroutine
//
// Pool.Close, Pool.Stats, Pool.Tasks, Pool.Now, Pool.Driver, every method of Driver (NewFdReady,
// NewTimer, Listen, After...) and every function that takes one (Spawn,
// SpawnContext, NewJoinSet), Waker.Wake, Handle.Wait/Cancel/Result, Timer methods,
// FdReady.Close, the channels (Oneshot, Chan), Uring.Start, every method of
// NetConn and of the net.Listener and net.PacketConn from
// Listener.NetListener and PacketSocket.NetPacketConn, JoinSet's Spawn, Len,
// CancelAll and Close, Ticker.Reset and Stop, Signals.Stop, and every
// method of Group and GroupListener except Accept may be used
// from any goroutine. A *Task may be used only inside its own task function: Await,
// Sleep, Yield and the blocking-style methods that take a *Task panic when
// called from anywhere else. Close must not be called from a task of the
// same pool (it would wait for itself); return from the root task instead.
//
// # Mistakes and what they do
//
// A mistake either works as the user meant or fails loudly and at once,
// naming what was wrong; none hangs silently. Programmer errors panic with
// an "iopool: ..." message; bad input returns an error.
//
//   - runtime.Goexit in a task (t.FailNow or require.* in a test): only
//     that task ends; Join, Handle.Wait and Run return an error wrapping
//     ErrGoexit that names the task, and the pool goes on.
//   - A panic in a task: Join and Wait return a *PanicError with the
//     task's stack; Run re-panics with it for the root task.
//   - A *Task used outside its own function (another goroutine, another
//     task, after it returned): panics.
//   - Pool.Close from one of the pool's own tasks, also while Close drains
//     them: panics (it would wait for itself). From a task of another pool
//     it works: that task waits until this pool's tasks have finished.
//   - A blocking call inside a task: Handle.Wait for a task of the same
//     pool panics (use Join); BlockOn, Chan.RecvWait and Oneshot.Wait panic
//     when they would block (use Await and Recv), since the task's pool
//     could run nothing else meanwhile. A NetConn (or the net.Listener and
//     net.PacketConn views) that would wait inside a task panics too; and a
//     task that waits on a Socket, Listener or PacketSocket a net view took
//     over panics, since that socket left the pool's epoll set.
//   - runtime.LockOSThread held (or the lock of a WithLockOSThread pool
//     undone) across an await: the Go runtime ends the process with "fatal
//     error: coro: OS thread locking must match locking at coroutine
//     creation". This one is not caught, the runtime giving no cheap way to
//     see it coming; lock and unlock between two awaits, or use
//     WithLockOSThread (see Task).
//   - Two tasks waiting on the same slot of one FdReady, or reading one
//     Socket: both are woken by its readiness; the one that finds no data
//     waits again.
//   - A nil waker (NewPollContext(nil)): every future ignores it; the poller
//     must poll again by itself.
//   - A deadline in the past: the call fails at once with an error
//     satisfying errors.Is(err, os.ErrDeadlineExceeded). A deadline after
//     the year 2262 means never, as in package net. Deadlines are kept on
//     the pool's monotonic clock: a wall-clock step does not move them.
//   - Goroutine code waiting on a pool whose loop is not running (no Start,
//     no Run: BlockOn of a pool's future, Handle.Wait, a Chan's RecvWait):
//     served if the loop starts within a second, otherwise it fails with
//     ErrNotRunning, which says to call Start or Run; an earlier deadline
//     still ends it first. The net views (NetConn, net.Listener,
//     net.PacketConn) wait in Go's own poller and need no loop.
//   - Dial of a unix listener whose accept queue is full: an error wrapping
//     EAGAIN, as in package net, not an unconnected socket.
//   - WaitProcess on a process already waited for: an error wrapping
//     os.ErrProcessDone, never a wait for whatever process took its pid.
//   - Closing an fd before its FdReady: FdReady.Close returns
//     ErrFdClosedFirst and touches no other registration.
//   - Using a closed Socket, FdReady, FdSignal or pool: ErrClosed (which
//     matches net.ErrClosed), with no syscall on the fd number.
//   - A burst of a million values through a Chan: its memory is given
//     back once the receiver has drained it.
package iopool
