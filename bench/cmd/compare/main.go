// Command compare runs the echo servers of cmd/echoserver side by side,
// each as its own process, against one load client, and reports for each
// point (connections × message size) the requests per second, the p99
// latency and the server's CPU time per request, the medians of -reps
// runs; then the memory per idle connection of each server. The client is
// the bottleneck on a small machine, so CPU per request ranks the servers.
//
//	cd bench && go run ./cmd/compare -out ../docs
//
// It writes results.json, results.md and benchmarks.svg to -out.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Config is what one comparison runs.
type Config struct {
	Impls    []string
	Conns    []int
	Sizes    []int
	Duration time.Duration
	Reps     int
	Idle     int
	Out      string
	Server   string // a built cmd/echoserver; built into a temp dir if empty
}

// Point is the median result of one server at one load point.
type Point struct {
	Impl       string  `json:"impl"`
	Conns      int     `json:"conns"`
	Size       int     `json:"size"`
	ReqPerSec  float64 `json:"req_per_sec"`
	P99Micros  float64 `json:"p99_us"`
	CPUPerReq  float64 `json:"server_cpu_us_per_req"`
	Reps       int     `json:"reps"`
	TotalBytes int64   `json:"verified_bytes"`
}

// Idle is one server's memory per idle connection.
type Idle struct {
	Impl        string  `json:"impl"`
	Conns       int     `json:"conns"`
	BytesPerCon float64 `json:"rss_bytes_per_conn"`
}

// Results is everything one run measured.
type Results struct {
	Machine string  `json:"machine"`
	Points  []Point `json:"points"`
	Idle    []Idle  `json:"idle"`
}

var allImpls = []string{"iopool-poll", "iopool-task", "rawepoll", "gonet", "gnet"}

func main() {
	cfg, err := parseFlags(os.Args[1:], os.Stderr)
	if err != nil {
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, cfg, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "compare:", err)
		os.Exit(1)
	}
}

func parseFlags(args []string, stderr io.Writer) (Config, error) {
	fs := flag.NewFlagSet("compare", flag.ContinueOnError)
	fs.SetOutput(stderr)
	impls := fs.String("impls", strings.Join(allImpls, ","), "servers to compare")
	conns := fs.String("conns", "1,64,1000", "connection counts")
	sizes := fs.String("sizes", "64,1024", "message sizes in bytes")
	duration := fs.Duration("duration", 3*time.Second, "measured time per point and rep")
	reps := fs.Int("reps", 3, "repetitions per point (the median is reported)")
	idle := fs.Int("idle", 10000, "idle connections for the memory measurement (0 skips it)")
	out := fs.String("out", "", "directory for results.json, results.md and benchmarks.svg")
	server := fs.String("server", "", "a built cmd/echoserver binary (default: build one)")
	if err := fs.Parse(args); err != nil {
		return Config{}, err
	}
	cfg := Config{Duration: *duration, Reps: *reps, Idle: *idle, Out: *out, Server: *server}
	bad := func(format string, a ...any) (Config, error) {
		err := fmt.Errorf(format, a...)
		fmt.Fprintln(stderr, "compare:", err)
		fs.Usage()
		return Config{}, err
	}
	if fs.NArg() > 0 {
		return bad("unexpected arguments %q", fs.Args())
	}
	for _, s := range strings.Split(*impls, ",") {
		if !slices.Contains(allImpls, s) {
			return bad("unknown server %q in -impls (have %s)", s, strings.Join(allImpls, ", "))
		}
		cfg.Impls = append(cfg.Impls, s)
	}
	var err error
	if cfg.Conns, err = parseInts(*conns, 1, 20000); err != nil {
		return bad("-conns: %v", err)
	}
	if cfg.Sizes, err = parseInts(*sizes, 1, 1<<20); err != nil {
		return bad("-sizes: %v", err)
	}
	if cfg.Duration <= 0 || cfg.Reps < 1 || cfg.Idle < 0 {
		return bad("-duration, -reps must be positive and -idle not negative")
	}
	return cfg, nil
}

func parseInts(s string, lo, hi int) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < lo || n > hi {
			return nil, fmt.Errorf("%q is not a number in %d..%d", f, lo, hi)
		}
		out = append(out, n)
	}
	return out, nil
}

func run(ctx context.Context, cfg Config, stdout io.Writer) error {
	raiseNofile()
	if cfg.Server == "" {
		dir, err := os.MkdirTemp("", "iopool-compare")
		if err != nil {
			return err
		}
		defer os.RemoveAll(dir)
		cfg.Server = filepath.Join(dir, "echoserver")
		build := exec.CommandContext(ctx, "go", "build", "-o", cfg.Server, "./cmd/echoserver")
		build.Stderr = os.Stderr
		if err := build.Run(); err != nil {
			return fmt.Errorf("building cmd/echoserver (run compare from the bench directory): %w", err)
		}
	}
	res := Results{Machine: machine()}
	fmt.Fprintf(stdout, "%s\n%-12s %6s %6s %12s %10s %16s\n", res.Machine, "server", "conns", "size", "req/s", "p99 µs", "server CPU µs/req")
	for _, conns := range cfg.Conns {
		for _, size := range cfg.Sizes {
			for _, impl := range cfg.Impls {
				pt, err := measurePoint(ctx, cfg, impl, conns, size)
				if err != nil {
					return err
				}
				res.Points = append(res.Points, pt)
				fmt.Fprintf(stdout, "%-12s %6d %6d %12.0f %10.1f %16.2f\n", impl, conns, size, pt.ReqPerSec, pt.P99Micros, pt.CPUPerReq)
			}
		}
	}
	if cfg.Idle > 0 {
		fmt.Fprintf(stdout, "\n%-12s %6s %14s\n", "server", "idle", "RSS B/conn")
		for _, impl := range cfg.Impls {
			id, err := measureIdle(ctx, cfg, impl)
			if err != nil {
				return err
			}
			res.Idle = append(res.Idle, id)
			fmt.Fprintf(stdout, "%-12s %6d %14.0f\n", impl, id.Conns, id.BytesPerCon)
		}
	}
	if cfg.Out != "" {
		return writeOutputs(cfg.Out, res)
	}
	return nil
}

func machine() string {
	var u unix.Utsname
	_ = unix.Uname(&u)
	cpus := 0
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		cpus = strings.Count(string(b), "processor\t:")
	}
	return fmt.Sprintf("Linux %s, %d CPUs, %s", unix.ByteSliceToString(u.Release[:]), cpus, goVersion())
}

func goVersion() string {
	out, err := exec.Command("go", "env", "GOVERSION").Output()
	if err != nil {
		return "go (unknown version)"
	}
	return strings.TrimSpace(string(out))
}

func raiseNofile() {
	var rl unix.Rlimit
	if unix.Getrlimit(unix.RLIMIT_NOFILE, &rl) == nil && rl.Cur < rl.Max {
		rl.Cur = rl.Max
		_ = unix.Setrlimit(unix.RLIMIT_NOFILE, &rl)
	}
}

// server is a running echo server process.
type server struct {
	cmd   *exec.Cmd
	stdin io.Closer
	addr  string
	impl  string
}

func startServer(ctx context.Context, bin, impl string) (*server, error) {
	addr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	cmd := exec.CommandContext(ctx, bin, "-impl", impl, "-listen", addr)
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
		return nil, fmt.Errorf("starting server %s: %w", impl, err)
	}
	s := &server{cmd: cmd, stdin: stdin, addr: addr, impl: impl}
	ready := make(chan error, 1)
	go func() {
		// Servers may log before they are ready (gnet does).
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if strings.TrimSpace(sc.Text()) == "ready" {
				ready <- nil
				_, _ = io.Copy(io.Discard, stdout)
				return
			}
		}
		ready <- fmt.Errorf("exited before printing ready (%v)", sc.Err())
	}()
	select {
	case err := <-ready:
		if err != nil {
			s.stop()
			return nil, fmt.Errorf("server %s did not start on %s: %v", impl, addr, err)
		}
	case <-time.After(15 * time.Second):
		s.stop()
		return nil, fmt.Errorf("server %s did not start on %s within 15 s", impl, addr)
	}
	return s, nil
}

// stop ends the server: stdin closed, then killed if it lingers.
func (s *server) stop() {
	s.stdin.Close()
	done := make(chan struct{})
	go func() { _ = s.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(3 * time.Second):
		_ = s.cmd.Process.Kill()
		<-done
	}
}

func freeAddr() (string, error) {
	l, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// cpuNanos returns the CPU time of every thread of process pid, in ns,
// from the scheduler's statistics.
func cpuNanos(pid int) (int64, error) {
	tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil {
		return 0, err
	}
	var total int64
	for _, t := range tasks {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/schedstat", pid, t.Name()))
		if err != nil {
			continue // the thread exited
		}
		f := strings.Fields(string(b))
		if len(f) > 0 {
			n, _ := strconv.ParseInt(f[0], 10, 64)
			total += n
		}
	}
	return total, nil
}

func rssBytes(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
			return kb << 10, err
		}
	}
	return 0, errors.New("no VmRSS")
}

// measurePoint runs cfg.Reps loads of one server at one point, each
// against a fresh server process, and returns the medians.
func measurePoint(ctx context.Context, cfg Config, impl string, conns, size int) (Point, error) {
	var rps, p99, cpu []float64
	var verified int64
	for range cfg.Reps {
		s, err := startServer(ctx, cfg.Server, impl)
		if err != nil {
			return Point{}, err
		}
		r, err := load(ctx, s, conns, size, cfg.Duration)
		s.stop()
		if err != nil {
			return Point{}, fmt.Errorf("%s, %d conns × %d B: %w", impl, conns, size, err)
		}
		rps = append(rps, r.rps)
		p99 = append(p99, r.p99)
		cpu = append(cpu, r.cpuPerReq)
		verified += r.bytes
	}
	return Point{Impl: impl, Conns: conns, Size: size, ReqPerSec: median(rps), P99Micros: median(p99),
		CPUPerReq: median(cpu), Reps: cfg.Reps, TotalBytes: verified}, nil
}

func median(v []float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

type loadResult struct {
	rps, p99, cpuPerReq float64
	bytes               int64
}

// load drives s with conns closed-loop clients sending size-byte messages
// for d after a short warm-up; every echoed byte is checked.
func load(ctx context.Context, s *server, conns, size int, d time.Duration) (loadResult, error) {
	cs := make([]net.Conn, 0, conns)
	defer func() {
		for _, c := range cs {
			c.Close()
		}
	}()
	for range conns {
		c, err := net.Dial("tcp4", s.addr)
		if err != nil {
			return loadResult{}, fmt.Errorf("dial %s: %w", s.addr, err)
		}
		cs = append(cs, c)
	}
	var measuring, stop atomic.Bool
	var reqs, bytes atomic.Int64
	lat := make([][]time.Duration, conns)
	errc := make(chan error, conns)
	var wg sync.WaitGroup
	for i, c := range cs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			msg, got := make([]byte, size), make([]byte, size)
			for seq := 0; !stop.Load() && ctx.Err() == nil; seq++ {
				for j := range msg {
					msg[j] = byte(i*7 + seq + j)
				}
				start := time.Now()
				if _, err := c.Write(msg); err != nil {
					errc <- fmt.Errorf("write: %w", err)
					return
				}
				if _, err := io.ReadFull(c, got); err != nil {
					errc <- fmt.Errorf("read the echo: %w", err)
					return
				}
				if string(got) != string(msg) {
					errc <- fmt.Errorf("connection %d: the echo of message %d differs from what was sent", i, seq)
					return
				}
				if measuring.Load() {
					lat[i] = append(lat[i], time.Since(start))
					reqs.Add(1)
					bytes.Add(int64(size))
				}
			}
		}()
	}
	time.Sleep(min(d/5, 500*time.Millisecond)) // warm-up
	pid := s.cmd.Process.Pid
	cpu0, err := cpuNanos(pid)
	if err != nil {
		return loadResult{}, err
	}
	t0 := time.Now()
	measuring.Store(true)
	select {
	case <-time.After(d):
	case err := <-errc:
		stop.Store(true)
		return loadResult{}, err
	case <-ctx.Done():
	}
	measuring.Store(false)
	elapsed := time.Since(t0)
	cpu1, err := cpuNanos(pid)
	stop.Store(true)
	for _, c := range cs {
		_ = c.SetDeadline(time.Now().Add(2 * time.Second))
	}
	wg.Wait()
	if err != nil {
		return loadResult{}, err
	}
	if ctx.Err() != nil {
		return loadResult{}, ctx.Err()
	}
	n := reqs.Load()
	if n == 0 {
		return loadResult{}, errors.New("no request completed")
	}
	var all []time.Duration
	for _, l := range lat {
		all = append(all, l...)
	}
	slices.Sort(all)
	return loadResult{
		rps:       float64(n) / elapsed.Seconds(),
		p99:       float64(all[len(all)*99/100].Nanoseconds()) / 1e3,
		cpuPerReq: float64(cpu1-cpu0) / float64(n) / 1e3,
		bytes:     bytes.Load(),
	}, nil
}

// measureIdle opens cfg.Idle connections to a fresh server, echoes one
// byte on each so that the server holds them all, and reports the growth
// of its resident memory per connection.
func measureIdle(ctx context.Context, cfg Config, impl string) (Idle, error) {
	s, err := startServer(ctx, cfg.Server, impl)
	if err != nil {
		return Idle{}, err
	}
	defer s.stop()
	pid := s.cmd.Process.Pid
	// Warm the server up with a few connections first, so that its start-up
	// allocations are not counted.
	if _, err := load(ctx, s, 4, 64, 100*time.Millisecond); err != nil {
		return Idle{}, fmt.Errorf("%s idle warm-up: %w", impl, err)
	}
	time.Sleep(200 * time.Millisecond)
	before, err := rssBytes(pid)
	if err != nil {
		return Idle{}, err
	}
	conns := make([]net.Conn, 0, cfg.Idle)
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	b := []byte{'x'}
	for range cfg.Idle {
		c, err := net.Dial("tcp4", s.addr)
		if err != nil {
			return Idle{}, fmt.Errorf("%s: idle connection %d: %w (raise the fd limit or lower -idle)", impl, len(conns)+1, err)
		}
		conns = append(conns, c)
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := c.Write(b); err != nil {
			return Idle{}, err
		}
		if _, err := io.ReadFull(c, b); err != nil || b[0] != 'x' {
			return Idle{}, fmt.Errorf("%s: idle connection %d did not echo: %v", impl, len(conns), err)
		}
	}
	time.Sleep(300 * time.Millisecond)
	after, err := rssBytes(pid)
	if err != nil {
		return Idle{}, err
	}
	return Idle{Impl: impl, Conns: cfg.Idle, BytesPerCon: float64(after-before) / float64(cfg.Idle)}, nil
}

func writeOutputs(dir string, res Results) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	js, err := json.MarshalIndent(res, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "results.json"), append(js, '\n'), 0o644); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "results.md"), []byte(markdown(res)), 0o644); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "benchmarks.svg"), []byte(chart(res)), 0o644)
}

func markdown(res Results) string {
	var b strings.Builder
	fmt.Fprintf(&b, "Machine: %s\n\n", res.Machine)
	b.WriteString("| conns | size | server | req/s | p99 µs | server CPU µs/req | vs rawepoll |\n|---:|---:|---|---:|---:|---:|---:|\n")
	for _, p := range res.Points {
		ratio := ""
		for _, q := range res.Points {
			if q.Impl == "rawepoll" && q.Conns == p.Conns && q.Size == p.Size && q.CPUPerReq > 0 {
				ratio = fmt.Sprintf("%.2f×", p.CPUPerReq/q.CPUPerReq)
			}
		}
		fmt.Fprintf(&b, "| %d | %d | %s | %.0f | %.1f | %.2f | %s |\n", p.Conns, p.Size, p.Impl, p.ReqPerSec, p.P99Micros, p.CPUPerReq, ratio)
	}
	if len(res.Idle) > 0 {
		b.WriteString("\n| server | idle connections | RSS bytes per connection |\n|---|---:|---:|\n")
		for _, id := range res.Idle {
			fmt.Fprintf(&b, "| %s | %d | %.0f |\n", id.Impl, id.Conns, id.BytesPerCon)
		}
	}
	return b.String()
}

// chart draws the server CPU per request as grouped bars, one group per
// load point, one bar per server.
func chart(res Results) string {
	type key struct{ conns, size int }
	var groups []key
	var impls []string
	maxv := 0.0
	for _, p := range res.Points {
		k := key{p.Conns, p.Size}
		if !slices.Contains(groups, k) {
			groups = append(groups, k)
		}
		if !slices.Contains(impls, p.Impl) {
			impls = append(impls, p.Impl)
		}
		maxv = max(maxv, p.CPUPerReq)
	}
	colors := []string{"#1f77b4", "#2ca02c", "#7f7f7f", "#d62728", "#ff7f0e", "#9467bd"}
	const h, top, bottom, left, barW, gap = 360.0, 40.0, 50.0, 60.0, 16.0, 24.0
	groupW := float64(len(impls))*barW + gap
	w := left + float64(len(groups))*groupW + 160
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%.0f" height="%.0f" font-family="sans-serif" font-size="11">`+"\n", w, h)
	fmt.Fprintf(&b, `<rect width="100%%" height="100%%" fill="white"/><text x="%.0f" y="20" font-size="14">Server CPU per request (µs, lower is better)</text>`+"\n", left)
	plotH := h - top - bottom
	for i := 0; i <= 4; i++ {
		v := maxv * float64(i) / 4
		y := top + plotH - plotH*float64(i)/4
		fmt.Fprintf(&b, `<line x1="%.0f" x2="%.0f" y1="%.1f" y2="%.1f" stroke="#ddd"/><text x="%.0f" y="%.1f" text-anchor="end">%.1f</text>`+"\n", left, w-160, y, y, left-6, y+4, v)
	}
	for gi, g := range groups {
		x0 := left + float64(gi)*groupW + gap/2
		for ii, impl := range impls {
			for _, p := range res.Points {
				if p.Impl != impl || p.Conns != g.conns || p.Size != g.size || maxv == 0 {
					continue
				}
				bh := plotH * p.CPUPerReq / maxv
				fmt.Fprintf(&b, `<rect x="%.1f" y="%.1f" width="%.0f" height="%.1f" fill="%s"><title>%s %d conns %d B: %.2f µs</title></rect>`+"\n",
					x0+float64(ii)*barW, top+plotH-bh, barW-2, bh, colors[ii%len(colors)], impl, g.conns, g.size, p.CPUPerReq)
			}
		}
		fmt.Fprintf(&b, `<text x="%.1f" y="%.0f" text-anchor="middle">%d×%dB</text>`+"\n", x0+float64(len(impls))*barW/2, h-bottom+16, g.conns, g.size)
	}
	for ii, impl := range impls {
		y := top + float64(ii)*18
		fmt.Fprintf(&b, `<rect x="%.0f" y="%.0f" width="12" height="12" fill="%s"/><text x="%.0f" y="%.0f">%s</text>`+"\n", w-150, y, colors[ii%len(colors)], w-132, y+10, impl)
	}
	b.WriteString("</svg>\n")
	return b.String()
}
