//go:build linux

// Command timers waits on a timerfd and an eventfd on an iopool pool, next to
// the pool's own timers, and reports how late each wake-up was:
//
//	go run ./examples/timers
//	go run ./examples/timers -interval 10ms -ticks 20
//
// One task waits on a periodic timerfd (CLOCK_MONOTONIC) with Driver.NewFdSignal
// and hands each tick to a plain goroutine over a Go channel. The goroutine
// "does the work" and signals an eventfd, which a second task waits on with
// NewFdSignal: the time from the eventfd write to that task running is the
// goroutine-to-pool hand-off. A third task sleeps with Task.SleepUntil on the
// same schedule, for comparison with the kernel's timer (when both are due
// at once, the loop runs the timerfd's task first, so the sleeper's figure
// includes that task's turn). Ctrl-C (or SIGTERM) stops early: the three
// tasks are canceled through their context (iopool.SpawnContext), return
// what they measured so far, and the summary counts the ticks that
// happened and the signals the goroutine sent, not the ones requested.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"slices"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/iopool/iopool"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(2)
		}
		fmt.Fprintln(os.Stderr, "timers:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, out io.Writer) error {
	fs := flag.NewFlagSet("timers", flag.ContinueOnError)
	fs.SetOutput(out)
	interval := fs.Duration("interval", 100*time.Millisecond, "timer period")
	ticks := fs.Int("ticks", 5, "how many periods to run")
	if err := fs.Parse(args); err != nil {
		return flag.ErrHelp // the flag package printed the problem and the usage
	}
	var bad string
	switch {
	case *interval < time.Microsecond || *interval > time.Hour:
		bad = fmt.Sprintf("-interval %v (want 1µs..1h)", *interval)
	case *ticks < 1 || *ticks > 1_000_000:
		bad = fmt.Sprintf("-ticks %d (want 1..1000000)", *ticks)
	case fs.NArg() > 0:
		bad = fmt.Sprintf("unexpected arguments %q", fs.Args())
	}
	if bad != "" {
		fmt.Fprintf(out, "timers: bad flags: %s\n", bad)
		fs.Usage()
		return flag.ErrHelp
	}

	p, err := iopool.New()
	if err != nil {
		return err
	}
	defer p.Close()
	var rep report
	err = p.Run(func(t *iopool.Task) error {
		return demo(ctx, t, *interval, *ticks, out, &rep)
	})
	if err != nil {
		return err
	}
	if ctx.Err() != nil {
		fmt.Fprintf(out, "interrupted (%v) after %d of %d ticks\n", context.Cause(ctx), len(rep.timerfdLate), *ticks)
	}
	rep.print(out)
	return nil
}

// report is what the tasks measured, and how many eventfd signals the
// goroutine sent.
type report struct {
	timerfdLate, sleepLate, handoff []time.Duration
	sent                            int64
}

func (r *report) print(out io.Writer) {
	fmt.Fprintf(out, "summary: %d ticks; timerfd late max %v; pool timer %d ticks, late max %v; eventfd %d/%d signals received/sent, hand-off median %v\n",
		len(r.timerfdLate), maxOf(r.timerfdLate), len(r.sleepLate), maxOf(r.sleepLate), len(r.handoff), r.sent, median(r.handoff))
}

// demo is the root task. Its three tasks stop when ctx is done (Ctrl-C) and
// return what they measured until then; demo collects all three before it
// returns (tasks still running when the root returns would stop unjoined).
func demo(ctx context.Context, t *iopool.Task, interval time.Duration, ticks int, out io.Writer, rep *report) (err error) {
	drv := t.Driver()
	tfd, err := unix.TimerfdCreate(unix.CLOCK_MONOTONIC, unix.TFD_NONBLOCK|unix.TFD_CLOEXEC)
	if err != nil {
		return os.NewSyscallError("timerfd_create", err)
	}
	defer unix.Close(tfd)
	efd, err := unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
	if err != nil {
		return os.NewSyscallError("eventfd", err)
	}
	defer unix.Close(efd)
	// An FdSignal is closed before its fd (the defers run in reverse order).
	timerWait, err := drv.NewFdSignal(tfd, 8)
	if err != nil {
		return err
	}
	defer timerWait.Close()
	eventWait, err := drv.NewFdSignal(efd, 8)
	if err != nil {
		return err
	}
	defer eventWait.Close()

	// The worker goroutine: one eventfd signal per tick, each after the
	// previous one was received, so that none coalesce in the counter.
	tickCh := make(chan int, ticks)
	ack := make(chan struct{}, 1)
	quit := make(chan struct{})
	worker := make(chan error, 1)
	var sentAt atomic.Int64 // when the last signal was written, ns since start
	var sent atomic.Int64   // signals written

	period := unix.NsecToTimespec(interval.Nanoseconds())
	spec := unix.ItimerSpec{Interval: period, Value: period}
	if err := unix.TimerfdSettime(tfd, 0, &spec, nil); err != nil {
		return os.NewSyscallError("timerfd_settime", err)
	}
	start := time.Now() // the timerfd's schedule starts now
	go func() {
		worker <- signalTicks(efd, tickCh, ack, quit, func() { sentAt.Store(int64(time.Since(start))) }, &sent)
	}()
	defer func() {
		close(quit)
		// The goroutine is gone before the eventfd is closed.
		if werr := <-worker; err == nil {
			err = werr
		}
		rep.sent = sent.Load()
	}()
	fmt.Fprintf(out, "a timerfd every %v, %d ticks; an eventfd signaled by a goroutine on each tick; a pool timer on the same schedule\n", interval, ticks)

	sleeper := iopool.SpawnContext(drv, ctx, "sleeper", func(t *iopool.Task) ([]time.Duration, error) {
		var late []time.Duration
		for i := 1; i <= ticks; i++ {
			due := start.Add(time.Duration(i) * interval)
			if err := t.SleepUntil(due); err != nil {
				return late, err
			}
			late = append(late, time.Since(due))
		}
		return late, nil
	})
	receiver := iopool.SpawnContext(drv, ctx, "eventfd", func(t *iopool.Task) ([]time.Duration, error) {
		var handoff []time.Duration
		for range ticks {
			if err := eventWait.Recv(t); err != nil {
				return handoff, err
			}
			handoff = append(handoff, time.Since(start)-time.Duration(sentAt.Load()))
			ack <- struct{}{}
		}
		return handoff, nil
	})

	timerfd := iopool.SpawnContext(drv, ctx, "timerfd", func(t *iopool.Task) ([]time.Duration, error) {
		var lates []time.Duration
		for i := 1; i <= ticks; i++ {
			if err := timerWait.Recv(t); err != nil {
				return lates, err
			}
			late := time.Since(start.Add(time.Duration(i) * interval))
			lates = append(lates, late)
			fmt.Fprintf(out, "tick %d: timerfd %v late\n", i, late.Round(time.Microsecond))
			tickCh <- i
		}
		return lates, nil
	})

	// Each Join returns what its task measured, also when ctx canceled it.
	var errs []error
	for _, j := range []struct {
		h   *iopool.Handle[[]time.Duration]
		dst *[]time.Duration
	}{{timerfd, &rep.timerfdLate}, {receiver, &rep.handoff}, {sleeper, &rep.sleepLate}} {
		v, err := j.h.Join(t)
		*j.dst = v
		if err != nil && !(errors.Is(err, iopool.ErrCanceled) && ctx.Err() != nil) {
			errs = append(errs, fmt.Errorf("task %s: %w", j.h.Task().Name(), err))
		}
	}
	return errors.Join(errs...)
}

// signalTicks is the worker goroutine: for every tick it writes 1 to the
// eventfd (counted in sent), then waits until the receiving task acknowledges it, so that no
// two signals coalesce in the eventfd's counter.
func signalTicks(efd int, ticks <-chan int, ack, quit <-chan struct{}, sending func(), sent *atomic.Int64) error {
	one := []byte{1, 0, 0, 0, 0, 0, 0, 0} // a little-endian uint64 1
	for {
		select {
		case <-ticks:
		case <-quit:
			return nil
		}
		sending()
		if _, err := unix.Write(efd, one); err != nil {
			return os.NewSyscallError("eventfd write", err)
		}
		sent.Add(1)
		select {
		case <-ack:
		case <-quit:
			return nil
		}
	}
}

func maxOf(ds []time.Duration) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	return slices.Max(ds).Round(time.Microsecond)
}

func median(ds []time.Duration) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[len(s)/2].Round(time.Microsecond)
}
