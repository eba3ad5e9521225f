//go:build linux

package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

var binDir string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "iopool-bench-test")
	if err != nil {
		panic(err)
	}
	binDir = dir
	for cmd, pkg := range map[string]string{"echoserver": "./cmd/echoserver", "compare": "./cmd/compare",
		"echo": "github.com/iopool/iopool/examples/echo"} {
		build := exec.Command("go", "build", "-o", filepath.Join(dir, cmd), pkg)
		if out, err := build.CombinedOutput(); err != nil {
			os.RemoveAll(dir)
			panic(fmt.Sprintf("building %s: %v\n%s", cmd, err, out))
		}
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// TestCompareRunsEveryServer builds the servers and runs the driver once
// with a tiny load, pinned and unpinned: every server variant starts,
// echoes verified bytes (pipelined), reports CPU per request and idle
// memory, the net/http case answers, and every server is stopped.
func TestCompareRunsEveryServer(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs about fifty server processes")
	}
	dir := binDir
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out := filepath.Join(t.TempDir(), "out")
	// A section written by another tool, to be included verbatim.
	conns := "## A million connections\n\nwritten by bench/cmd/conns | kept as is\n"
	if err := os.MkdirAll(out, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(out, "conns.md"), []byte(conns), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.CommandContext(ctx, filepath.Join(dir, "compare"), "-server", filepath.Join(dir, "echoserver"),
		"-echo", filepath.Join(dir, "echo"), "-points", "3x64x2", "-duration", "150ms", "-reps", "1",
		"-http", "3", "-idle", "50", "-inproc", "1", "-inproc-requests", "200", "-out", out)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("compare: %v\nstdout:\n%s\nstderr:\n%s", err, stdout.String(), stderr.String())
	}
	t.Log(stdout.String())
	js, err := os.ReadFile(filepath.Join(out, "results.json"))
	if err != nil {
		t.Fatal(err)
	}
	var res struct {
		Points []struct {
			Impl      string  `json:"impl"`
			Pinned    bool    `json:"pinned"`
			Depth     int     `json:"depth"`
			CPUPerReq float64 `json:"server_cpu_us_per_req"`
			Verified  int64   `json:"verified_bytes"`
		} `json:"points"`
		HTTP []struct {
			Impl      string  `json:"impl"`
			ReqPerSec float64 `json:"req_per_sec"`
		} `json:"http"`
		Idle []struct {
			Impl string `json:"impl"`
		} `json:"idle"`
	}
	if err := json.Unmarshal(js, &res); err != nil {
		t.Fatal(err)
	}
	variants := []string{"iopool-poll/locked", "iopool-poll/unlocked", "iopool-task/locked", "iopool-task/unlocked",
		"echo/locked", "echo/unlocked", "rawepoll/locked", "rawepoll/unlocked", "gonet", "gnet"}
	for _, v := range variants {
		modes := map[bool]bool{}
		for _, p := range res.Points {
			if p.Impl == v && p.Depth == 2 && p.CPUPerReq > 0 && p.Verified > 0 {
				modes[p.Pinned] = true
			}
		}
		if !modes[true] || !modes[false] {
			t.Errorf("%s: measured pinned %v, unpinned %v; want both", v, modes[true], modes[false])
		}
		if !slices.ContainsFunc(res.Idle, func(id struct {
			Impl string `json:"impl"`
		}) bool {
			return id.Impl == v
		}) {
			t.Errorf("%s: no idle memory measured", v)
		}
	}
	if len(res.Points) != 2*len(variants) {
		t.Errorf("%d points, want %d", len(res.Points), 2*len(variants))
	}
	if len(res.HTTP) != 6 {
		t.Errorf("%d net/http results, want 3 servers × 2 modes", len(res.HTTP))
	}
	for _, h := range res.HTTP {
		if h.ReqPerSec <= 0 {
			t.Errorf("net/http %s served nothing", h.Impl)
		}
	}
	md, _ := os.ReadFile(filepath.Join(out, "benchmarks.md"))
	for _, want := range []string{"Locked ÷ unlocked", "÷ the floor", "Geometric means", "net/http", "3 × 64 B ×2 pipelined", "Load average", "CPU: "} {
		if !bytes.Contains(md, []byte(want)) {
			t.Errorf("benchmarks.md lacks %q", want)
		}
	}
	if !bytes.Contains(md, []byte(conns)) {
		t.Errorf("benchmarks.md does not include conns.md verbatim")
	}
	for _, impl := range []string{"gonet", "pool-unlocked", "pool-locked"} {
		if !bytes.Contains(md, []byte("| "+impl+" | ")) {
			t.Errorf("benchmarks.md lacks the in-process net/http row of %s", impl)
		}
	}
	if st, err := os.Stat(filepath.Join(out, "benchmarks.svg")); err != nil || st.Size() == 0 {
		t.Errorf("benchmarks.svg was not written: %v", err)
	}
	// -render rewrites benchmarks.md from results.json alone, taking in a
	// conns.md written after the run.
	later := "## A million connections\n\nadded after the run\n"
	if err := os.WriteFile(filepath.Join(out, "conns.md"), []byte(later), 0o644); err != nil {
		t.Fatal(err)
	}
	if msg, err := exec.Command(filepath.Join(dir, "compare"), "-render", "-out", out).CombinedOutput(); err != nil {
		t.Fatalf("compare -render: %v\n%s", err, msg)
	}
	md2, _ := os.ReadFile(filepath.Join(out, "benchmarks.md"))
	if !bytes.Contains(md2, []byte(later)) || !bytes.Contains(md2, []byte("3 × 64 B ×2 pipelined")) {
		t.Errorf("compare -render did not rewrite benchmarks.md from results.json with the new conns.md")
	}
	// No server outlives the driver.
	for _, bin := range []string{"echoserver", "echo"} {
		if out, _ := exec.Command("pgrep", "-f", filepath.Join(dir, bin)+" ").Output(); len(out) > 0 {
			t.Errorf("servers still running: %s", out)
		}
	}
}

func TestCompareRejectsBadFlags(t *testing.T) {
	for _, args := range [][]string{
		{"-impls", "nginx"},
		{"-impls", "gonet/locked"},
		{"-points", "0x64"},
		{"-points", "x"},
		{"-points", "4x64x0"},
		{"-pin", "sometimes"},
		{"-reps", "0"},
		{"extra"},
	} {
		cmd := exec.Command(filepath.Join(binDir, "compare"), args...)
		out, err := cmd.CombinedOutput()
		ee, ok := err.(*exec.ExitError)
		if !ok || ee.ExitCode() != 2 {
			t.Errorf("compare %v: exit %v, want 2\n%s", args, err, out)
		}
		if !strings.Contains(string(out), "Usage") {
			t.Errorf("compare %v printed no usage:\n%s", args, out)
		}
	}
	cmd := exec.Command(filepath.Join(binDir, "echoserver"), "-impl", "nope")
	if out, err := cmd.CombinedOutput(); err == nil || !strings.Contains(string(out), `unknown -impl "nope"`) {
		t.Errorf("echoserver -impl nope: %v\n%s", err, out)
	}
	// A taken port: every server fails clearly, naming the address.
	l, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	for _, impl := range []string{"iopool-poll", "iopool-task", "rawepoll", "gonet", "gnet", "http-gonet", "http-netconn"} {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		cmd := exec.CommandContext(ctx, filepath.Join(binDir, "echoserver"), "-impl", impl, "-listen", l.Addr().String())
		r, w, err := os.Pipe() // stdin stays open: the server would serve until its end
		if err != nil {
			t.Fatal(err)
		}
		cmd.Stdin = r
		out, err := cmd.CombinedOutput()
		r.Close()
		w.Close()
		cancel()
		if err == nil || !strings.Contains(string(out), "address already in use") {
			t.Errorf("%s on a taken port: %v\n%s", impl, err, out)
		}
	}
}
