//go:build linux

package main

import (
	"bufio"
	"bytes"
	"context"
	"flag"
	"io"
	"net"
	"os"
	"os/exec"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestMain lets the test binary be the example's load generator, which
// run starts as a child process (os.Executable).
// With mainArgsEnv set, it is the example's own main with those arguments
// (signals and exit status included).
func TestMain(m *testing.M) {
	if spec := os.Getenv(loadgenEnv); spec != "" {
		os.Exit(loadgenMain(spec, os.Stdout, os.Stderr))
	}
	if args, ok := os.LookupEnv(mainArgsEnv); ok {
		os.Args = append(os.Args[:1], strings.Fields(args)...)
		main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// mainArgsEnv makes the test binary run main with the variable's
// space-separated arguments.
const mainArgsEnv = "IOPOOL_ECHO_TEST_MAIN_ARGS"

// SIGTERM (kill, systemd, a container runtime) stops a -listen server as
// Ctrl-C does: it says so and exits 0. Before, it died of the signal (the
// shell's 143) and printed nothing.
func TestListenExitsZeroOnSIGTERM(t *testing.T) {
	for _, args := range []string{"-listen 127.0.0.1:0", "-listen 127.0.0.1:0 -pools 2"} {
		t.Run(args, func(t *testing.T) {
			cmd := exec.Command(os.Args[0])
			cmd.Env = append(os.Environ(), mainArgsEnv+"="+args)
			cmd.Stderr = os.Stderr // the child's errors, in the test's output
			stdout, err := cmd.StdoutPipe()
			require.NoError(t, err)
			require.NoError(t, cmd.Start())
			exited := make(chan error, 1)
			rest := make(chan string, 1)
			lines := bufio.NewReader(stdout)
			first, err := lines.ReadString('\n')
			if err != nil {
				_ = cmd.Process.Kill()
				_ = cmd.Wait()
			}
			require.NoError(t, err)
			m := regexp.MustCompile(`^echo server on (127\.0\.0\.1:\d+)`).FindStringSubmatch(first)
			require.NotNil(t, m, first)
			go func() {
				b, _ := io.ReadAll(lines)
				rest <- string(b)
				exited <- cmd.Wait()
			}()

			// It serves; then SIGTERM.
			c, err := net.DialTimeout("tcp", m[1], 5*time.Second)
			require.NoError(t, err)
			require.NoError(t, c.SetDeadline(time.Now().Add(5*time.Second)))
			_, err = c.Write([]byte("ping"))
			require.NoError(t, err)
			_, err = io.ReadFull(c, make([]byte, 4))
			require.NoError(t, err)
			require.NoError(t, cmd.Process.Signal(syscall.SIGTERM))

			select {
			case err := <-exited:
				require.NoError(t, err, "exit status after SIGTERM")
			case <-time.After(10 * time.Second):
				_ = cmd.Process.Kill()
				t.Fatal("the server did not exit within 10s of SIGTERM")
			}
			c.Close()
			out := <-rest
			require.Regexp(t, `echo server on 127\.0\.0\.1:\d+ stopped: terminated signal received`, out)
		})
	}
}

func TestEchoRunsAndVerifies(t *testing.T) {
	var out bytes.Buffer
	err := run(context.Background(), []string{"-duration", "300ms", "-conns", "4", "-size", "100", "-progress=false"}, &out)
	require.NoError(t, err, out.String())
	require.Contains(t, out.String(), "requests/s")
	require.Contains(t, out.String(), "µs/request")
	require.NotContains(t, out.String(), "requests                     0 ")
	require.Contains(t, out.String(), "(the whole server process)")
	require.Contains(t, out.String(), "readiness edges epoll delivered", "the counters are explained")
}

// -lock=false serves from an unlocked loop; the load generator being
// another process, the server's CPU is still measured.
func TestEchoUnlocked(t *testing.T) {
	var out bytes.Buffer
	err := run(context.Background(), []string{"-duration", "200ms", "-conns", "3", "-lock=false", "-progress=false"}, &out)
	require.NoError(t, err, out.String())
	require.Contains(t, out.String(), "its loop not locked to a thread")
	require.Regexp(t, `server CPU +[0-9.]+ µs/request`, out.String())
}

func TestEchoThreadPerCore(t *testing.T) {
	var out bytes.Buffer
	err := run(context.Background(), []string{"-duration", "200ms", "-conns", "8", "-pools", "2", "-progress=false"}, &out)
	require.NoError(t, err, out.String())
	require.Contains(t, out.String(), "pool 1 stats")
	requirePoolTable(t, out.String(), 2)
}

// The README's thread-per-core demo steers: the load generator dials from
// each pool's CPU in turn, every connection is served by the pool of the
// CPU that dialed it, so each pool serves half of them. Before, it dialed
// from one CPU and one pool served them all.
func TestEchoGroupPinnedAndSteered(t *testing.T) {
	if runtime.NumCPU() < 2 {
		t.Skip("steering over two pinned pools needs two CPUs")
	}
	if b, err := os.ReadFile("/sys/class/net/lo/queues/rx-0/rps_cpus"); err == nil && strings.Trim(strings.TrimSpace(string(b)), "0,") != "" {
		t.Skipf("RPS on lo (rps_cpus %s) moves packets to other CPUs: the receiving CPU is not the dialing one", strings.TrimSpace(string(b)))
	}
	var out bytes.Buffer
	err := run(context.Background(), []string{"-duration", "200ms", "-conns", "8", "-pools", "2", "-pin", "-steer", "-progress=false"}, &out)
	require.NoError(t, err, out.String())
	require.Contains(t, out.String(), "steered to the receiving CPU")
	perPool := requirePoolTable(t, out.String(), 2)
	for pool, n := range perPool {
		require.GreaterOrEqual(t, 3*n, 8, "pool %d served %d of 8 connections, less than a third:\n%s", pool, n, out.String())
	}

	// The placement table: every connection went to its dialing CPU's pool.
	rows := regexp.MustCompile(`(?m)^dialed on CPU \d+ \(pool (\d+)\) +(\d+) +(\d+)$`).FindAllStringSubmatch(out.String(), -1)
	require.Len(t, rows, 2, "a placement row per pool's CPU in:\n%s", out.String())
	for _, row := range rows {
		from, _ := strconv.Atoi(row[1])
		for to := range 2 {
			n, _ := strconv.Atoi(row[2+to])
			if to == from {
				require.Equal(t, 4, n, "connections dialed on pool %d's CPU served by it:\n%s", from, out.String())
			} else {
				require.Zero(t, n, "connections dialed on pool %d's CPU served by pool %d:\n%s", from, to, out.String())
			}
		}
	}
	require.Contains(t, out.String(), "8 of 8 connections served by the pool on the CPU that dialed them: steered")
}

// requirePoolTable checks the per-pool table: a row per pool, and the
// connections of the rows add up to the load's. It returns each pool's
// connections.
func requirePoolTable(t *testing.T, out string, pools int) []int {
	t.Helper()
	_, table, ok := strings.Cut(out, "pool  cpu  conns")
	require.True(t, ok, "no per-pool table in:\n%s", out)
	table, _, _ = strings.Cut(table, "\n\n") // what follows the table
	lines := strings.Split(strings.TrimSpace(table), "\n")
	require.Len(t, lines, 1+pools+1, table) // header rest, pools, "all"
	conns := 0
	var perPool []int
	for _, line := range lines[1 : 1+pools] {
		f := strings.Fields(line)
		n, err := strconv.Atoi(f[2])
		require.NoError(t, err, line)
		conns += n
		perPool = append(perPool, n)
	}
	all := strings.Fields(lines[1+pools])
	require.Equal(t, "all", all[0])
	require.Equal(t, strconv.Itoa(conns), all[1], "the all row sums the pools' connections")
	require.Equal(t, 8, conns, "every load connection was accepted by one pool")
	return perPool
}

func TestEchoRejectsBadFlags(t *testing.T) {
	for _, args := range [][]string{{"-conns", "0"}, {"-size", "-3"}, {"-duration", "0s"}, {"-steer"}, {"-lock=false", "-pools", "2"}, {"extra"}, {"-nope"}, {"-conns", "x"}} {
		var out bytes.Buffer
		err := run(context.Background(), args, &out)
		// main exits 2 on flag.ErrHelp without printing anything more.
		require.ErrorIs(t, err, flag.ErrHelp, "%v", args)
		require.Contains(t, out.String(), "Usage", "%v", args)
	}
	var out bytes.Buffer
	_ = run(context.Background(), []string{"-nope"}, &out)
	require.Equal(t, 1, strings.Count(out.String(), "flag provided but not defined: -nope"), "the error is printed once:\n%s", out.String())
}

// Serving on an IPv6 address works (a client echoes through it), and the
// progress line stays off when the output is not a terminal.
func TestEchoListensOnIPv6(t *testing.T) {
	if l, err := net.Listen("tcp6", "[::1]:0"); err != nil {
		t.Skip("no IPv6 loopback on this machine:", err)
	} else {
		l.Close()
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() { done <- run(ctx, []string{"-listen", "[::1]:0"}, pw); pw.Close() }()
	lines := bufio.NewReader(pr)
	line, err := lines.ReadString('\n')
	require.NoError(t, err)
	rest := make(chan string, 1)
	go func() { b, _ := io.ReadAll(lines); rest <- string(b) }()
	m := regexp.MustCompile(`^echo server on (\[::1\]:\d+): 1 pool`).FindStringSubmatch(line)
	require.NotNil(t, m, line)
	c, err := net.DialTimeout("tcp", m[1], 5*time.Second)
	require.NoError(t, err)
	require.NoError(t, c.SetDeadline(time.Now().Add(5*time.Second)))
	_, err = c.Write([]byte("over IPv6"))
	require.NoError(t, err)
	buf := make([]byte, 9)
	_, err = io.ReadFull(c, buf)
	require.NoError(t, err)
	require.Equal(t, "over IPv6", string(buf))
	c.Close()
	cancel()
	require.NoError(t, <-done)
	require.Regexp(t, `^echo server on \[::1\]:\d+ stopped: context canceled\n$`, <-rest, "the server says it stopped")

	var out bytes.Buffer
	require.NoError(t, run(context.Background(), []string{"-duration", "100ms", "-conns", "2"}, &out), out.String())
	require.NotContains(t, out.String(), "\r", "no progress line when the output is not a terminal")
}

func TestEchoPortTaken(t *testing.T) {
	l, err := net.Listen("tcp4", "127.0.0.1:0")
	require.NoError(t, err)
	defer l.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	err = run(ctx, []string{"-listen", l.Addr().String()}, &bytes.Buffer{})
	require.ErrorContains(t, err, l.Addr().String())
	require.ErrorContains(t, err, "address already in use")
}

func TestHistogramQuantiles(t *testing.T) {
	var h histogram
	for i := 1; i <= 1000; i++ {
		h[bucketOf(int64(i)*1000)]++
	}
	p50 := h.quantile(0.5)
	require.InDelta(t, 500e3, float64(p50), 500e3*0.13)
	require.InDelta(t, 990e3, float64(h.quantile(0.99)), 990e3*0.13)
}
