//go:build linux

// Command compare runs the servers of cmd/echoserver and examples/echo side
// by side, each as its own process, against one load client, and reports
// for each load point the requests per second, the p99 latency and the
// server's CPU time per request (medians of -reps runs, the servers
// interleaved within each rep); then a net/http case and the memory per
// idle connection. The client is the bottleneck on a small machine, so CPU
// per request ranks the servers.
//
//	cd bench && go run ./cmd/compare -out ../docs
//
// Every iopool server and the raw epoll loop run twice, with the loop on a
// locked OS thread (/locked) and not (/unlocked). -pin both (the default)
// measures every point twice: pinned, with the servers on the last CPU and
// the client on CPU 0 (thread-per-core), and unpinned, everything sharing
// every CPU. A point is connections × message size, optionally × requests
// in flight per connection (pipelined: the client writes that many
// messages at once and reads all the echoes back).
//
// Then it runs the library's in-process net/http benchmark
// (BenchmarkNetHTTP: Go net against a started pool, unlocked and locked,
// client and server in one process), -inproc times.
//
// It writes benchmarks.md (every table of it, and the machine: CPU model,
// kernel, Go version, load average), results.json and benchmarks.svg to
// -out. benchmarks.md includes -out's conns.md verbatim, if there is one,
// as its section on a million connections. -quick runs a short version
// (three points, one repetition, shorter windows) for development.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Config is what one comparison runs.
type Config struct {
	Impls    []string // server variants, e.g. "iopool-task/locked"
	Points   []LoadPoint
	Pin      []bool // the modes to run: true is pinned
	HTTP     int    // net/http case: concurrent keep-alive clients; 0 skips it
	Duration time.Duration
	Reps     int
	Idle     int
	Out      string
	Server   string // a built cmd/echoserver; built into a temp dir if empty
	Echo     string // a built examples/echo; built into a temp dir if empty
	InProc   int    // runs of the in-process net/http benchmark; 0 skips it
	InProcN  int    // requests per server and run of the in-process benchmark
	Quick    bool   // the short development run
	Render   bool   // measure nothing: rewrite benchmarks.md and the chart from Out's results.json
}

// LoadPoint is one load: Conns connections sending Size-byte messages,
// Depth of them in flight per connection (1: request/response).
type LoadPoint struct {
	Conns int `json:"conns"`
	Size  int `json:"size"`
	Depth int `json:"depth"`
}

func (lp LoadPoint) String() string {
	s := fmt.Sprintf("%d × %s", lp.Conns, sizeName(lp.Size))
	if lp.Depth > 1 {
		s += fmt.Sprintf(" ×%d pipelined", lp.Depth)
	}
	return s
}

func sizeName(n int) string {
	if n >= 1024 && n%1024 == 0 {
		return fmt.Sprintf("%d KiB", n/1024)
	}
	return fmt.Sprintf("%d B", n)
}

// Point is the median result of one server at one load point.
type Point struct {
	Impl string `json:"impl"`
	LoadPoint
	Pinned     bool    `json:"pinned"`
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
	Machine  Machine  `json:"machine"`
	Quick    bool     `json:"quick"`
	Duration string   `json:"duration_per_rep"`
	Reps     int      `json:"reps"`
	Points   []Point  `json:"points"`
	HTTP     []Point  `json:"http"` // Conns is the number of clients, Size 0 (1–3 KB bodies)
	Idle     []Idle   `json:"idle"`
	InProc   []InProc `json:"http_in_process"`
}

// The echo servers. Those with a loop of their own run locked and unlocked.
var (
	baseImpls   = []string{"iopool-poll", "iopool-task", "echo", "rawepoll", "gonet", "gnet"}
	loopImpls   = []string{"iopool-poll", "iopool-task", "echo", "rawepoll", "http-netconn"}
	httpImpls   = []string{"http-gonet", "http-netconn/locked", "http-netconn/unlocked"}
	defPoints   = "1x64,16x64,64x64,256x64,1000x64,64x4096,16x64x8"
	quickPoints = "1x64,64x64,16x64x8"
	execOnCPU   = "-exec-on-cpu" // compare -exec-on-cpu N BIN ARGS...: run BIN pinned to CPU N
	serverCPUs  = func() int { return runtime.NumCPU() - 1 }
)

// variants expands a server name to its locked and unlocked variants.
func variants(impl string) []string {
	if slices.Contains(loopImpls, impl) {
		return []string{impl + "/locked", impl + "/unlocked"}
	}
	return []string{impl}
}

func main() {
	if len(os.Args) > 3 && os.Args[1] == execOnCPU {
		execPinned(os.Args[2], os.Args[3:])
	}
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
	impls := fs.String("impls", strings.Join(baseImpls, ","), "echo servers to compare; a server with a loop of its own runs as NAME/locked and NAME/unlocked unless one is named")
	points := fs.String("points", defPoints, "load points CONNSxSIZE or CONNSxSIZExDEPTH (DEPTH requests in flight per connection)")
	pin := fs.String("pin", "both", "pinned (servers on the last CPU, the client on CPU 0), unpinned, or both")
	httpClients := fs.Int("http", 50, "keep-alive clients of the net/http case (0 skips it)")
	duration := fs.Duration("duration", time.Second, "measured time per point and rep")
	reps := fs.Int("reps", 3, "repetitions per point (the median is reported)")
	idle := fs.Int("idle", 10000, "idle connections for the memory measurement (0 skips it)")
	out := fs.String("out", "", "directory for benchmarks.md, results.json and benchmarks.svg (benchmarks.md includes its conns.md)")
	inproc := fs.Int("inproc", 3, "runs of the in-process net/http benchmark (0 skips it)")
	inprocN := fs.Int("inproc-requests", 20000, "requests per server and run of the in-process net/http benchmark")
	render := fs.Bool("render", false, "measure nothing: rewrite benchmarks.md and benchmarks.svg from -out's results.json (after editing conns.md, or the text)")
	quick := fs.Bool("quick", false, "a short run for development: -points "+quickPoints+" -duration 300ms -reps 1 -idle 1000 -inproc 1 -inproc-requests 5000, unless given")
	server := fs.String("server", "", "a built cmd/echoserver binary (default: build one)")
	echo := fs.String("echo", "", "a built examples/echo binary (default: build one)")
	if err := fs.Parse(args); err != nil {
		return Config{}, err
	}
	if *quick {
		set := map[string]bool{}
		fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
		for name, v := range map[string]string{"points": quickPoints, "duration": "300ms", "reps": "1", "idle": "1000",
			"inproc": "1", "inproc-requests": "5000"} {
			if !set[name] {
				_ = fs.Set(name, v)
			}
		}
	}
	cfg := Config{HTTP: *httpClients, Duration: *duration, Reps: *reps, Idle: *idle, Out: *out, Server: *server, Echo: *echo,
		InProc: *inproc, InProcN: *inprocN, Quick: *quick, Render: *render}
	bad := func(format string, a ...any) (Config, error) {
		err := fmt.Errorf(format, a...)
		fmt.Fprintln(stderr, "compare:", err)
		fs.Usage()
		return Config{}, err
	}
	if fs.NArg() > 0 {
		return bad("unexpected arguments %q", fs.Args())
	}
	if cfg.Render && cfg.Out == "" {
		return bad("-render needs -out, the directory of results.json")
	}
	for _, s := range strings.Split(*impls, ",") {
		base, mode, hasMode := strings.Cut(s, "/")
		switch {
		case !slices.Contains(baseImpls, base):
			return bad("unknown server %q in -impls (have %s)", s, strings.Join(baseImpls, ", "))
		case !hasMode:
			cfg.Impls = append(cfg.Impls, variants(base)...)
		case slices.Contains(loopImpls, base) && (mode == "locked" || mode == "unlocked"):
			cfg.Impls = append(cfg.Impls, s)
		default:
			return bad("server %q in -impls: only %s have /locked and /unlocked", s, strings.Join(loopImpls[:4], ", "))
		}
	}
	for _, f := range strings.Split(*points, ",") {
		lp, err := parsePoint(f)
		if err != nil {
			return bad("-points: %v", err)
		}
		cfg.Points = append(cfg.Points, lp)
	}
	switch *pin {
	case "both":
		cfg.Pin = []bool{true, false}
	case "pinned":
		cfg.Pin = []bool{true}
	case "unpinned":
		cfg.Pin = []bool{false}
	default:
		return bad("-pin %q: want pinned, unpinned or both", *pin)
	}
	if slices.Contains(cfg.Pin, true) && runtime.NumCPU() < 2 {
		return bad("-pin %s needs two CPUs, this machine has %d", *pin, runtime.NumCPU())
	}
	if cfg.Duration <= 0 || cfg.Reps < 1 || cfg.Idle < 0 || cfg.HTTP < 0 || cfg.HTTP > 10000 || cfg.InProc < 0 || cfg.InProcN < 1 {
		return bad("-duration, -reps, -inproc-requests must be positive, -idle and -inproc not negative, -http in 0..10000")
	}
	return cfg, nil
}

// parsePoint parses CONNSxSIZE[xDEPTH].
func parsePoint(s string) (LoadPoint, error) {
	f := strings.Split(strings.TrimSpace(s), "x")
	lp := LoadPoint{Depth: 1}
	dst := []*int{&lp.Conns, &lp.Size, &lp.Depth}
	lim := [][2]int{{1, 20000}, {1, 1 << 20}, {1, 64}}
	if len(f) < 2 || len(f) > 3 {
		return lp, fmt.Errorf("%q is not CONNSxSIZE or CONNSxSIZExDEPTH", s)
	}
	for i, v := range f {
		n, err := strconv.Atoi(v)
		if err != nil || n < lim[i][0] || n > lim[i][1] {
			return lp, fmt.Errorf("%q: %q is not a number in %d..%d", s, v, lim[i][0], lim[i][1])
		}
		*dst[i] = n
	}
	return lp, nil
}

func run(ctx context.Context, cfg Config, stdout io.Writer) error {
	if cfg.Render {
		return rerender(cfg.Out)
	}
	raiseNofile()
	dir, err := os.MkdirTemp("", "iopool-compare")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	builds := []struct {
		bin *string
		pkg string
	}{{&cfg.Server, "./cmd/echoserver"}, {&cfg.Echo, "github.com/iopool/iopool/examples/echo"}}
	for _, b := range builds {
		if *b.bin != "" {
			continue
		}
		*b.bin = filepath.Join(dir, filepath.Base(b.pkg))
		build := exec.CommandContext(ctx, "go", "build", "-o", *b.bin, b.pkg)
		build.Stderr = os.Stderr
		if err := build.Run(); err != nil {
			return fmt.Errorf("building %s (run compare from the bench directory): %w", b.pkg, err)
		}
	}
	res := Results{Machine: machineInfo(), Quick: cfg.Quick, Duration: cfg.Duration.String(), Reps: cfg.Reps}
	fmt.Fprintln(stdout, res.Machine)
	for _, pinned := range cfg.Pin {
		if err := pinClient(pinned); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "\n%s\n%-22s %-24s %12s %10s %16s\n", modeName(pinned), "server", "point", "req/s", "p99 µs", "server CPU µs/req")
		for _, lp := range cfg.Points {
			pts, err := measurePoint(ctx, cfg, cfg.Impls, pinned, func(ctx context.Context, s *server) (loadResult, error) {
				return loadEcho(ctx, s, lp, cfg.Duration)
			})
			if err != nil {
				return fmt.Errorf("%s, %v: %w", modeName(pinned), lp, err)
			}
			for _, pt := range pts {
				pt.LoadPoint = lp
				res.Points = append(res.Points, pt)
				fmt.Fprintf(stdout, "%-22s %-24s %12.0f %10.1f %16.2f\n", pt.Impl, lp, pt.ReqPerSec, pt.P99Micros, pt.CPUPerReq)
			}
		}
		if cfg.HTTP > 0 {
			pts, err := measurePoint(ctx, cfg, httpImpls, pinned, func(ctx context.Context, s *server) (loadResult, error) {
				return loadHTTP(ctx, s, cfg.HTTP, cfg.Duration)
			})
			if err != nil {
				return fmt.Errorf("%s, net/http: %w", modeName(pinned), err)
			}
			for _, pt := range pts {
				pt.Conns = cfg.HTTP
				res.HTTP = append(res.HTTP, pt)
				fmt.Fprintf(stdout, "%-22s %-24s %12.0f %10.1f %16.2f\n", pt.Impl, fmt.Sprintf("%d clients POST 1-3 KB", cfg.HTTP), pt.ReqPerSec, pt.P99Micros, pt.CPUPerReq)
			}
		}
	}
	if err := pinClient(false); err != nil {
		return err
	}
	if cfg.Idle > 0 {
		fmt.Fprintf(stdout, "\n%-22s %6s %14s\n", "server (unpinned)", "idle", "RSS B/conn")
		for _, impl := range cfg.Impls {
			id, err := measureIdle(ctx, cfg, impl)
			if err != nil {
				return err
			}
			res.Idle = append(res.Idle, id)
			fmt.Fprintf(stdout, "%-22s %6d %14.0f\n", impl, id.Conns, id.BytesPerCon)
		}
	}
	if cfg.InProc > 0 {
		fmt.Fprintf(stdout, "\nnet/http in one process (BenchmarkNetHTTP, %d requests over 50 connections)\n", cfg.InProcN)
		res.InProc, err = measureInProc(ctx, dir, cfg.InProc, cfg.InProcN, os.Stdout)
		if err != nil {
			return err
		}
	}
	res.Machine.LoadEnd = loadAvg()
	fmt.Fprintf(stdout, "\nload average at the end: %s\n", res.Machine.LoadEnd)
	if cfg.Out != "" {
		return writeOutputs(cfg.Out, res)
	}
	return nil
}

func modeName(pinned bool) string {
	if pinned {
		return fmt.Sprintf("pinned: servers on CPU %d, the client on CPU 0", serverCPUs())
	}
	return "unpinned: servers and client share every CPU"
}

// measurePoint runs cfg.Reps rounds of one load against every server in
// impls (interleaved: each round runs each server once, each time a fresh
// process) and returns the median of each.
func measurePoint(ctx context.Context, cfg Config, impls []string, pinned bool, load func(context.Context, *server) (loadResult, error)) ([]Point, error) {
	runs := make([][]loadResult, len(impls))
	for range cfg.Reps {
		for i, impl := range impls {
			r, err := measureOnce(ctx, cfg, impl, pinned, load)
			if errors.Is(err, errNoRequest) {
				// On a busy machine a closed-loop client may get no CPU for
				// the whole window: measure this one again, once.
				fmt.Fprintf(os.Stderr, "compare: %s: %v; measuring again\n", impl, err)
				r, err = measureOnce(ctx, cfg, impl, pinned, load)
			}
			if err != nil {
				return nil, fmt.Errorf("%s: %w", impl, err)
			}
			runs[i] = append(runs[i], r)
		}
	}
	pts := make([]Point, len(impls))
	for i, impl := range impls {
		var rps, p99, cpu []float64
		var verified int64
		for _, r := range runs[i] {
			rps, p99, cpu = append(rps, r.rps), append(p99, r.p99), append(cpu, r.cpuPerReq)
			verified += r.bytes
		}
		pts[i] = Point{Impl: impl, Pinned: pinned, ReqPerSec: median(rps), P99Micros: median(p99),
			CPUPerReq: median(cpu), Reps: cfg.Reps, TotalBytes: verified}
	}
	return pts, nil
}

// measureOnce runs one load against a fresh process of impl.
func measureOnce(ctx context.Context, cfg Config, impl string, pinned bool, load func(context.Context, *server) (loadResult, error)) (loadResult, error) {
	s, err := startServer(ctx, cfg, impl, pinned)
	if err != nil {
		return loadResult{}, err
	}
	defer s.stop()
	return load(ctx, s)
}

func median(v []float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func raiseNofile() {
	var rl unix.Rlimit
	if unix.Getrlimit(unix.RLIMIT_NOFILE, &rl) == nil && rl.Cur < rl.Max {
		rl.Cur = rl.Max
		_ = unix.Setrlimit(unix.RLIMIT_NOFILE, &rl)
	}
}
