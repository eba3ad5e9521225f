//go:build linux

package iopool

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"
)

// registrationEvents is what every FdReady asks the backend for, once, for
// its whole life (edge-triggered, like every registration, so the loop
// never re-arms or modifies it).
const registrationEvents = PollIn | PollOut | PollPri | PollRdHup

// fdRegistration is an FdReady's registration, the object the kernel names
// in its events (its address is the epoll token). It is pinned from
// registration until it is released, and reachable from the pool's fd table
// (or its to-delete list) all that time.
//
// Life cycle:
//
//	registered  --FdReady.Close, loop Running-->            released
//	registered  --FdReady.Close, loop Sleeping/Waking-->   toDelete
//	toDelete    --the loop finishes dispatching that batch--> released
//	registered  --fd closed first (caller bug)-->           orphaned until the pool closes
type fdRegistration struct {
	mu        sync.Mutex     // guards interests
	interests interestSet    // mu
	pinner    runtime.Pinner // keeps the registration's address stable while the kernel holds the token
	index     int            // pool.mu: position in the fd table, -1 when not in it, regDetached when out of the epoll set
}

// regDetached is the index of a registration that is not in the pool's
// epoll set (a socket served through the runtime's poller, see goPoll):
// never added, or taken out by detach. It stays so; nothing delivers to it.
const regDetached = -2

// deliver records events from the kernel and collects the wakers to wake.
func (reg *fdRegistration) deliver(ev PollEvents, wakers *WakerList) {
	reg.mu.Lock()
	reg.interests.wakeReady(ev, wakers)
	reg.mu.Unlock()
}

// release unpins the registration. It is called exactly once, when no
// kernel batch can name it any more.
func (reg *fdRegistration) release() { reg.pinner.Unpin() }

// fdTable holds every registration, so that they stay reachable while their
// tokens are in the kernel.
type fdTable struct {
	regs    []*fdRegistration
	orphans []*fdRegistration // registrations whose fd was closed before the FdReady; kept until Close
}

func (t *fdTable) add(reg *fdRegistration) {
	reg.index = len(t.regs)
	t.regs = append(t.regs, reg)
}

func (t *fdTable) remove(reg *fdRegistration) {
	i := reg.index
	if i < 0 {
		return
	}
	last := len(t.regs) - 1
	t.regs[i] = t.regs[last]
	t.regs[i].index = i
	t.regs[last] = nil
	t.regs = t.regs[:last]
	reg.index = -1
}

func (t *fdTable) takeAll() []*fdRegistration {
	all := append(t.regs, t.orphans...)
	for _, reg := range t.regs {
		reg.index = -1
	}
	t.regs, t.orphans = nil, nil
	return all
}

// FdReady is an fd registered with a pool's epoll instance, edge-triggered,
// for readiness in two independent slots (SlotRead, SlotWrite) so that one
// task can wait to read while another waits to write.
//
// The protocol is that of edge-triggered epoll: wait until ready, then do I/O
// until it returns EAGAIN, then call ClearReady for that slot and wait again.
// An FdReady must be closed before its fd is closed.
type FdReady struct {
	p   *Pool
	reg *fdRegistration
	fd  int
	dev uint64 // identity of the file at registration, checked by Close
	ino uint64
	ref fdRef // syscalls in flight on fd, and the closing bit
	// gp, once set, is the fd's registration with the runtime's poller: the
	// fd's goroutines wait there, and it closes the number (see goPoll).
	// It sits in what the allocation's size class leaves over.
	gp atomic.Pointer[goPoll]
	// waitEvents holds what WaitReady waits for, per slot: the futures
	// readWait and writeWait are this FdReady itself, so waiting allocates
	// nothing and costs no memory per registration. Task only.
	waitEvents [slotCount]PollEvents
}

// NewFdReady registers fd with the pool. The fd should be nonblocking; it is
// not closed or otherwise changed. Errors name the fd and the cause: EBADF
// for an invalid fd, EEXIST for an fd this pool already watches, EPERM for a
// file epoll cannot watch (a regular file).
func (d *Driver) NewFdReady(fd int) (*FdReady, error) { return d.newFdReady(fd, true) }

// newFdReady is NewFdReady; without register, fd stays out of the epoll set
// (regDetached): it is for a socket whose goroutines wait in the runtime's
// poller (goPoll), and nothing is pinned or added to the fd table.
func (d *Driver) newFdReady(fd int, register bool) (*FdReady, error) {
	p := d.p
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return nil, wrapError(os.NewSyscallError("fstat", err), "registering fd %d", fd)
	}
	if !register {
		if p.isClosing() {
			return nil, wrapError(ErrClosed, "registering fd %d", fd)
		}
		reg := &fdRegistration{index: regDetached}
		return &FdReady{p: p, reg: reg, fd: fd, dev: st.Dev, ino: st.Ino}, nil
	}
	reg := &fdRegistration{index: -1}
	reg.pinner.Pin(reg)

	p.mu.Lock()
	if p.closing || p.closed {
		p.mu.Unlock()
		reg.release()
		return nil, wrapError(ErrClosed, "registering fd %d", fd)
	}
	// Added to the table before epoll_ctl so that no event can name a registration
	// the pool does not hold.
	p.fds.add(reg)
	p.mu.Unlock()

	// The token is reg's address: reg is pinned (above) and held by the
	// pool's fd table until it is released, so the address the kernel hands
	// back always names a live, unmoved registration.
	if err := p.be.add(fd, registrationEvents, tokenOf(unsafe.Pointer(reg))); err != nil {
		p.mu.Lock()
		// If Close released the pool meanwhile (add then fails with
		// ErrClosed), reg left the table with every other one and Close
		// unpinned it: only the one who takes reg out of the table
		// releases it.
		ours := reg.index >= 0
		p.fds.remove(reg)
		p.mu.Unlock()
		if ours {
			reg.release()
		}
		return nil, wrapError(err, "registering fd %d", fd)
	}
	p.stats.fdsRegistered.Add(1)
	return &FdReady{p: p, reg: reg, fd: fd, dev: st.Dev, ino: st.Ino}, nil
}

// Fd returns the registered fd.
func (fr *FdReady) Fd() int { return fr.fd }

// PollReady is ready with the events of slot that intersect events (PollErr
// and PollHup are always included) once the fd has signaled them; otherwise
// it stores the waker and is pending. After Close it is ready with PollErr.
//
// Several pollers (tasks, goroutines) may wait on one slot at once: the
// slot keeps each distinct waker and its next readiness wakes them all, as
// does a poller that finds the slot ready (the others poll again and see
// it too). With edge-triggered readiness they then race for the data: the
// losers see EAGAIN, call ClearReady, and wait again.
func (fr *FdReady) PollReady(cx *PollContext, slot InterestSlot, events PollEvents) (PollEvents, bool) {
	checkSlot(slot) // before the lock: a panic must not leave it held
	if fr.closing() {
		return PollErr, true
	}
	var others WakerList
	fr.reg.mu.Lock()
	ev, ok := fr.reg.interests.pollReady(cx, slot, events, &others)
	fr.reg.mu.Unlock()
	if others.Len() > 0 {
		others.WakeAll() // they poll again and see the readiness too
	}
	if !ok {
		fr.p.notePark(cx.waker)
	}
	return ev, ok
}

// WaitReady suspends task t until PollReady is ready and returns its events.
// Several tasks may wait on one slot (see PollReady); they should ask for
// the same events, since the slot's WaitReady keeps one event mask, the
// last one asked for.
func (fr *FdReady) WaitReady(t *Task, slot InterestSlot, events PollEvents) (PollEvents, error) {
	switch slot {
	case SlotRead:
		fr.waitEvents[slot] = events
		return Await[PollEvents](t, (*readWait)(fr))
	case SlotWrite:
		fr.waitEvents[slot] = events
		return Await[PollEvents](t, (*writeWait)(fr))
	}
	panic(fmt.Sprintf("iopool: invalid InterestSlot %d: use SlotRead or SlotWrite", uint8(slot)))
}

// ClearReady forgets the readiness seen in slot: call it after the fd
// returned EAGAIN, so that the next PollReady waits for a new edge.
func (fr *FdReady) ClearReady(slot InterestSlot) {
	checkSlot(slot)
	fr.reg.mu.Lock()
	fr.reg.interests.clearReady(slot)
	fr.reg.mu.Unlock()
}

// ClearEvents forgets only the readiness ev seen in slot. After a short
// read that emptied the receive queue, call ClearEvents(SlotRead, PollIn)
// instead of reading again to get EAGAIN: the next PollReady waits for new
// data, while a hang-up (PollRdHup, PollHup) that came with the data stays
// ready, since its edge will not come again. Likewise ClearEvents(SlotWrite,
// PollOut) after a short write.
//
// A short read proves the queue empty only where the package
// documentation's short-read rule says (a TCP stream without urgent data).
// On every other fd, read until EAGAIN and call ClearReady, or data already
// queued is stranded with no edge to come (Socket does this for you).
func (fr *FdReady) ClearEvents(slot InterestSlot, ev PollEvents) {
	checkSlot(slot)
	fr.reg.mu.Lock()
	fr.reg.interests.clearEvents(slot, ev)
	fr.reg.mu.Unlock()
}

// spendDataEdge is called by Socket.Read after a short read on a TCP
// stream: the read emptied the receive queue, so the next read waits for
// the next edge instead of failing with EAGAIN. Why that is safe:
//
// tcp_recvmsg fills the buffer and stops short only (a) when the receive
// queue is empty, (b) at the urgent mark, (c) when an error or the peer's
// shutdown ends the data, or (d) with packets left on the socket's backlog
// (they arrived while this read held the socket). In (a), every byte that
// arrives later is queued by tcp_data_queue, which calls sk_data_ready: a
// new EPOLLIN edge. In (d), the backlog is processed when the read releases
// the socket, through the same tcp_data_queue: a new edge too. In (c), the
// error or hang-up has its own edge (ERR, HUP, RDHUP), and only PollIn is
// forgotten, so a hang-up seen with the data stays ready. (b) is the one
// case with data left and no edge to come: urgent data raises EPOLLPRI
// from its arrival until it is read past, and epoll computes an event's
// bits when the loop harvests it, so by the time the loop has dispatched
// the edge of the data behind the mark, PollPri has reached the slot;
// if that edge is not dispatched yet, it will still wake the reader. So
// the edge is forgotten only while PollPri was never seen.
//
// Any other fd is read until EAGAIN (see Socket.Read).
func (fr *FdReady) spendDataEdge() {
	fr.reg.mu.Lock()
	fr.reg.interests.spendDataEdge(SlotRead)
	fr.reg.mu.Unlock()
}

// Close removes the registration. Call it before closing the fd. If the fd
// was closed first (or its number now names another file) Close does not
// touch the epoll set, which could remove another file's registration, and
// returns an error wrapping ErrFdClosedFirst. Close twice is a no-op. Safe
// from any goroutine; pending pollers are woken and see PollErr, and the
// operations of an FdSignal or Socket over it fail with ErrClosed without
// another syscall on the fd. Close returns once no such syscall is in
// flight, so the caller may close the fd then.
func (fr *FdReady) Close() error { return fr.close(false) }

// close is Close; closeFd also closes the fd (a Socket's, which owns it).
// It is the one release path of the registration and of a Socket's number:
// the fd is deregistered and closed only once no syscall holds a reference
// and none can take one, by Close, whose reference is the last.
func (fr *FdReady) close(closeFd bool) error {
	if !fr.ref.markClosing() {
		fr.ref.waitFor(refClosing) // the first Close has finished
		return nil
	}
	var wakers WakerList
	fr.reg.mu.Lock()
	fr.reg.interests.wakeReady(PollErr, &wakers)
	fr.reg.mu.Unlock()
	wakers.WakeAll()
	fr.ref.waitFor(refClosing + refOne) // only Close's reference is left
	sameFile, err := fr.deregister()
	if gp := fr.gp.Load(); gp != nil {
		if gerr := gp.release(closeFd && sameFile); gerr != nil && err == nil {
			err = gerr
		}
	} else if closeFd && sameFile {
		if cerr := unix.Close(fr.fd); cerr != nil && err == nil {
			err = wrapError(os.NewSyscallError("close", cerr), "close fd %d", fr.fd)
		}
	}
	fr.ref.decref()
	return err
}

// checkNotGoPolled panics if the fd is served through the runtime's poller:
// a task waiting on the pool's readiness would wait forever, since the fd
// is out of the pool's epoll set.
func (fr *FdReady) checkNotGoPolled() {
	if fr.gp.Load() != nil {
		fr.panicGoPolled() // out of line: Socket.Read's frame stays small
	}
}

//go:noinline
func (fr *FdReady) panicGoPolled() {
	panic(fmt.Sprintf("iopool: fd %d is served to goroutines by a NetConn, net.Listener or net.PacketConn, which took it over: a task cannot wait on it; use one or the other", fr.fd))
}

// withFd is the one door to the fd number for a syscall: it runs f with the
// number while holding a reference, so Close cannot close the number under
// f, and once Close has begun (or the pool has been closed) it returns
// closedErr without calling f. f must not wait for anything but its
// nonblocking syscall: Close waits for the reference to be dropped.
func (fr *FdReady) withFd(f func(fd int) error) error {
	if !fr.acquire() {
		return fr.closedErr()
	}
	defer fr.releaseRef() // also if f panics (RawConn.Control runs the caller's code)
	return f(fr.fd)
}

// closing reports whether Close has begun.
func (fr *FdReady) closing() bool { return fr.ref.closing() }

// closedErr is why no syscall can be made on the fd: it was closed, or its
// pool was. Both match ErrClosed and net.ErrClosed.
func (fr *FdReady) closedErr() error {
	if fr.ref.closing() {
		return ErrClosed
	}
	return fmt.Errorf("the pool of fd %d: %w", fr.fd, ErrClosed)
}

// acquire takes a reference for one syscall on the fd (see withFd, the door
// every Socket syscall goes through). It fails once Close has begun or the
// pool has been closed. Every successful acquire is paired with one
// releaseRef right after the syscall.
func (fr *FdReady) acquire() bool {
	if !fr.ref.incref() {
		return false
	}
	if fr.p.released.Load() {
		fr.ref.decref()
		return false
	}
	return true
}

// releaseRef drops a reference taken by acquire.
func (fr *FdReady) releaseRef() { fr.ref.decref() }

// deregister takes the registration out of the epoll set and the pool's
// table and frees it (now, or after the loop's dispatch). It reports whether
// fd still names the registered file; if not, it was closed first (a caller
// bug) and its number must not be touched.
func (fr *FdReady) deregister() (sameFile bool, err error) {
	var st unix.Stat_t
	if serr := unix.Fstat(fr.fd, &st); serr != nil || st.Dev != fr.dev || st.Ino != fr.ino {
		err = wrapError(ErrFdClosedFirst, "FdReady.Close: fd %d (the stale registration is kept until the pool closes)", fr.fd)
		return false, fr.leaveEpoll(err)
	}
	return true, fr.leaveEpoll(nil)
}

// detach takes a live registration out of the epoll set and the pool's
// table, for an fd whose goroutines wait in the runtime's poller from now
// on (goPoll). Nothing delivers to it afterwards; Close still wakes its
// pollers. A registration that is out already stays so.
func (fr *FdReady) detach() error {
	if fr.closing() {
		return fr.closedErr()
	}
	return fr.leaveEpoll(nil)
}

// leaveEpoll is deregister's and detach's: unless stale (the fd no longer
// names the file: its number must not be touched) it takes the fd out of
// the epoll set, then takes the registration out of the pool's table and
// frees it, or keeps it pinned among the orphans if the kernel may still
// name it. The registration is regDetached afterwards. It returns stale, or
// the epoll_ctl error.
func (fr *FdReady) leaveEpoll(stale error) (err error) {
	p := fr.p
	reg := fr.reg
	p.mu.Lock()
	detached := reg.index == regDetached
	p.mu.Unlock()
	if detached {
		return stale
	}
	err = stale
	if stale == nil {
		// After the pool closed, del touches nothing and reports
		// ErrClosed: the registration went with the epoll instance.
		if derr := p.be.del(fr.fd); derr != nil && !errors.Is(derr, ErrClosed) {
			err = wrapError(derr, "FdReady.Close: fd %d", fr.fd)
		}
	}

	p.mu.Lock()
	if p.closed {
		// The pool released every registration (and unpinned reg).
		reg.index = regDetached
		p.mu.Unlock()
		if errors.Is(err, ErrFdClosedFirst) {
			err = nil // nothing stale is left to report
		}
		return err
	}
	p.fds.remove(reg)
	reg.index = regDetached
	p.stats.fdsRegistered.Add(-1)
	release, signal := false, false
	switch {
	case err != nil:
		// The kernel may still deliver events with this token (the file may
		// live on in a dup): keep reg pinned until the epoll fd closes.
		p.fds.orphans = append(p.fds.orphans, reg)
	case p.state.isReferencingOps():
		// The loop may hold an event naming reg: free it after dispatch.
		p.toDelete = append(p.toDelete, reg)
		signal = p.state.wake()
	default:
		release = true
	}
	p.unlockAndSignal(signal)
	if release {
		reg.release()
	}
	return err
}

// readWait and writeWait are an FdReady seen as the Future that WaitReady
// awaits for one slot.
type (
	readWait  FdReady
	writeWait FdReady
)

func (f *readWait) Poll(cx *PollContext) (PollEvents, error) {
	fr := (*FdReady)(f)
	ev, ok := fr.PollReady(cx, SlotRead, fr.waitEvents[SlotRead])
	return ev, pendingUnless(ok)
}

func (f *writeWait) Poll(cx *PollContext) (PollEvents, error) {
	fr := (*FdReady)(f)
	ev, ok := fr.PollReady(cx, SlotWrite, fr.waitEvents[SlotWrite])
	return ev, pendingUnless(ok)
}
