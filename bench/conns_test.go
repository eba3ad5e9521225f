//go:build linux

package bench

import (
	"bytes"
	"context"
	"os/exec"
	"path/filepath"
	"regexp"
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
		})
	}
}
