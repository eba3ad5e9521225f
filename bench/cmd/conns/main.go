//go:build linux

// Command conns holds N concurrent TCP connections to one echo server and
// reports what each costs the server while it is idle:
//
//	cd bench && go run ./cmd/conns -impl iopool-lean -n 200000
//
// The server runs in this process; the client is this program again
// (re-executed with -client), so the server's memory is its own. The
// client spreads its source addresses over 127.0.0.0/8 (each socket is
// bound to 127.x.y.1 before it connects, 1,000 connections per address),
// so that the ephemeral ports of one source address do not run out (and
// the kernel finds a free one at once). On
// every connection it echoes a message at the start and at the end of the
// run and verifies every byte; all along it pings random connections one
// at a time and records the round trips. Between the two echoes the
// connections are idle for -hold, and the server measures itself after a
// GC. The last line is
//
//	conns=N impl=NAME user_bytes_per_conn=B rss_bytes_per_conn=R rtt_p99_us=P errors=E
//
// user bytes are the Go heap in use plus goroutine stacks (runtime/metrics
// /memory/classes/heap/objects and .../heap/stacks) after a GC, rss the
// growth of VmRSS (/proc/self/status), both divided by N; errors counts
// connections that failed to connect or echo, bytes that came back wrong,
// pings lost and connections the server did not accept. The line before it
// reports the kernel's share: the growth of Slab and SUnreclaim in
// /proc/meminfo per connection (machine-wide, both ends of every
// connection), and of the socket caches in /proc/slabinfo.
//
// Each process needs N fds and a few more. The tool raises its soft
// RLIMIT_NOFILE to the hard limit; if that is too low, it says so and
// stops, unless it runs with -raise-limits as root (with CAP_SYS_RESOURCE):
// then it raises the hard limit, and fs.nr_open and fs.file-max if they are
// too low for it (they change the machine; the old values are printed and
// restored at exit). Where the hard limit cannot be raised, -shards K runs
// an iopool server as K pools, each on a locked thread with an fd table of
// its own (unshare CLONE_FILES: RLIMIT_NOFILE bounds each table, not the
// process), listening on one port with SO_REUSEPORT; the client splits its
// connections the same way by itself. go-net and gnet cannot: Go's
// netpoller and gnet's loops use every fd from any thread.
//
// Servers (-impl): iopool-lean (a LeanServer: a ConnHandler per
// connection, no task while idle), iopool-task (a task per connection,
// waiting in WaitReadable, a buffer taken only to echo), iopool-poll (the
// poll layer: a Waker per connection), go-net (a goroutine per connection
// blocked in Read on a 128-byte array on its stack) and gnet (gnet v2, one
// event loop).
package main

import (
	"bufio"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"runtime/metrics"
	"runtime/pprof"
	"strconv"
	"strings"
	"time"
)

// Config is one run.
type Config struct {
	N           int
	Impl        string
	Hold        time.Duration // idle time between the two echoes
	Size        int           // echo message size, bytes
	Window      int           // connects and echoes in flight in the client
	PingEvery   time.Duration // one ping per interval
	RaiseLimits bool
	Shards      int           // iopool servers: pools, each with its own fd table
	Timeout     time.Duration // no progress for this long fails the client
	MemProfile  string        // heap profile written when the server measures itself
}

func main() {
	if len(os.Args) > 1 && os.Args[1] == clientArg {
		os.Exit(clientMain(os.Args[2:]))
	}
	var cfg Config
	fs := flag.NewFlagSet("conns", flag.ExitOnError)
	fs.IntVar(&cfg.N, "n", 10000, "connections to hold")
	fs.StringVar(&cfg.Impl, "impl", "iopool-lean", "server: "+strings.Join(implNames(), ", "))
	fs.DurationVar(&cfg.Hold, "hold", 5*time.Second, "time the connections stay idle, pinged, between the two echoes")
	fs.IntVar(&cfg.Size, "size", 64, "echo message size in bytes (16 to 4096)")
	fs.IntVar(&cfg.Window, "window", 256, "connects and echoes the client keeps in flight")
	fs.DurationVar(&cfg.PingEvery, "ping-every", time.Millisecond, "interval between pings of random connections")
	fs.IntVar(&cfg.Shards, "shards", 1, "iopool servers: run this many pools, each on a locked thread with an fd table of its own, for more connections than RLIMIT_NOFILE")
	fs.BoolVar(&cfg.RaiseLimits, "raise-limits", false, "as root, raise the RLIMIT_NOFILE hard limit, fs.nr_open and fs.file-max as needed (restored at exit)")
	fs.DurationVar(&cfg.Timeout, "timeout", 30*time.Second, "fail when the client makes no progress for this long")
	fs.StringVar(&cfg.MemProfile, "memprofile", "", "write the server's heap profile to this file when it measures itself")
	_ = fs.Parse(os.Args[1:])
	if err := run(cfg, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "conns:", err)
		os.Exit(1)
	}
}

// memory is what the server process uses, at one moment.
type memory struct {
	user    uint64 // heap objects + goroutine stacks
	rss     uint64
	slab    uint64 // machine-wide
	unrecl  uint64 // machine-wide
	caches  map[string]uint64
	heapObj uint64
	stacks  uint64
}

func measure() memory {
	runtime.GC()
	runtime.GC()
	s := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}, {Name: "/memory/classes/heap/stacks:bytes"}}
	metrics.Read(s)
	m := memory{heapObj: s[0].Value.Uint64(), stacks: s[1].Value.Uint64()}
	m.user = m.heapObj + m.stacks
	m.rss = procKB("/proc/self/status", "VmRSS:")
	m.slab = procKB("/proc/meminfo", "Slab:")
	m.unrecl = procKB("/proc/meminfo", "SUnreclaim:")
	m.caches = slabCaches()
	return m
}

// run serves cfg.Impl, runs the client against it and prints the report.
func run(cfg Config, out io.Writer) error {
	if cfg.Size < 16 || cfg.Size > 4096 {
		return fmt.Errorf("-size %d: want 16 to 4096", cfg.Size)
	}
	if cfg.N < 1 || cfg.Window < 1 {
		return fmt.Errorf("-n %d -window %d: want at least 1", cfg.N, cfg.Window)
	}
	start, ok := impls[cfg.Impl]
	if !ok {
		return fmt.Errorf("unknown -impl %q: want one of %s", cfg.Impl, strings.Join(implNames(), ", "))
	}
	if cfg.Shards > 1 && !shardable(cfg.Impl) {
		return fmt.Errorf("-shards %d: only the iopool servers run as several pools", cfg.Shards)
	}
	// A shard gets about N/shards connections (SO_REUSEPORT's hash: a few
	// hundred more at most); the client shards by itself.
	perTable := cfg.N
	if cfg.Shards > 1 {
		perTable = cfg.N/cfg.Shards + cfg.N/cfg.Shards/10 + 64
	}
	restore, err := raiseLimits(perTable+256, 2*cfg.N+256, cfg.RaiseLimits, shardable(cfg.Impl), out)
	defer restore()
	if err != nil {
		return err
	}
	if cfg.MemProfile != "" {
		// Record every allocation, not one per 512 KiB: the profile then
		// says exactly what a connection is made of.
		runtime.MemProfileRate = 1
	}
	before := measure()
	srv, err := start("127.0.0.1:0", cfg.Shards)
	if err != nil {
		return fmt.Errorf("starting %s: %w", cfg.Impl, err)
	}
	cl, err := startClient(cfg, srv.addr)
	if err != nil {
		return err
	}
	defer cl.kill()

	began := time.Now()
	connected, err := cl.expect("echoed")
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "client: %s (%.1f s)\n", connected, time.Since(began).Seconds())
	// Every connection has echoed, so the server has accepted it; let the
	// last handlers go idle.
	if err := waitAccepted(srv, cfg.N, cfg.Timeout); err != nil {
		fmt.Fprintln(out, "server:", err)
	}
	time.Sleep(cfg.Hold / 2)
	held := measure()
	if cfg.MemProfile != "" {
		if err := writeHeapProfile(cfg.MemProfile); err != nil {
			return err
		}
	}
	time.Sleep(cfg.Hold - cfg.Hold/2)
	if err := cl.send("finish"); err != nil {
		return err
	}
	done, err := cl.expect("done")
	if err != nil {
		return err
	}
	if err := cl.wait(); err != nil {
		return fmt.Errorf("client: %w", err)
	}
	fmt.Fprintf(out, "client: %s\n", done)
	kv := fields(done)
	clientErrors, _ := strconv.Atoi(kv["errors"])
	missing := max(cfg.N-int(srv.accepted.Load()), 0)
	n := float64(cfg.N)
	per := func(a, b uint64) int64 { return int64((float64(a) - float64(b)) / n) }
	fmt.Fprintf(out, "server: heap_objects_per_conn=%d stacks_per_conn=%d not_accepted=%d\n",
		per(held.heapObj, before.heapObj), per(held.stacks, before.stacks), missing)
	var caches []string
	for _, name := range slabCacheNames {
		if held.caches[name] > 0 {
			caches = append(caches, fmt.Sprintf("%s=%d", name, per(held.caches[name], before.caches[name])))
		}
	}
	fmt.Fprintf(out, "kernel (machine-wide, both ends of each connection): slab_bytes_per_conn=%d sunreclaim_bytes_per_conn=%d %s\n",
		per(held.slab*1024, before.slab*1024), per(held.unrecl*1024, before.unrecl*1024), strings.Join(caches, " "))
	fmt.Fprintf(out, "conns=%d impl=%s user_bytes_per_conn=%d rss_bytes_per_conn=%d rtt_p99_us=%s errors=%d\n",
		cfg.N, cfg.Impl, per(held.user, before.user), per(held.rss*1024, before.rss*1024), kv["rtt_p99_us"], clientErrors+missing)
	return nil
}

// waitAccepted waits until the server has accepted n connections.
func waitAccepted(srv *server, n int, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for srv.accepted.Load() < int64(n) {
		if time.Now().After(deadline) {
			return fmt.Errorf("accepted %d of %d connections", srv.accepted.Load(), n)
		}
		time.Sleep(10 * time.Millisecond)
	}
	return nil
}

// fields parses "k=v k=v" words.
func fields(line string) map[string]string {
	kv := map[string]string{}
	for _, w := range strings.Fields(line) {
		if k, v, ok := strings.Cut(w, "="); ok {
			kv[k] = v
		}
	}
	return kv
}

// client is the client process.
type client struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	lines *bufio.Scanner
}

func startClient(cfg Config, addr string) (*client, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(self, clientArg, "-addr", addr, "-n", strconv.Itoa(cfg.N),
		"-size", strconv.Itoa(cfg.Size), "-window", strconv.Itoa(cfg.Window),
		"-ping-every", cfg.PingEvery.String(), "-timeout", cfg.Timeout.String())
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting the client: %w", err)
	}
	return &client{cmd: cmd, stdin: stdin, lines: bufio.NewScanner(stdout)}, nil
}

// expect returns the client's next line, which must start with word.
func (c *client) expect(word string) (string, error) {
	for c.lines.Scan() {
		line := c.lines.Text()
		if strings.HasPrefix(line, word) {
			return line, nil
		}
		fmt.Fprintln(os.Stderr, "client:", line)
	}
	return "", fmt.Errorf("the client ended before %q (%v)", word, c.lines.Err())
}

func (c *client) send(line string) error {
	_, err := fmt.Fprintln(c.stdin, line)
	return err
}

func (c *client) wait() error {
	c.stdin.Close()
	return c.cmd.Wait()
}

// kill ends the client if it still runs.
func (c *client) kill() {
	if c.cmd.ProcessState == nil {
		_ = c.cmd.Process.Kill()
		_ = c.cmd.Wait()
	}
}

// writeHeapProfile writes the heap profile (go tool pprof -sample_index
// inuse_space) to path.
func writeHeapProfile(path string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := pprof.WriteHeapProfile(f); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
