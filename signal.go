//go:build linux

package iopool

import (
	"errors"
	"fmt"
	"os"
	"os/signal"
	"sync"
)

// Signals delivers operating-system signals to tasks: NotifySignals starts
// the delivery, Recv waits for the next signal inside a task, Stop ends it.
//
// It is built on os/signal, not on a signalfd. A signalfd only receives a
// signal that is blocked in every thread of the process, or the kernel
// delivers it the ordinary way to whichever thread does not block it; the
// Go runtime starts threads at any time with the signal mask it manages
// itself and needs some signals (SIGURG for preemption, SIGPROF, SIGSEGV)
// delivered to its own handler, so a library cannot keep a signal blocked
// in all of them. os/signal is the runtime's own way to hand a signal to
// Go code; a goroutine forwards each one to the pool, costing one wake per
// signal.
type Signals struct {
	c    chan os.Signal
	q    *Chan[os.Signal]
	stop chan struct{} // closed by Stop
	done chan struct{} // closed when the forwarding goroutine has exited
	once sync.Once
	_    [0]func() // not comparable
}

// NotifySignals starts delivering the given signals (at least one) to
// Recv, as signal.Notify does for a channel; while it is active the
// signals no longer have their default effect (a SIGTERM does not end the
// process). Signals that arrive faster than Recv takes them queue up
// without bound. Stop ends the delivery, and so does closing the driver's pool.
func (d *Driver) NotifySignals(sigs ...os.Signal) (*Signals, error) {
	if len(sigs) == 0 {
		return nil, errors.New("iopool: NotifySignals: no signals given (name the signals to receive)")
	}
	for i, sig := range sigs {
		if sig == nil {
			return nil, fmt.Errorf("iopool: NotifySignals: signal %d is nil", i)
		}
	}
	s := &Signals{c: make(chan os.Signal, 16), q: NewChan[os.Signal](), stop: make(chan struct{}),
		done: make(chan struct{})}
	signal.Notify(s.c, sigs...)
	go s.forward(d.p.closeEnd)
	return s, nil
}

// forward moves signals from the os/signal channel to the pool's channel
// until Stop or the pool's Close.
func (s *Signals) forward(poolClosed <-chan struct{}) {
	defer close(s.done)
	for {
		select {
		case sig := <-s.c:
			_ = s.q.Send(sig)
		case <-s.stop:
			return
		case <-poolClosed:
			signal.Stop(s.c)
			s.q.Close()
			return
		}
	}
}

// errSignalsStopped is Recv's error after Stop or the pool's Close.
var errSignalsStopped = wrapError(ErrClosed, "signal delivery stopped")

// Recv waits inside task t for the next signal. After Stop (or the pool's
// Close) and once the signals already received are taken, it returns an
// error wrapping ErrClosed.
func (s *Signals) Recv(t *Task) (os.Signal, error) {
	sig, err := s.q.Recv(t)
	if err == ErrChannelClosed {
		return nil, errSignalsStopped
	}
	return sig, err
}

// Poll is ready with the next signal, or with an error wrapping ErrClosed
// once the delivery is stopped and drained.
func (s *Signals) Poll(cx *PollContext) (os.Signal, error) {
	sig, err := s.q.Poll(cx)
	if err == ErrChannelClosed {
		err = errSignalsStopped
	}
	return sig, err
}

// Stop ends the delivery: the signals get their default effect back (as
// with signal.Stop), a waiting Recv wakes and fails. Safe from any
// goroutine; stopping twice is a no-op.
func (s *Signals) Stop() {
	s.once.Do(func() {
		signal.Stop(s.c)
		close(s.stop)
		<-s.done
		s.q.Close()
	})
}
