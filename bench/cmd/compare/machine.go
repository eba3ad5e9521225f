//go:build linux

package main

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Machine is what the run ran on, recorded with the results.
type Machine struct {
	CPUModel  string  `json:"cpu_model"`
	CPUs      int     `json:"cpus"`
	Kernel    string  `json:"kernel"`
	Go        string  `json:"go"`
	MemGiB    float64 `json:"mem_gib"`
	LoadStart string  `json:"loadavg_start"` // 1, 5 and 15 minutes, from /proc/loadavg
	LoadEnd   string  `json:"loadavg_end"`
	Date      string  `json:"date_utc"`
}

func (m Machine) String() string {
	return fmt.Sprintf("%s, %d CPUs, %.0f GiB, Linux %s, %s, load average %s", m.CPUModel, m.CPUs, m.MemGiB, m.Kernel, m.Go, m.LoadStart)
}

func machineInfo() Machine {
	var u unix.Utsname
	_ = unix.Uname(&u)
	m := Machine{CPUModel: "unknown CPU", CPUs: runtime.NumCPU(), Kernel: unix.ByteSliceToString(u.Release[:]),
		Go: goVersion(), LoadStart: loadAvg(), Date: time.Now().UTC().Format("2006-01-02 15:04 UTC")}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPUModel = strings.Join(strings.Fields(v), " ")
				break
			}
		}
	}
	var si unix.Sysinfo_t
	if unix.Sysinfo(&si) == nil {
		m.MemGiB = float64(si.Totalram) * float64(si.Unit) / (1 << 30)
	}
	return m
}

// loadAvg returns the 1, 5 and 15 minute load averages.
func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if f := strings.Fields(string(b)); err == nil && len(f) >= 3 {
		return strings.Join(f[:3], " ")
	}
	return "unknown"
}

func goVersion() string {
	out, err := exec.Command("go", "env", "GOVERSION").Output()
	if err != nil {
		return "go (unknown version)"
	}
	return strings.TrimSpace(string(out))
}

// InProc is the in-process net/http result of one server: the library's
// BenchmarkNetHTTP, client and server in one process.
type InProc struct {
	Impl      string    `json:"impl"` // gonet, pool-unlocked, pool-locked
	Requests  int       `json:"requests_per_run"`
	ReqPerSec float64   `json:"req_per_sec"` // median over the runs
	Runs      []float64 `json:"runs_req_per_sec"`
}

var inProcLine = regexp.MustCompile(`^BenchmarkNetHTTP/(\S+?)(-\d+)?\s+\d+\s+.*?\s([0-9.]+) req/s`)

// measureInProc builds the library's tests and runs BenchmarkNetHTTP reps
// times (each run runs its three servers one after the other, so the
// servers are interleaved across runs), returning the median req/s of each.
func measureInProc(ctx context.Context, dir string, reps, requests int, stdout *os.File) ([]InProc, error) {
	root, err := exec.CommandContext(ctx, "go", "list", "-m", "-f", "{{.Dir}}", "github.com/iopool/iopool").Output()
	if err != nil {
		return nil, fmt.Errorf("finding the library's directory: %w", err)
	}
	bin := filepath.Join(dir, "iopool.test")
	build := exec.CommandContext(ctx, "go", "test", "-c", "-o", bin, ".")
	build.Dir, build.Stderr = strings.TrimSpace(string(root)), os.Stderr
	if err := build.Run(); err != nil {
		return nil, fmt.Errorf("building the library's tests: %w", err)
	}
	runs := map[string][]float64{}
	var order []string
	for range reps {
		cmd := exec.CommandContext(ctx, bin, "-test.run", "^$", "-test.bench", "^BenchmarkNetHTTP$",
			"-test.benchtime", fmt.Sprintf("%dx", requests), "-test.count", "1")
		cmd.Dir, cmd.Stderr = dir, os.Stderr
		out, err := cmd.Output()
		if err != nil {
			return nil, fmt.Errorf("BenchmarkNetHTTP: %w\n%s", err, out)
		}
		sc := bufio.NewScanner(strings.NewReader(string(out)))
		for sc.Scan() {
			m := inProcLine.FindStringSubmatch(sc.Text())
			if m == nil {
				continue
			}
			v, _ := strconv.ParseFloat(m[3], 64)
			if !slices.Contains(order, m[1]) {
				order = append(order, m[1])
			}
			runs[m[1]] = append(runs[m[1]], v)
			fmt.Fprintf(stdout, "%-22s %-24s %12.0f\n", m[1], "in one process", v)
		}
	}
	if len(order) == 0 {
		return nil, fmt.Errorf("BenchmarkNetHTTP printed no result")
	}
	var res []InProc
	for _, impl := range order {
		res = append(res, InProc{Impl: impl, Requests: requests, ReqPerSec: median(runs[impl]), Runs: runs[impl]})
	}
	return res, nil
}
