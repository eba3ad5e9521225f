//go:build linux

// Command echo runs a TCP echo server on iopool pools and drives it with a
// load generator, then prints throughput, latency, the server's CPU time
// per request and the pools' counters, each explained.
//
//	go run ./examples/echo                      # 64 conns, 64 B, 5 s
//	go run ./examples/echo -conns 256 -size 1024 -duration 10s
//	go run ./examples/echo -lock=false          # the loop on any thread
//	go run ./examples/echo -pools 2             # thread-per-core: an iopool.Group, SO_REUSEPORT
//	go run ./examples/echo -pools 2 -pin -steer # pools pinned to CPUs, connections steered by CPU
//	go run ./examples/echo -listen 127.0.0.1:7000   # serve only, until Ctrl-C or SIGTERM (exit 0)
//
// The server is the idiomatic task-layer one: an iopool.Listener accepts,
// and a task per connection echoes with Socket.Read and Socket.Write.
//
// One pool (the default) runs its loop on a locked OS thread of its own
// (WithLockOSThread): for this server, which wakes no goroutine, that
// measured as cheap as an unlocked loop or cheaper (docs/benchmarks.md), and
// it keeps the pool on one thread. -lock=false runs the loop on whatever
// thread the Go scheduler gives it. The load generator then runs as a child
// process (this program again), so the server's CPU figure is the whole
// server process's (getrusage RUSAGE_SELF: loop, garbage collector and
// runtime threads) and nothing of the client's.
//
// With -pools or -pin the pools form an iopool.Group, each on its own
// locked (or pinned) thread; the load generator runs in this process and
// the CPU figure is the pools' loop threads' (getrusage RUSAGE_THREAD).
// With -pin it dials from a thread pinned to each pool's CPU in turn, as
// clients arriving on every CPU would, and a last table shows which pool
// served the connections dialed on each CPU: with -steer, the pool of that
// CPU (loopback processes a SYN on the CPU that sent it).
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/iopool/iopool"
)

func main() {
	if spec := os.Getenv(loadgenEnv); spec != "" {
		os.Exit(loadgenMain(spec, os.Stdout, os.Stderr))
	}
	// Ctrl-C, and the SIGTERM of kill, systemd and container runtimes, stop
	// a -listen server cleanly (exit 0) or cut a load run short.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
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
	pin, steer         bool  // group mode: pin pool i to CPU i; steer connections by receiving CPU
	lock               bool  // one pool: its loop on a locked OS thread
	dialCPUs           []int // the load generator dials from threads pinned to these CPUs in turn (group mode, -pin)
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
	fs.BoolVar(&c.lock, "lock", true, "run the pool's loop on a locked OS thread of its own (WithLockOSThread); a group's pools are always locked")
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
	if !c.lock && (c.pools > 1 || c.pin) {
		bad = append(bad, "-lock=false with -pools or -pin (a group's pools run on locked threads)")
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

// server is one pool serving one listener.
type server struct {
	pool *iopool.Pool
	stop *iopool.Oneshot[struct{}]
	done chan error
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
	s, addr, err := startServer(addr, c.lock)
	if err != nil {
		return err
	}
	defer s.shutdown()
	thread := "its loop on a locked OS thread"
	if !c.lock {
		thread = "its loop not locked to a thread"
	}
	fmt.Fprintf(out, "echo server on %s: 1 pool, %s\n", addr, thread)
	if c.listen != "" {
		<-ctx.Done()
		err := s.shutdown()
		printStopped(out, ctx, addr)
		return err
	}

	res, cpuNano, err := runLoadgen(ctx, addr, c, out)
	if err != nil {
		return err
	}
	if err := s.shutdown(); err != nil {
		return err
	}
	printReport(out, c, res, cpuNano, []iopool.Stats{s.pool.Stats()})
	return nil
}

// printStopped prints the line a -listen server ends with, saying why it
// stopped (the signal, for the program).
func printStopped(out io.Writer, ctx context.Context, addr string) {
	fmt.Fprintf(out, "echo server on %s stopped: %v\n", addr, context.Cause(ctx))
}

// startServer creates a pool listening on addr (IPv4 or IPv6, numeric) and
// runs it on a goroutine of its own; its root task serves until stop
// fires. It returns the bound address.
func startServer(addr string, lock bool) (*server, string, error) {
	var opts []iopool.Option
	if lock {
		opts = append(opts, iopool.WithLockOSThread())
	}
	p, err := iopool.New(opts...)
	if err != nil {
		return nil, "", err
	}
	l, err := p.Driver().Listen("tcp", addr)
	if err != nil {
		p.Close()
		return nil, "", err
	}
	s := &server{pool: p, stop: iopool.NewOneshot[struct{}](), done: make(chan error, 1)}
	go func() {
		defer close(s.done)
		err := p.Run(func(t *iopool.Task) error {
			srv := iopool.Spawn(t.Driver(), "accept", func(t *iopool.Task) (struct{}, error) {
				return struct{}{}, serve(t, l)
			})
			_, err := s.stop.Recv(t)
			srv.Cancel()
			if _, jerr := srv.Join(t); jerr != nil && !errors.Is(jerr, iopool.ErrCanceled) {
				return jerr
			}
			return err
		})
		s.done <- err
	}()
	return s, l.Addr().String(), nil
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

// loadgenEnv, when set, makes this program the load generator: the
// variable holds a loadgenSpec as JSON.
const loadgenEnv = "IOPOOL_ECHO_LOADGEN"

type loadgenSpec struct {
	Addr     string        `json:"addr"`
	Conns    int           `json:"conns"`
	Size     int           `json:"size"`
	Duration time.Duration `json:"duration"`
	Progress bool          `json:"progress"`
}

// loadgenResult is loadResult on the wire.
type loadgenResult struct {
	Requests                int64
	Elapsed, P50, P99, P999 time.Duration
}

// runLoadgen runs the load generator as a child process against addr and
// returns its result and the CPU time this (server) process used while the
// load ran.
func runLoadgen(ctx context.Context, addr string, c config, out io.Writer) (loadResult, int64, error) {
	exe, err := os.Executable()
	if err != nil {
		return loadResult{}, 0, err
	}
	spec, _ := json.Marshal(loadgenSpec{Addr: addr, Conns: c.conns, Size: c.size, Duration: c.duration, Progress: c.progress})
	cmd := exec.CommandContext(ctx, exe)
	cmd.Env = append(os.Environ(), loadgenEnv+"="+string(spec))
	cmd.Stderr = out // progress and errors
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return loadResult{}, 0, err
	}
	if err := cmd.Start(); err != nil {
		return loadResult{}, 0, fmt.Errorf("starting the load generator: %w", err)
	}
	var res loadgenResult
	var cpu0, cpu1 int64
	var got bool
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
		switch line := sc.Text(); {
		case line == "start":
			cpu0 = processCPU()
		case line == "end":
			cpu1 = processCPU()
		case strings.HasPrefix(line, "result "):
			got = json.Unmarshal([]byte(strings.TrimPrefix(line, "result ")), &res) == nil
		}
	}
	if err := cmd.Wait(); err != nil {
		return loadResult{}, 0, fmt.Errorf("load generator: %w", err)
	}
	if !got {
		return loadResult{}, 0, errors.New("the load generator printed no result")
	}
	return loadResult{requests: res.Requests, elapsed: res.Elapsed, p50: res.P50, p99: res.P99, p999: res.P999}, cpu1 - cpu0, nil
}

// loadgenMain is the load generator process: it drives spec's load,
// printing "start" and "end" around it, then "result" and the result as
// JSON.
func loadgenMain(spec string, stdout, stderr io.Writer) int {
	var s loadgenSpec
	if err := json.Unmarshal([]byte(spec), &s); err != nil {
		fmt.Fprintf(stderr, "echo load generator: bad %s: %v\n", loadgenEnv, err)
		return 2
	}
	c := config{conns: s.Conns, size: s.Size, duration: s.Duration, progress: s.Progress}
	r, err := driveMarked(context.Background(), s.Addr, c, stderr, func(mark string) { fmt.Fprintln(stdout, mark) })
	if err != nil {
		fmt.Fprintln(stderr, "echo load generator:", err)
		return 1
	}
	js, _ := json.Marshal(loadgenResult{Requests: r.requests, Elapsed: r.elapsed, P50: r.p50, P99: r.p99, P999: r.p999})
	fmt.Fprintf(stdout, "result %s\n", js)
	return 0
}

// processCPU returns this process's CPU time (user and system, every
// thread) in nanoseconds.
func processCPU() int64 {
	var ru unix.Rusage
	_ = unix.Getrusage(unix.RUSAGE_SELF, &ru)
	return ru.Utime.Nano() + ru.Stime.Nano()
}

// printReport prints the load's results and the pools' counters, each
// explained.
func printReport(out io.Writer, c config, r loadResult, cpuNano int64, stats []iopool.Stats) {
	var rss string
	if b, err := os.ReadFile("/proc/self/status"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(line, "VmRSS:") {
				rss = strings.TrimSpace(strings.TrimPrefix(line, "VmRSS:"))
			}
		}
	}
	group := c.pools > 1 || c.pin
	cpuWhat, rssWhat := "the whole server process", "server; the load generator is another process"
	if group {
		cpuWhat, rssWhat = "the pools' loop threads", "server and load generator"
	}
	secs := r.elapsed.Seconds()
	fmt.Fprintf(out, "\n%-28s %d conns x %d B, %d pool(s), locked %v, %s, GOMAXPROCS %d\n", "load", c.conns, c.size, c.pools, c.lock || group, r.elapsed.Round(time.Millisecond), runtime.GOMAXPROCS(0))
	fmt.Fprintf(out, "%-28s %.0f\n", "requests/s", float64(r.requests)/secs)
	fmt.Fprintf(out, "%-28s %d (every byte verified, 0 errors)\n", "requests", r.requests)
	fmt.Fprintf(out, "%-28s p50 %v  p99 %v  p999 %v\n", "latency", r.p50, r.p99, r.p999)
	if r.requests > 0 {
		fmt.Fprintf(out, "%-28s %.2f µs/request (%s)\n", "server CPU", float64(cpuNano)/1e3/float64(r.requests), cpuWhat)
	}
	fmt.Fprintf(out, "%-28s %s (%s)\n", "RSS", rss, rssWhat)
	var sum iopool.Stats
	for _, st := range stats {
		sum.Cycles += st.Cycles
		sum.Sleeps += st.Sleeps
		sum.EventfdWrites += st.EventfdWrites
		sum.Wakes += st.Wakes
		sum.Events += st.Events
		sum.TasksSpawned += st.TasksSpawned
	}
	perReq := func(v uint64) string {
		if r.requests == 0 {
			return ""
		}
		return fmt.Sprintf("%.2f", float64(v)/float64(r.requests))
	}
	fmt.Fprintf(out, "\npool counters, all pools, whole run:\n  %-16s %14s %11s    %s\n", "counter", "total", "per request", "meaning")
	for _, row := range []struct {
		name    string
		v       uint64
		meaning string
	}{
		{"cycles", sum.Cycles, "loop turns: each runs every task woken since the last turn"},
		{"sleeps", sum.Sleeps, "turns that ended blocked in epoll_wait because no task was runnable"},
		{"eventfd writes", sum.EventfdWrites, "wake-ups of a sleeping loop by another goroutine (shutdown here)"},
		{"wakes", sum.Wakes, "tasks made runnable, mostly a connection's task by its socket"},
		{"events", sum.Events, "readiness edges epoll delivered to sockets (data in, room out)"},
		{"tasks spawned", sum.TasksSpawned, "the root and accept tasks and one task per connection"},
	} {
		fmt.Fprintf(out, "  %-16s %14d %11s    %s\n", row.name, row.v, perReq(row.v), row.meaning)
	}
	fmt.Fprintf(out, "  (fewer sleeps than requests: one epoll_wait found several connections\n"+
		"   ready, so the loop served them without sleeping in between)\n")
	if len(stats) > 1 {
		for i, st := range stats {
			fmt.Fprintf(out, "pool %d stats: cycles %d, sleeps %d, eventfd writes %d, wakes %d, events %d, tasks spawned %d\n",
				i, st.Cycles, st.Sleeps, st.EventfdWrites, st.Wakes, st.Events, st.TasksSpawned)
		}
	}
}

var errMismatch = errors.New("echoed bytes differ from the bytes sent")

// syncErr keeps the first error of several goroutines.
type syncErr struct {
	once sync.Once
	err  error
}

func (e *syncErr) set(err error) { e.once.Do(func() { e.err = err }) }
