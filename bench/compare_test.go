package bench

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
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
	for _, cmd := range []string{"echoserver", "compare"} {
		build := exec.Command("go", "build", "-o", filepath.Join(dir, cmd), "./cmd/"+cmd)
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
// with a tiny load: every server starts, echoes verified bytes, reports CPU
// per request and idle memory, and is stopped.
func TestCompareRunsEveryServer(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs five server processes")
	}
	dir := binDir
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out := filepath.Join(t.TempDir(), "out")
	cmd := exec.CommandContext(ctx, filepath.Join(dir, "compare"), "-server", filepath.Join(dir, "echoserver"),
		"-conns", "4", "-sizes", "64,1024", "-duration", "300ms", "-reps", "1", "-idle", "200", "-out", out)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("compare: %v\nstdout:\n%s\nstderr:\n%s", err, stdout.String(), stderr.String())
	}
	t.Log(stdout.String())
	for _, impl := range []string{"iopool-poll", "iopool-task", "rawepoll", "gonet", "gnet"} {
		if n := strings.Count(stdout.String(), impl); n != 3 { // two load points and the idle line
			t.Errorf("%s appears %d times in the report, want 3", impl, n)
		}
	}
	for _, f := range []string{"results.json", "results.md", "benchmarks.svg"} {
		if st, err := os.Stat(filepath.Join(out, f)); err != nil || st.Size() == 0 {
			t.Errorf("%s was not written: %v", f, err)
		}
	}
	// No server outlives the driver.
	if out, _ := exec.Command("pgrep", "-f", filepath.Join(dir, "echoserver")).Output(); len(out) > 0 {
		t.Errorf("servers still running: %s", out)
	}
}

func TestCompareRejectsBadFlags(t *testing.T) {
	for _, args := range [][]string{
		{"-impls", "nginx"},
		{"-conns", "0"},
		{"-sizes", "x"},
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
	for _, impl := range []string{"iopool-poll", "iopool-task", "rawepoll", "gonet", "gnet"} {
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
