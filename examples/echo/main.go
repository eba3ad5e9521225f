// Command echo runs a TCP echo server on iopool pools and drives it with a
// built-in load generator, then prints throughput, latency, the server's CPU
// time per request and the pools' counters.
//
//	go run ./examples/echo                      # 64 conns, 64 B, 5 s
//	go run ./examples/echo -conns 256 -size 1024 -duration 10s
//	go run ./examples/echo -pools 2             # thread-per-core: an iopool.Group, SO_REUSEPORT
//	go run ./examples/echo -pools 2 -pin -steer # pools pinned to CPUs, connections steered by CPU
//	go run ./examples/echo -listen 127.0.0.1:7000   # serve only, until Ctrl-C
//
// Each pool runs on its own locked OS thread; the server's CPU figure is
// that thread's own (getrusage RUSAGE_THREAD), so the load generator's CPU is
// not counted.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime"
	"strings"
	"sync"
	"time"

	"github.com/iopool/iopool"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(2)
		}
		fmt.Fprintln(os.Stderr, "echo:", err)
		os.Exit(1)
	}
}

type config struct {
	conns, size, pools int
	duration           time.Duration
	listen             string
	progress           bool
	pin, steer         bool // group mode: pin pool i to CPU i; steer connections by receiving CPU
}

func parseFlags(args []string, out io.Writer) (config, error) {
	var c config
	fs := flag.NewFlagSet("echo", flag.ContinueOnError)
	fs.SetOutput(out)
	fs.IntVar(&c.conns, "conns", 64, "load generator connections")
	fs.IntVar(&c.size, "size", 64, "message size in bytes")
	fs.DurationVar(&c.duration, "duration", 5*time.Second, "how long to drive the load")
	fs.IntVar(&c.pools, "pools", 1, "pools of an iopool.Group (one locked OS thread each) sharing the port with SO_REUSEPORT")
	fs.BoolVar(&c.pin, "pin", false, "pin each pool of the group to a CPU of its own (WithPinCPU); with -pools 1, a one-pool group")
	fs.BoolVar(&c.steer, "steer", false, "steer each connection to the pool on the CPU that received it (needs -pin)")
	fs.StringVar(&c.listen, "listen", "", "serve only on this address (e.g. 127.0.0.1:7000 or [::1]:7000) until interrupted")
	fs.BoolVar(&c.progress, "progress", isTerminal(out), "show a live progress line (default: when the output is a terminal)")
	if err := fs.Parse(args); err != nil {
		// The flag package printed the problem and the usage once; main
		// exits 2 without repeating it, as for a bad value.
		return c, flag.ErrHelp
	}
	var bad []string
	if c.conns < 1 || c.conns > 100_000 {
		bad = append(bad, fmt.Sprintf("-conns %d (want 1..100000)", c.conns))
	}
	if c.size < 1 || c.size > 1<<20 {
		bad = append(bad, fmt.Sprintf("-size %d (want 1..1048576)", c.size))
	}
	if c.pools < 1 || c.pools > 256 {
		bad = append(bad, fmt.Sprintf("-pools %d (want 1..256)", c.pools))
	}
	if c.steer && !c.pin {
		bad = append(bad, "-steer without -pin (steering needs pools pinned to CPUs)")
	}
	if c.duration <= 0 {
		bad = append(bad, fmt.Sprintf("-duration %v (want > 0)", c.duration))
	}
	if fs.NArg() > 0 {
		bad = append(bad, fmt.Sprintf("unexpected arguments %q", fs.Args()))
	}
	if len(bad) > 0 {
		fmt.Fprintf(out, "echo: bad flags: %s\n", strings.Join(bad, ", "))
		fs.Usage()
		return c, flag.ErrHelp
	}
	return c, nil
}

// server is one pool serving one SO_REUSEPORT listener.
type server struct {
	pool    *iopool.Pool
	stop    *iopool.Oneshot[struct{}]
	done    chan error
	cpuNano int64 // the loop thread's CPU while serving
}

func run(ctx context.Context, args []string, out io.Writer) error {
	c, err := parseFlags(args, out)
	if err != nil {
		return err
	}
	addr := c.listen
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	if c.pools > 1 || c.pin {
		return runGroup(ctx, c, addr, out)
	}
	var servers []*server
	defer func() {
		for _, s := range servers {
			s.shutdown()
		}
	}()
	for i := range c.pools {
		lfd, bound, err := listenTCP(addr, c.pools > 1)
		if err != nil {
			return err
		}
		if i == 0 {
			addr = bound.String() // the other pools share this port
		}
		s, err := startServer(lfd)
		if err != nil {
			return err
		}
		servers = append(servers, s)
	}
	fmt.Fprintf(out, "echo server on %s: %d pool(s), one locked OS thread each\n", addr, c.pools)
	if c.listen != "" {
		<-ctx.Done()
		return nil
	}

	res, err := drive(ctx, addr, c, out)
	if err != nil {
		return err
	}
	var cpu int64
	var stats []iopool.Stats
	for _, s := range servers {
		if err := s.shutdown(); err != nil {
			return err
		}
		cpu += s.cpuNano
		stats = append(stats, s.pool.Stats())
	}
	printReport(out, c, res, cpu, stats)
	return nil
}

// startServer runs a pool on its own goroutine (locked to an OS thread)
// whose root task serves lfd until stop fires.
func startServer(lfd int) (*server, error) {
	p, err := iopool.New(iopool.WithLockOSThread())
	if err != nil {
		return nil, err
	}
	s := &server{pool: p, stop: iopool.NewOneshot[struct{}](), done: make(chan error, 1)}
	go func() {
		defer close(s.done)
		err := p.Run(func(t *iopool.Task) error {
			cpu0 := threadCPU()
			srv := iopool.Spawn(t.Driver(), "accept", func(t *iopool.Task) (struct{}, error) {
				return struct{}{}, serve(t, lfd)
			})
			_, err := s.stop.Recv(t)
			s.cpuNano = threadCPU() - cpu0
			srv.Cancel()
			if _, jerr := srv.Join(t); jerr != nil && !errors.Is(jerr, iopool.ErrCanceled) {
				return jerr
			}
			return err
		})
		s.done <- err
	}()
	return s, nil
}

// shutdown stops the server (idempotent) and closes its pool, which cancels
// the connection tasks.
func (s *server) shutdown() error {
	if s.stop.Send(struct{}{}) != nil {
		return nil // already stopped
	}
	err := <-s.done
	if cerr := s.pool.Close(); err == nil {
		err = cerr
	}
	return err
}

func printReport(out io.Writer, c config, r loadResult, cpuNano int64, stats []iopool.Stats) {
	var rss string
	if b, err := os.ReadFile("/proc/self/status"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(line, "VmRSS:") {
				rss = strings.TrimSpace(strings.TrimPrefix(line, "VmRSS:"))
			}
		}
	}
	secs := r.elapsed.Seconds()
	fmt.Fprintf(out, "\n%-28s %d conns x %d B, %d pool(s), %s, GOMAXPROCS %d\n", "load", c.conns, c.size, c.pools, r.elapsed.Round(time.Millisecond), runtime.GOMAXPROCS(0))
	fmt.Fprintf(out, "%-28s %.0f\n", "requests/s", float64(r.requests)/secs)
	fmt.Fprintf(out, "%-28s %d (every byte verified, 0 errors)\n", "requests", r.requests)
	fmt.Fprintf(out, "%-28s p50 %v  p99 %v  p999 %v\n", "latency", r.p50, r.p99, r.p999)
	if r.requests > 0 {
		fmt.Fprintf(out, "%-28s %.2f µs/request\n", "server CPU (loop threads)", float64(cpuNano)/1e3/float64(r.requests))
	}
	fmt.Fprintf(out, "%-28s %s (server and load generator)\n", "RSS", rss)
	for i, st := range stats {
		fmt.Fprintf(out, "pool %d stats: cycles %d, sleeps %d, eventfd writes %d, wakes %d, events %d, tasks spawned %d\n",
			i, st.Cycles, st.Sleeps, st.EventfdWrites, st.Wakes, st.Events, st.TasksSpawned)
	}
}

var errMismatch = errors.New("echoed bytes differ from the bytes sent")

// syncErr keeps the first error of several goroutines.
type syncErr struct {
	once sync.Once
	err  error
}

func (e *syncErr) set(err error) { e.once.Do(func() { e.err = err }) }
