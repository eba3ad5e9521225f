//go:build linux

package iopool

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// httpBenchClients is the number of keep-alive connections of
// BenchmarkNetHTTP, each driven by a goroutine of its own.
const httpBenchClients = 50

// BenchmarkNetHTTP: GETs of a small page from httpBenchClients keep-alive
// clients, in this process, served by net/http over Go's net listener
// (gonet) and over a started pool's NetListener, unlocked and locked. One
// op is one request; req/s is reported too. Sub-benchmarks run one after
// the other, so to interleave them run the benchmark several times with
// -count=1 (see docs/benchmarks.md), e.g. -benchtime=20000x.
func BenchmarkNetHTTP(b *testing.B) {
	for _, server := range []string{"gonet", "pool-unlocked", "pool-locked"} {
		b.Run(server, func(b *testing.B) {
			b.ReportAllocs()
			addr := startBenchHTTPServer(b, server)
			tr := &http.Transport{MaxIdleConnsPerHost: httpBenchClients, MaxConnsPerHost: httpBenchClients, DisableCompression: true}
			defer tr.CloseIdleConnections()
			client := &http.Client{Transport: tr, Timeout: 10 * time.Second}
			url := "http://" + addr + "/"
			get := func() error {
				resp, err := client.Get(url)
				if err != nil {
					return err
				}
				_, err = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if err == nil && resp.StatusCode != http.StatusOK {
					err = fmt.Errorf("GET %s: %s", url, resp.Status)
				}
				return err
			}
			// Open every connection before the clock starts.
			run := func(total int64) error {
				var next atomic.Int64
				errs := make(chan error, httpBenchClients)
				var wg sync.WaitGroup
				for range httpBenchClients {
					wg.Add(1)
					go func() {
						defer wg.Done()
						for next.Add(1) <= total {
							if err := get(); err != nil {
								errs <- err
								return
							}
						}
					}()
				}
				wg.Wait()
				close(errs)
				return <-errs
			}
			require.NoError(b, run(2*httpBenchClients))
			b.ResetTimer()
			cpu0 := processCPU()
			start := time.Now()
			err := run(int64(b.N))
			elapsed := time.Since(start)
			cpu := processCPU() - cpu0
			b.StopTimer()
			require.NoError(b, err)
			b.ReportMetric(float64(b.N)/elapsed.Seconds(), "req/s")
			// On a shared machine requests/s follows the CPU the process
			// gets; the CPU (client and server) per request does not.
			b.ReportMetric(float64(cpu)/1e3/float64(b.N), "cpu-µs/req")
		})
	}
}

// startBenchHTTPServer serves a small page with net/http on 127.0.0.1 over
// Go net or a started pool, until the benchmark ends, and returns its
// address.
func startBenchHTTPServer(b *testing.B, server string) string {
	page := []byte("hello from the benchmark's server\n")
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		_, _ = w.Write(page)
	}), ReadHeaderTimeout: 10 * time.Second}
	var l net.Listener
	switch server {
	case "gonet":
		gl, err := net.Listen("tcp", "127.0.0.1:0")
		require.NoError(b, err)
		l = gl
	default:
		var opts []Option
		if server == "pool-locked" {
			opts = append(opts, WithLockOSThread())
		}
		p, err := New(opts...)
		require.NoError(b, err)
		b.Cleanup(func() { require.NoError(b, p.Close()) })
		require.NoError(b, p.Start())
		pl, err := p.Driver().Listen("tcp", "127.0.0.1:0")
		require.NoError(b, err)
		l = pl.NetListener()
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(l) }()
	b.Cleanup(func() {
		require.NoError(b, srv.Close())
		require.ErrorIs(b, <-served, http.ErrServerClosed)
	})
	return l.Addr().String()
}
