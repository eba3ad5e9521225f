//go:build linux

package iopool

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"net"
	"runtime/pprof"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/iopool/iopool/internal/sys"
)

// syncBuffer is a bytes.Buffer safe for a logger used from the loop while
// the test reads it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// The logger hears the rare events, named with the pool; without one the
// pool is silent (nothing reaches slog's default logger).
func TestLoggerRecordsRareEvents(t *testing.T) {
	var buf syncBuffer
	logger := slog.New(slog.NewTextHandler(&buf, nil))
	runPool(t, func(tk *Task) error {
		_, err := tk.Driver().Uring()
		require.ErrorIs(t, err, ErrUringUnavailable)
		h := Spawn(tk.Driver(), "doomed", func(t *Task) (int, error) { panic("boom") })
		_, err = h.Join(tk)
		var pe *PanicError
		require.ErrorAs(t, err, &pe)
		return nil
	}, WithName("web"), WithLogger(logger), withFaults(failUringSetup(unix.EPERM)))
	out := buf.String()
	require.Contains(t, out, `level=WARN msg="iopool: io_uring unavailable" pool=web`)
	require.Contains(t, out, `level=ERROR msg="iopool: task panicked" pool=web task=doomed panic=boom`)

	var def syncBuffer
	old := slog.Default()
	slog.SetDefault(slog.New(slog.NewTextHandler(&def, nil)))
	defer slog.SetDefault(old)
	runPool(t, func(tk *Task) error {
		_, _ = Spawn(tk.Driver(), "doomed", func(t *Task) (int, error) { panic("boom") }).Join(tk)
		_, err := tk.Driver().Uring()
		require.Error(t, err)
		return nil
	}, withFaults(failUringSetup(unix.EPERM)))
	require.Empty(t, def.String(), "a pool without a logger is silent")
}

func TestOptionsRejectBadInput(t *testing.T) {
	_, err := New(WithName(""))
	require.ErrorContains(t, err, "WithName: empty name")
	_, err = New(WithLogger(nil))
	require.ErrorContains(t, err, "WithLogger: nil logger")
}

// Stats marshals to JSON with its field names, and back.
func TestStatsMarshalJSON(t *testing.T) {
	parallel(t)
	p := runPool(t, func(tk *Task) error { return tk.Sleep(0) }, WithName("json"))
	require.Equal(t, "json", p.Name())
	st := p.Stats()
	b, err := json.Marshal(st)
	require.NoError(t, err)
	require.True(t, strings.Contains(string(b), `"TasksSpawned":1`), string(b))
	var back Stats
	require.NoError(t, json.Unmarshal(b, &back))
	require.Equal(t, st, back)
}

// An accept loop that runs out of fds says so on the logger and keeps
// accepting once fds are back: in a task and through the net.Listener.
func TestLoggerRecordsAcceptBackoff(t *testing.T) {
	parallel(t)
	var buf syncBuffer
	logger := slog.New(slog.NewTextHandler(&buf, nil))
	fs := new(sys.Faults)
	p := newTestPool(t, WithName("acceptor"), WithLogger(logger), withFaults(fs))
	servePool(t, p)
	l, err := p.Driver().Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	nl := l.NetListener()
	defer nl.Close()

	var failed atomic.Int32
	fs.Set(func(c sys.Call) error {
		if c == sys.CallAccept && failed.Add(1) <= 2 {
			return unix.EMFILE
		}
		return nil
	})
	defer func() { fs.Set(nil) }()
	dialed := make(chan struct{})
	go func() {
		defer close(dialed)
		if c, err := net.Dial("tcp", l.Addr().String()); err == nil {
			_, _ = c.Read(make([]byte, 1)) // until the server closes
			c.Close()
		}
	}()
	c, err := nl.Accept()
	require.NoError(t, err, "accepting resumes once fds are back")
	require.NoError(t, c.Close())
	<-dialed
	out := buf.String()
	require.Equal(t, 2, strings.Count(out, `msg="iopool: accept backing off: out of file descriptors" pool=acceptor addr=127.0.0.1:`), out)
	require.Contains(t, out, "err=\"too many open files\" pause=10ms")
	require.Contains(t, out, "pause=20ms", "the pause doubles")
}

// The task's Context carries its pprof labels, so pprof.Do inside the
// task adds to them instead of replacing them.
func TestTaskContextCarriesLabels(t *testing.T) {
	runPool(t, func(tk *Task) error {
		var got []string
		pprof.Do(tk.Context(), pprof.Labels("phase", "parse"), func(ctx context.Context) {
			pprof.ForLabels(ctx, func(k, v string) bool {
				got = append(got, k+"="+v)
				return true
			})
		})
		require.ElementsMatch(t, []string{"pool=labeled", "task=root", "phase=parse"}, got)
		return nil
	}, WithName("labeled"))
}
