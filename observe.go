package iopool

import (
	"errors"
	"log/slog"
	"net"
	"time"
)

// observeOptions are the pool's observability settings, all off by default.
type observeOptions struct {
	name   string       // the pool's name in profiles, logs and stall reports
	logger *slog.Logger // rare events; nil: silent
}

// WithName names the pool. The name appears in the pprof label "pool" of
// every task, in log records and in stall reports; pools are named "pool"
// when unnamed.
func WithName(name string) Option {
	return func(o *options) error {
		if name == "" {
			return errors.New("iopool: WithName: empty name")
		}
		o.obs.name = name
		return nil
	}
}

// WithLogger has the pool log rare events to logger: a listener backing off
// because the process is out of fds (Warn), the kernel refusing io_uring
// (Warn), a task that panicked (Error). Nothing on the hot path is logged.
// Without it the pool is silent.
func WithLogger(logger *slog.Logger) Option {
	return func(o *options) error {
		if logger == nil {
			return errors.New("iopool: WithLogger: nil logger")
		}
		o.obs.logger = logger
		return nil
	}
}

// Name returns the pool's name (WithName), "pool" by default.
func (p *Pool) Name() string {
	if p.opts.obs.name == "" {
		return "pool"
	}
	return p.opts.obs.name
}

// logAcceptBackoff records that an accept loop pauses for lack of fds.
func (p *Pool) logAcceptBackoff(addr net.Addr, err error, pause time.Duration) {
	if l := p.opts.obs.logger; l != nil {
		l.Warn("iopool: accept backing off: out of file descriptors",
			"pool", p.Name(), "addr", addr, "err", err, "pause", pause)
	}
}

// logUringRefused records that io_uring could not be set up.
func (p *Pool) logUringRefused(err error) {
	if l := p.opts.obs.logger; l != nil {
		l.Warn("iopool: io_uring unavailable", "pool", p.Name(), "err", err)
	}
}

// logTaskPanic records a task's panic (Join, Wait or Run still return it).
func (p *Pool) logTaskPanic(pe *PanicError) {
	if l := p.opts.obs.logger; l != nil {
		l.Error("iopool: task panicked", "pool", p.Name(), "task", pe.Task, "panic", pe.Value)
	}
}
