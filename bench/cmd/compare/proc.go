//go:build linux

package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// server is a running server process.
type server struct {
	cmd   *exec.Cmd
	stdin io.Closer
	addr  string
	impl  string
}

// command returns the command line that serves impl on addr.
func command(cfg Config, impl, addr string) []string {
	base, mode, _ := strings.Cut(impl, "/")
	lock := "-lock=" + strconv.FormatBool(mode != "unlocked")
	if base == "echo" {
		return []string{cfg.Echo, "-listen", addr, lock}
	}
	return []string{cfg.Server, "-impl", base, "-listen", addr, lock}
}

// startServer starts impl as a fresh process, on the last CPU when pinned,
// and waits until it serves.
func startServer(ctx context.Context, cfg Config, impl string, pinned bool) (*server, error) {
	addr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	args := command(cfg, impl, addr)
	if pinned {
		self, err := os.Executable()
		if err != nil {
			return nil, err
		}
		args = append([]string{self, execOnCPU, strconv.Itoa(serverCPUs())}, args...)
	}
	cmd := exec.CommandContext(ctx, args[0], args[1:]...)
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
		// Servers may log before they are ready (gnet does); examples/echo
		// announces itself with "echo server on ADDR".
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if line := strings.TrimSpace(sc.Text()); line == "ready" || strings.HasPrefix(line, "echo server on") {
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

// stop ends the server: stdin closed (cmd/echoserver exits), then SIGINT
// (examples/echo), then killed if it lingers.
func (s *server) stop() {
	s.stdin.Close()
	done := make(chan struct{})
	go func() { _ = s.cmd.Wait(); close(done) }()
	_ = s.cmd.Process.Signal(os.Interrupt)
	select {
	case <-done:
	case <-time.After(3 * time.Second):
		_ = s.cmd.Process.Kill()
		<-done
	}
}

// execPinned is compare -exec-on-cpu N BIN ARGS...: it pins its thread to
// CPU N and replaces itself with BIN, whose every thread then starts on
// CPU N (a process's threads inherit the affinity of the thread that
// created them, and execve keeps the caller's).
func execPinned(cpu string, argv []string) {
	n, err := strconv.Atoi(cpu)
	if err == nil {
		runtime.LockOSThread()
		var set unix.CPUSet
		set.Set(n)
		err = unix.SchedSetaffinity(0, &set)
	}
	if err == nil {
		err = syscall.Exec(argv[0], argv, os.Environ())
	}
	fmt.Fprintf(os.Stderr, "compare %s %s %s: %v\n", execOnCPU, cpu, argv[0], err)
	os.Exit(1)
}

// pinClient moves every thread of this process (the load client) to CPU 0,
// or back to every CPU. Threads created later inherit the mask of their
// creator, so the pass over /proc/self/task is repeated until it finds no
// thread it has not set.
func pinClient(pinned bool) error {
	var set unix.CPUSet
	if pinned {
		set.Set(0)
	} else {
		for i := range runtime.NumCPU() {
			set.Set(i)
		}
	}
	done := map[int]bool{}
	for {
		tasks, err := os.ReadDir("/proc/self/task")
		if err != nil {
			return err
		}
		changed := false
		for _, t := range tasks {
			tid, err := strconv.Atoi(t.Name())
			if err != nil || done[tid] {
				continue
			}
			if err := unix.SchedSetaffinity(tid, &set); err != nil && err != unix.ESRCH {
				return fmt.Errorf("pinning the client's thread %d: %w", tid, err)
			}
			done[tid], changed = true, true
		}
		if !changed {
			return nil
		}
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
