//go:build linux

package iopool_test

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"runtime/pprof"
	"time"

	"golang.org/x/sys/unix"

	"github.com/iopool/iopool"
)

// Dial connects from a task without blocking the loop; a host name is
// looked up on a goroutine of its own while the task waits.
func ExampleDial() {
	p, _ := iopool.New()
	defer p.Close()
	drv := p.Driver()
	err := p.Run(func(t *iopool.Task) error {
		l, err := drv.Listen("tcp4", "127.0.0.1:0")
		if err != nil {
			return err
		}
		defer l.Close()
		echo := iopool.Spawn(drv, "echo", func(t *iopool.Task) (struct{}, error) {
			c, err := l.Accept(t)
			if err != nil {
				return struct{}{}, err
			}
			defer c.Close()
			buf := make([]byte, 64)
			n, err := c.Read(t, buf)
			if err != nil {
				return struct{}{}, err
			}
			_, err = c.Write(t, buf[:n])
			return struct{}{}, err
		})

		// "localhost" is looked up off the loop; its IPv4 address is tried first.
		addr := fmt.Sprintf("localhost:%d", l.Addr().(*net.TCPAddr).Port)
		c, err := iopool.Dial(t, "tcp", addr)
		if err != nil {
			return err
		}
		defer c.Close()
		if _, err := c.Write(t, []byte("ping")); err != nil {
			return err
		}
		buf := make([]byte, 4)
		if _, err := c.Read(t, buf); err != nil {
			return err
		}
		fmt.Println(string(buf))
		_, err = echo.Join(t)
		return err
	})
	fmt.Println(err)
	// Output:
	// ping
	// <nil>
}

// Socket options have the meaning they have on *net.TCPConn: a dialed or
// accepted TCP socket starts with TCP_NODELAY, as in package net.
func ExampleSocket_SetKeepAlive() {
	p, _ := iopool.New()
	defer p.Close()
	drv := p.Driver()
	err := p.Run(func(t *iopool.Task) error {
		l, err := drv.Listen("tcp4", "127.0.0.1:0")
		if err != nil {
			return err
		}
		defer l.Close()
		c, err := iopool.Dial(t, "tcp", l.Addr().String())
		if err != nil {
			return err
		}
		defer c.Close()
		if err := errors.Join(
			c.SetKeepAlive(true),
			c.SetKeepAlivePeriod(30*time.Second),
			c.SetLinger(0), // Close resets the connection instead of lingering
		); err != nil {
			return err
		}
		// What the kernel now has, read back with getsockopt.
		get := func(level, opt int) int { v, _ := unix.GetsockoptInt(c.Fd(), level, opt); return v }
		fmt.Println("TCP_NODELAY", get(unix.IPPROTO_TCP, unix.TCP_NODELAY))
		fmt.Println("SO_KEEPALIVE", get(unix.SOL_SOCKET, unix.SO_KEEPALIVE))
		fmt.Println("TCP_KEEPIDLE", get(unix.IPPROTO_TCP, unix.TCP_KEEPIDLE))
		return nil
	})
	fmt.Println(err)
	// Output:
	// TCP_NODELAY 1
	// SO_KEEPALIVE 1
	// TCP_KEEPIDLE 30
	// <nil>
}

// WithLogger has the pool report rare events, such as a task that panicked
// (its Join still returns the *PanicError), to a log/slog logger.
func ExampleWithLogger() {
	logger := slog.New(slog.NewTextHandler(os.Stdout, &slog.HandlerOptions{
		// No time, so that the output is the same on every run.
		ReplaceAttr: func(_ []string, a slog.Attr) slog.Attr {
			if a.Key == slog.TimeKey {
				return slog.Attr{}
			}
			return a
		},
	}))
	p, _ := iopool.New(iopool.WithName("web"), iopool.WithLogger(logger))
	defer p.Close()
	_ = p.Run(func(t *iopool.Task) error {
		h := iopool.Spawn(t.Driver(), "handler", func(t *iopool.Task) (int, error) {
			panic("boom")
		})
		_, err := h.Join(t)
		var pe *iopool.PanicError
		fmt.Println("Join:", errors.As(err, &pe), pe.Value)
		return nil
	})
	// Output:
	// level=ERROR msg="iopool: task panicked" pool=web task=handler panic=boom
	// Join: true boom
}

// WithStallReport names a task that keeps the loop to itself: here one that
// computes for 50 ms without suspending, while everything else on the pool
// waits.
func ExampleWithStallReport() {
	p, _ := iopool.New(iopool.WithStallReport(10*time.Millisecond, func(r iopool.StallReport) {
		// A report with Running set comes from the watchdog while the task
		// still runs; the final one comes when it suspends or returns.
		if r.Task == "cruncher" && !r.Running {
			fmt.Printf("task %q held pool %q for >= 10ms: %v\n", r.Task, r.Pool, r.Duration >= 10*time.Millisecond)
		}
	}))
	defer p.Close()
	_ = p.Run(func(t *iopool.Task) error {
		h := iopool.Spawn(t.Driver(), "cruncher", func(t *iopool.Task) (int, error) {
			n := 0
			for start := time.Now(); time.Since(start) < 50*time.Millisecond; {
				n++ // never suspends: no await, no t.Yield()
			}
			return n, nil
		})
		_, err := h.Join(t)
		return err
	})
	// Output:
	// task "cruncher" held pool "pool" for >= 10ms: true
}

// Every task runs with the pprof labels "pool" (WithName) and "task" (its
// name), so a CPU profile can be split by task: go tool pprof -tagfocus
// task=conn. t.Context() carries them, for pprof.Do.
func ExampleWithName() {
	p, _ := iopool.New(iopool.WithName("web"))
	defer p.Close()
	_ = p.Run(func(t *iopool.Task) error {
		h := iopool.Spawn(t.Driver(), "conn", func(t *iopool.Task) (string, error) {
			pool, _ := pprof.Label(t.Context(), "pool")
			task, _ := pprof.Label(t.Context(), "task")
			return "pool=" + pool + " task=" + task, nil
		})
		labels, err := h.Join(t)
		fmt.Println(labels)
		return err
	})
	// Output:
	// pool=web task=conn
}

// A JoinSet made with NewJoinSetCancelOnError cancels its other tasks when
// one fails, with that failure as the cause, like errgroup.WithContext.
func ExampleNewJoinSetCancelOnError() {
	p, _ := iopool.New()
	defer p.Close()
	errBadInput := errors.New("bad input")
	_ = p.Run(func(t *iopool.Task) error {
		set := iopool.NewJoinSetCancelOnError[string](t.Driver())
		set.Spawn("slow", func(t *iopool.Task) (string, error) {
			return "slow done", t.Sleep(time.Hour)
		})
		set.Spawn("parse", func(t *iopool.Task) (string, error) {
			return "", errBadInput
		})
		for set.Len() > 0 {
			j, err := set.Next(t)
			if err != nil {
				return err
			}
			fmt.Printf("%s: canceled %v, because of bad input %v\n", j.Task.Name(),
				errors.Is(j.Err, iopool.ErrCanceled), errors.Is(j.Err, errBadInput))
		}
		fmt.Println("first error:", set.Err())
		return nil
	})
	// Output:
	// parse: canceled false, because of bad input true
	// slow: canceled true, because of bad input true
	// first error: bad input
}
