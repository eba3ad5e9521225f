//go:build linux

package iopool

import (
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// goPoll is a Socket's registration with the Go runtime's network poller,
// through which the goroutines of the net adapters (NetConn, NetListener,
// NetPacketConn) wait, as package net's goroutines do: the runtime's netpoll
// makes the goroutine runnable on the thread that found the event, and no
// wake crosses the pool's loop. A socket served this way is out of the
// pool's epoll set (FdReady.detach), so its traffic does not wake the loop
// either; its syscalls still go through the Socket's one door (withFd) and
// one I/O path (fdio.go, ioLoop: the goroutine's side supplies the wait).
//
// Ownership: f is an os.File over the socket's own fd number (not a dup:
// a connection costs one fd, as with package net). From attach on, f is
// what closes the number: FdReady.close calls release, which closes f, and
// internal/poll closes the number once no goroutine is inside f's wait.
// Until then f stays reachable from the pool's set, so its finalizer never
// runs while the Socket lives; if the number was closed behind the Socket's
// back, release keeps f reachable forever instead (stranded), since its
// finalizer would close a number that is someone else's by then.
type goPoll struct {
	fr    *FdReady
	f     *os.File
	read  goSide
	write goSide
}

// goSide is one side of a goPoll: the state of the operation its goroutine
// runs (one at a time: the adapters serialize readers, and writers), kept
// here so that the runtime's callback (try, bound once) needs no closure
// per operation.
type goSide struct {
	s    *Socket
	w    *ioWait
	f    *os.File
	rc   syscall.RawConn
	call ioCall // the operation running
	args ioArgs // its arguments and results
	err  error  // how it ended
	try  func(uintptr) bool
	once bool // the operation has checked that it is not a task's (panicIfCalledFromTask)
	// kick, on a pool with a virtual clock, is the waker of the side's
	// deadline timer: the pool's clock decides when a deadline passes, and
	// the runtime's deadline only wakes the goroutine (see virtualDeadline).
	kick *goKick
}

// goKick wakes a goroutine waiting in the runtime's poller on its side, by
// moving the side's runtime deadline to the past.
type goKick struct{ g *goSide }

func (k *goKick) Wake() { _ = k.g.setRuntimeDeadline(time.Unix(1, 0)) }

// attachGoPoll serves s's goroutines through the runtime's poller from now
// on, taking s out of the pool's epoll set (tasks cannot wait on it any
// more: see ioWait.wait). It is idempotent.
func (s *Socket) attachGoPoll() (*goPoll, error) {
	fr := s.fr
	if gp := fr.gp.Load(); gp != nil {
		return gp, nil
	}
	// The reference keeps Close from closing the number under the
	// epoll_ctl of detach and under os.NewFile: a Close that races the
	// conversion waits for it, then finds the registration out already.
	if !fr.acquire() {
		return nil, fr.closedErr()
	}
	defer fr.releaseRef()
	if err := fr.detach(); err != nil {
		return nil, err
	}
	f := os.NewFile(uintptr(fr.fd), "iopool-socket")
	// A deadline is refused (os.ErrNoDeadline) by a file the runtime's
	// poller did not take.
	if err := f.SetDeadline(time.Time{}); err != nil {
		strand(f)
		return nil, fmt.Errorf("iopool: fd %d: Go's poller refused it: %w", fr.fd, err)
	}
	rc, err := f.SyscallConn()
	if err != nil {
		strand(f)
		return nil, fmt.Errorf("iopool: fd %d: %w", fr.fd, err)
	}
	gp := &goPoll{fr: fr, f: f}
	gp.read = goSide{s: s, w: &s.read, rc: rc, f: f}
	gp.write = goSide{s: s, w: &s.write, rc: rc, f: f}
	for _, g := range []*goSide{&gp.read, &gp.write} {
		g.try = g.tryOnce
		if fr.p.clock.virtual {
			g.kick = &goKick{g} // the side keeps its deadline (virtualDeadline)
		} else {
			g.takeDeadline()
		}
	}
	if !fr.p.goPolls.add(gp, &fr.p.stats.fdsGoPolled) {
		strand(f)
		return nil, fr.closedErr()
	}
	if !fr.gp.CompareAndSwap(nil, gp) { // another goroutine attached first
		fr.p.goPolls.remove(gp, &fr.p.stats.fdsGoPolled)
		strand(f)
		return fr.gp.Load(), nil
	}
	return gp, nil
}

// loop runs call on the side until it does something other than fail with
// EAGAIN, waiting in the runtime's poller in between (RawConn.Read and
// Write: the poller's readiness is reset before the first try, so an edge
// that arrives after any try wakes the wait). The arguments are copied in
// and the results out, so that a's owner keeps it on its stack.
func (g *goSide) loop(call ioCall, a *ioArgs) error {
	g.call, g.args, g.err, g.once = call, *a, nil, false
	var err error
	for {
		if g.kick != nil {
			g.virtualDeadline()
		}
		if g.w.slot == SlotRead {
			err = g.rc.Read(g.try)
		} else {
			err = g.rc.Write(g.try)
		}
		fr := g.s.fr
		if g.kick == nil || !errors.Is(err, os.ErrDeadlineExceeded) || g.w.expired() || fr.closing() || fr.p.released.Load() {
			break
		}
		// Kicked by a deadline that moved: wait again against the new one.
	}
	*a = g.args
	g.args = ioArgs{} // keep no caller's buffer
	if err != nil {
		return g.waitErr(err)
	}
	return g.err
}

// tryOnce is the runtime's callback: one try of the operation; false (not
// done) parks the goroutine until the side's next edge or deadline.
func (g *goSide) tryOnce(uintptr) (done bool) {
	err := g.s.ioLoop(g.w, waiter{now: true}, g.call, &g.args)
	if err != ErrWouldBlock {
		g.err = err
		return true
	}
	if !g.once {
		g.once = true
		panicIfCalledFromTask("a NetConn's Read or Write, a net.Listener's Accept or a net.PacketConn's ReadFrom or WriteTo that must wait", "the Socket, Listener or PacketSocket methods that take the task")
	}
	return false
}

// waitErr is why the runtime's wait ended without the operation: the
// socket or its pool was closed (which wins over a deadline, as in package
// net), or the side's deadline passed.
func (g *goSide) waitErr(err error) error {
	fr := g.s.fr
	if fr.closing() || fr.p.released.Load() {
		return fr.closedErr()
	}
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return os.ErrDeadlineExceeded
	}
	return err
}

// takeDeadline hands a deadline set on the side before the socket became a
// net view over to the runtime's poller, which keeps the side's deadlines
// from now on on a real clock: the side's own is cleared, so that a later
// deadline set on the view is the only one.
func (g *goSide) takeDeadline() {
	d := g.w.deadline.Load()
	if d == 0 {
		return
	}
	t := time.Unix(1, 0) // passed
	if d > 0 {
		t = g.s.fr.p.epoch.Add(time.Duration(d))
	}
	_ = g.setRuntimeDeadline(t)
	g.w.setDeadline(time.Time{})
}

// virtualDeadline readies a wait on a pool with a virtual clock: the
// runtime's deadline is cleared (a kick of an earlier wait is spent), then
// the side's deadline timer is armed to kick this wait. In that order, so
// that a kick that follows is not cleared.
func (g *goSide) virtualDeadline() {
	_ = g.setRuntimeDeadline(time.Time{})
	g.armKick()
}

// armKick arms the side's deadline timer, on the pool's clock, to kick the
// waiting goroutine; a deadline already passed kicks it now.
func (g *goSide) armKick() {
	switch d := g.w.deadline.Load(); {
	case d < 0:
		g.kick.Wake()
	case d > 0:
		if _, fired := g.w.timer.poll(&PollContext{waker: g.kick}, d, true); fired {
			g.kick.Wake()
		}
	}
}

// setRuntimeDeadline sets the side's deadline in the runtime's poller.
func (g *goSide) setRuntimeDeadline(t time.Time) error {
	if g.w.slot == SlotRead {
		return g.f.SetReadDeadline(t)
	}
	return g.f.SetWriteDeadline(t)
}

// setDeadline sets a side's deadline (SlotRead, SlotWrite) and wakes a
// goroutine waiting on that side to wait against it. On a real clock the
// runtime's poller keeps it, as for package net's sockets; on a pool's
// virtual clock the side keeps it (ioWait.setDeadline) and its timer
// kicks the goroutine.
func (gp *goPoll) setDeadline(slot InterestSlot, t time.Time) error {
	g := &gp.read
	if slot == SlotWrite {
		g = &gp.write
	}
	var err error
	if g.kick != nil {
		// Armed here, by the setter, not by the goroutine once woken: the
		// virtual clock may jump past the deadline before that goroutine
		// runs again.
		g.w.setDeadline(t)
		g.armKick()
	} else {
		err = g.setRuntimeDeadline(t)
	}
	if err != nil && gp.fr.closing() {
		return ErrClosed
	}
	return err
}

// release is the end of the registration, called once by FdReady.close
// after no syscall of the Socket's can run. With closeFd, f closes the fd
// number: it wakes the goroutines waiting in the poller and closes the
// number once they have left the wait. Without (the number was closed
// first, or is not the Socket's to close), it wakes them and keeps f
// forever, so that no finalizer closes the number.
func (gp *goPoll) release(closeFd bool) error {
	gp.fr.p.goPolls.remove(gp, &gp.fr.p.stats.fdsGoPolled)
	if closeFd {
		if err := gp.f.Close(); err != nil {
			return fmt.Errorf("iopool: close fd %d: %w", gp.fr.fd, err)
		}
		return nil
	}
	_ = gp.f.SetDeadline(time.Unix(1, 0))
	strand(gp.f)
	return nil
}

// strand keeps f reachable for the life of the process: f names an fd
// number that is not its to close, and its finalizer would close it.
func strand(f *os.File) {
	stranded.mu.Lock()
	stranded.files = append(stranded.files, f)
	stranded.mu.Unlock()
}

var stranded struct {
	mu    sync.Mutex
	files []*os.File
}

// goPollSet is a pool's goPolls, so that releasing the pool wakes the
// goroutines waiting in the runtime's poller (a deadline in the past: they
// find the pool closed and fail with ErrClosed).
type goPollSet struct {
	mu     sync.Mutex
	all    map[*goPoll]struct{}
	closed bool
}

// add adds gp, counting it in n, or reports false once the pool has been
// released.
func (s *goPollSet) add(gp *goPoll, n *atomic.Int64) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	if s.all == nil {
		s.all = make(map[*goPoll]struct{})
	}
	s.all[gp] = struct{}{}
	n.Add(1)
	return true
}

// remove removes gp if it is there, uncounting it in n.
func (s *goPollSet) remove(gp *goPoll, n *atomic.Int64) {
	s.mu.Lock()
	if _, ok := s.all[gp]; ok {
		delete(s.all, gp)
		n.Add(-1)
	}
	s.mu.Unlock()
}

// wakeAll is called once the pool is released (Pool.released is set, so
// no syscall of theirs can start): every goroutine waiting in the poller
// wakes, and one that starts a wait from now on finds the deadline passed.
// The files stay open: their Sockets still own the numbers and close them.
func (s *goPollSet) wakeAll() {
	s.mu.Lock()
	s.closed = true
	all := make([]*goPoll, 0, len(s.all))
	for gp := range s.all {
		all = append(all, gp)
	}
	s.mu.Unlock()
	past := time.Unix(1, 0)
	for _, gp := range all {
		_ = gp.f.SetDeadline(past) // after a Close of gp's socket: an error, and nothing to wake
	}
}
