//go:build linux

package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestDemoPrintsTheExchange(t *testing.T) {
	var out bytes.Buffer
	require.NoError(t, run(context.Background(), nil, &out), out.String())
	require.Contains(t, out.String(), "POST /echo 11 bytes -> 200 OK, 11 bytes")
	require.Contains(t, out.String(), "POST /echo 100000 bytes -> 200 OK, 100000 bytes")
	require.Contains(t, out.String(), `GET /debug/vars -> "iopool": {"name":"http","stats":{"Cycles":`)
}

// 20 clients post 50 bodies each, of sizes from empty to 128 KiB, over
// keep-alive connections; every reply's body and headers are checked.
func TestConcurrentPostsEchoEveryBody(t *testing.T) {
	srv, err := startServer("127.0.0.1:0")
	require.NoError(t, err)
	defer func() { require.NoError(t, srv.shutdown()) }()
	base := "http://" + srv.addr.String()

	const clients, posts = 20, 50
	errs := make(chan error, clients)
	var wg sync.WaitGroup
	for c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- postMany(base, c, posts)
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}

	// The pool's Stats are published as JSON.
	resp, err := http.Get(base + "/debug/vars")
	require.NoError(t, err)
	defer resp.Body.Close()
	var vars struct {
		IOPool struct {
			Name  string
			Stats struct{ FdsRegistered, FdsGoPolled, TasksSpawned int64 }
		} `json:"iopool"`
	}
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&vars))
	require.Equal(t, "http", vars.IOPool.Name)
	require.GreaterOrEqual(t, vars.IOPool.Stats.FdsGoPolled, int64(2), "the listener and this connection, served through Go's poller")

	// And the task table with them, as text.
	resp, err = http.Get(base + "/debug/iopool")
	require.NoError(t, err)
	defer resp.Body.Close()
	page, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	require.Contains(t, string(page), `pool "http": 0 tasks`, "net/http's goroutines are no tasks")
	require.Contains(t, string(page), "stats: cycles=")
}

func postMany(base string, client, posts int) error {
	rng := rand.New(rand.NewPCG(uint64(client), 15))
	hc := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{}}
	defer hc.CloseIdleConnections()
	for i := range posts {
		var size int
		switch i % 5 {
		case 0:
			size = rng.IntN(16)
		case 1:
			size = rng.IntN(4 << 10)
		case 2:
			size = 4<<10 + rng.IntN(64<<10)
		case 3:
			size = rng.IntN(128 << 10)
		case 4:
			size = 1 << rng.IntN(17)
		}
		body := make([]byte, size)
		for j := range body {
			body[j] = byte(rng.Uint32())
		}
		resp, err := hc.Post(base+"/echo", "application/octet-stream", bytes.NewReader(body))
		if err != nil {
			return fmt.Errorf("client %d post %d (%d bytes): %w", client, i, size, err)
		}
		got, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			return fmt.Errorf("client %d post %d: reading the reply: %w", client, i, err)
		}
		sum := sha256.Sum256(body)
		switch {
		case resp.StatusCode != http.StatusOK:
			return fmt.Errorf("client %d post %d: status %s", client, i, resp.Status)
		case !bytes.Equal(got, body):
			return fmt.Errorf("client %d post %d: got %d bytes back, sent %d (or different bytes)", client, i, len(got), size)
		case resp.Header.Get("X-Body-Length") != strconv.Itoa(size):
			return fmt.Errorf("client %d post %d: X-Body-Length %q, want %d", client, i, resp.Header.Get("X-Body-Length"), size)
		case resp.Header.Get("X-Body-Sha256") != hex.EncodeToString(sum[:]):
			return fmt.Errorf("client %d post %d: X-Body-Sha256 differs", client, i)
		case resp.Header.Get("Content-Type") != "application/octet-stream":
			return fmt.Errorf("client %d post %d: Content-Type %q", client, i, resp.Header.Get("Content-Type"))
		case resp.ContentLength != int64(size) && resp.ContentLength != -1:
			return fmt.Errorf("client %d post %d: Content-Length %d, want %d", client, i, resp.ContentLength, size)
		}
	}
	return nil
}

func TestBadFlagsAndTakenAddress(t *testing.T) {
	var out bytes.Buffer
	err := run(context.Background(), []string{"-nope"}, &out)
	require.ErrorIs(t, err, flag.ErrHelp)
	require.Contains(t, out.String(), "flag provided but not defined: -nope")

	srv, err := startServer("127.0.0.1:0")
	require.NoError(t, err)
	defer srv.shutdown()
	_, err = startServer(srv.addr.String())
	require.ErrorContains(t, err, "address already in use")
}
