//go:build linux

package iopool

import (
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

func TestWaitProcess(t *testing.T) {
	runPool(t, func(tk *Task) error {
		var ticks atomic.Int32
		ticker := Spawn(tk.Driver(), "ticker", func(t *Task) (int, error) {
			for !t.Canceled() {
				if err := t.Sleep(time.Millisecond); err != nil {
					return 0, nil
				}
				ticks.Add(1)
			}
			return 0, nil
		})
		for _, tc := range []struct {
			args []string
			code int
		}{{[]string{"true"}, 0}, {[]string{"sh", "-c", "exit 3"}, 3}, {[]string{"sleep", "0.05"}, 0}} {
			cmd := exec.Command(tc.args[0], tc.args[1:]...)
			require.NoError(t, cmd.Start())
			st, err := WaitProcess(tk, cmd.Process)
			require.NoError(t, err, "%v", tc.args)
			require.Equal(t, tc.code, st.ExitCode(), "%v", tc.args)
		}
		require.Greater(t, ticks.Load(), int32(10), "the pool kept running while waiting")
		ticker.Cancel()
		_, err := ticker.Join(tk)
		return err
	})
}

// Regression: WaitProcess on a process already reaped opened a pidfd for
// whatever process had that pid now, and waited for that stranger. It
// returns os.ErrProcessDone at once instead.
func TestRegressionWaitProcessOnReapedProcess(t *testing.T) {
	runPool(t, func(tk *Task) error {
		cmd := exec.Command("true")
		require.NoError(t, cmd.Start())
		require.NoError(t, cmd.Wait())
		_, err := WaitProcess(tk, cmd.Process)
		require.ErrorIs(t, err, os.ErrProcessDone)
		require.ErrorContains(t, err, fmt.Sprintf("pid %d", cmd.Process.Pid))
		return nil
	})
}

// The same with the pid recycled: a stranger that sleeps is made to take
// the reaped child's pid (through /proc/sys/kernel/ns_last_pid, root only),
// and WaitProcess must not wait for it.
func TestRegressionWaitProcessIgnoresStrangerWithReusedPid(t *testing.T) {
	const lastPid = "/proc/sys/kernel/ns_last_pid"
	if unix.Access(lastPid, unix.W_OK) != nil {
		t.Skip("choosing the next pid needs write access to " + lastPid + " (root in the pid namespace)")
	}
	runPool(t, func(tk *Task) error {
		for range 20 {
			child := exec.Command("true")
			require.NoError(t, child.Start())
			require.NoError(t, child.Wait())
			pid := child.Process.Pid
			// Other processes of the machine may take the pid first: try again.
			if err := os.WriteFile(lastPid, []byte(strconv.Itoa(pid-1)), 0); err != nil {
				t.Skipf("writing %s: %v", lastPid, err)
			}
			stranger := exec.Command("sleep", "30")
			require.NoError(t, stranger.Start())
			if stranger.Process.Pid != pid {
				require.NoError(t, stranger.Process.Kill())
				_ = stranger.Wait()
				continue
			}
			start := time.Now()
			_, err := WaitProcess(tk, child.Process)
			elapsed := time.Since(start)
			require.NoError(t, stranger.Process.Kill())
			_ = stranger.Wait()
			require.ErrorIs(t, err, os.ErrProcessDone)
			require.Less(t, elapsed, 5*time.Second, "waited for the stranger")
			return nil
		}
		t.Skip("another process took the recycled pid 20 times in a row")
		return nil
	})
}
