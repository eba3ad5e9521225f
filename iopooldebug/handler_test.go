//go:build linux

package iopooldebug_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/iopool/iopool"
	"github.com/iopool/iopool/iopooldebug"
)

func get(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return string(b)
}

func line(delta int) int {
	_, _, l, _ := runtime.Caller(1)
	return l + delta
}

// TestHandlerServesTasks: the page lists a pool's waiting tasks with what
// they wait on and their spawn sites, as text and as JSON.
func TestHandlerServesTasks(t *testing.T) {
	p, err := iopool.New(iopool.WithName("web"), iopool.WithTaskTracking())
	require.NoError(t, err)
	defer p.Close()
	require.NoError(t, p.Start())
	drv := p.Driver()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	require.NoError(t, err)
	defer unix.Close(fds[1])
	sock, err := drv.NewSocket(fds[0])
	require.NoError(t, err)
	defer sock.Close()
	ch := iopool.NewChan[int]()
	readerLine := line(1)
	iopool.Spawn(drv, "reader", func(t *iopool.Task) (int, error) { return sock.Read(t, make([]byte, 1)) })
	sleeperLine := line(1)
	iopool.Spawn(drv, "sleeper", func(t *iopool.Task) (int, error) { return 0, t.Sleep(time.Hour) })
	iopool.Spawn(drv, "receiver", func(t *iopool.Task) (int, error) { return ch.Recv(t) })
	defer ch.Close()

	srv := httptest.NewServer(iopooldebug.Handler(p))
	defer srv.Close()

	wantReader := fmt.Sprintf(`task "reader" [waiting: read fd %d] age `, fds[0])
	var page string
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		if page = get(t, srv.URL); strings.Contains(page, wantReader) && strings.Contains(page, `task "receiver" [waiting: Chan.Recv] age `) &&
			strings.Contains(page, `task "sleeper" [waiting: timer in `) {
			break
		}
	}
	t.Logf("the page:\n%s", page)
	require.Contains(t, page, `pool "web": 3 tasks`)
	require.Contains(t, page, "stats: cycles=")
	require.Contains(t, page, wantReader)
	require.Contains(t, page, fmt.Sprintf("spawned at %s:%d\n", thisFile(), readerLine))
	require.Contains(t, page, fmt.Sprintf("spawned at %s:%d\n", thisFile(), sleeperLine))

	var doc struct {
		Pools []iopooldebug.Pool `json:"pools"`
	}
	require.NoError(t, json.Unmarshal([]byte(get(t, srv.URL+"?format=json")), &doc))
	require.Len(t, doc.Pools, 1)
	require.Equal(t, "web", doc.Pools[0].Name)
	require.EqualValues(t, 3, doc.Pools[0].Stats.TasksLive)
	byName := map[string]iopooldebug.Task{}
	for _, tk := range doc.Pools[0].Tasks {
		byName[tk.Name] = tk
	}
	require.Equal(t, "waiting", byName["reader"].State)
	require.Equal(t, fmt.Sprintf("read fd %d", fds[0]), byName["reader"].WaitingOn)
	require.Equal(t, "Chan.Recv", byName["receiver"].WaitingOn)
	require.Equal(t, fmt.Sprintf("%s:%d", thisFile(), sleeperLine), byName["sleeper"].SpawnedAt)
	require.Positive(t, byName["sleeper"].AgeNanos)
}

func thisFile() string {
	_, file, _, _ := runtime.Caller(0)
	return file
}
