//go:build linux

package bench

import (
	"bytes"
	"context"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestConnsHoldsConnectionsOnEveryServer runs cmd/conns with 200
// connections for every server: each must accept them all, echo every
// byte back at the start and at the end, answer the pings, and the tool
// must end with its report line.
func TestConnsHoldsConnectionsOnEveryServer(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "conns")
	if out, err := exec.Command("go", "build", "-o", bin, "./cmd/conns").CombinedOutput(); err != nil {
		t.Fatalf("building cmd/conns: %v\n%s", err, out)
	}
	for _, impl := range []string{"iopool-lean", "iopool-task", "iopool-poll", "go-net", "gnet"} {
		t.Run(impl, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			cmd := exec.CommandContext(ctx, bin, "-impl", impl, "-n", "200", "-hold", "300ms", "-timeout", "20s")
			var stdout, stderr bytes.Buffer
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			if err := cmd.Run(); err != nil {
				t.Fatalf("conns -impl %s: %v\nstdout:\n%s\nstderr:\n%s", impl, err, stdout.String(), stderr.String())
			}
			lines := strings.Split(strings.TrimSpace(stdout.String()), "\n")
			last := lines[len(lines)-1]
			t.Log(last)
			want := regexp.MustCompile(`^conns=200 impl=` + regexp.QuoteMeta(impl) +
				` user_bytes_per_conn=-?\d+ rss_bytes_per_conn=-?\d+ rtt_p99_us=\d+ errors=(\d+)$`)
			m := want.FindStringSubmatch(last)
			if m == nil {
				t.Fatalf("last line %q does not match %s\nstdout:\n%s", last, want, stdout.String())
			}
			if m[1] != "0" {
				t.Fatalf("errors=%s\nstdout:\n%s\nstderr:\n%s", m[1], stdout.String(), stderr.String())
			}
			if impl == "iopool-task" {
				requireSmallestStacks(t, stdout.String())
			}
		})
	}
}

// requireSmallestStacks fails unless the iopool-task server's idle
// connections kept the goroutine's smallest stack (2 KiB) after their
// echo: a stack that grew to 4 KiB in the echo's deepest call stays so
// while the task waits (see the root package's
// TestRegressionTaskEchoFitsTheSmallestStack), which once made each idle
// connection cost 5,452 bytes instead of 3,400.
func requireSmallestStacks(t *testing.T, stdout string) {
	t.Helper()
	m := regexp.MustCompile(`(?m)^server: .*stacks_per_conn=(-?\d+)`).FindStringSubmatch(stdout)
	if m == nil {
		t.Fatalf("no server line with stacks_per_conn\nstdout:\n%s", stdout)
	}
	stacks, err := strconv.Atoi(m[1])
	if err != nil {
		t.Fatal(err)
	}
	// 2,048 bytes a connection, and a little for the pool's own goroutines
	// spread over 200 connections; a 4 KiB stack per connection is 4,096.
	if stacks < 1024 || stacks > 3072 {
		t.Fatalf("iopool-task: stacks_per_conn=%d, want about 2,048 (each idle task on the smallest stack)\nstdout:\n%s", stacks, stdout)
	}
}
