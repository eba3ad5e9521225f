//go:build linux

// Command httpserver serves net/http from an iopool pool: the pool runs its
// own loop (Pool.Start), its listener is handed to http.Server as a
// net.Listener (Listener.NetListener),
// and every connection it accepts is a *iopool.NetConn whose waits park on
// the pool's epoll loop instead of Go's netpoller. The handlers run on
// net/http's goroutines as usual. With no flags it serves 127.0.0.1 on a
// free port, talks to it with a few requests and prints them:
//
//	go run ./examples/httpserver
//	go run ./examples/httpserver -listen 127.0.0.1:8080   # serve until Ctrl-C or SIGTERM
//
// and then, for the second form:
//
//	curl -d 'hello' 127.0.0.1:8080/echo
//	curl 127.0.0.1:8080/debug/vars     # the pool's Stats, published with expvar
//	curl 127.0.0.1:8080/debug/iopool   # its tasks and Stats (iopooldebug; ?format=json)
//
// POST /echo answers with the request body, with the headers X-Body-Length
// and X-Body-Sha256 computed from what the server read.
package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"expvar"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/iopool/iopool"
	"github.com/iopool/iopool/iopooldebug"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(2)
		}
		fmt.Fprintln(os.Stderr, "httpserver:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, out io.Writer) error {
	fs := flag.NewFlagSet("httpserver", flag.ContinueOnError)
	fs.SetOutput(out)
	listen := fs.String("listen", "", "serve only, on this address (e.g. 127.0.0.1:8080), until interrupted")
	if err := fs.Parse(args); err != nil {
		return flag.ErrHelp // the flag package printed the problem and the usage
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(out, "httpserver: unexpected arguments %q\n", fs.Args())
		fs.Usage()
		return flag.ErrHelp
	}
	addr := *listen
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	srv, err := startServer(addr)
	if err != nil {
		return err
	}
	defer srv.shutdown()
	fmt.Fprintf(out, "serving HTTP on %s\n", srv.addr)
	if *listen != "" {
		<-ctx.Done()
		return srv.shutdown()
	}
	if err := demo("http://"+srv.addr.String(), out); err != nil {
		return err
	}
	return srv.shutdown()
}

// server is a started pool and an http.Server accepting through the
// pool's listener.
type server struct {
	pool     *iopool.Pool
	addr     net.Addr
	http     *http.Server
	served   chan error
	shutOnce sync.Once
	shutErr  error
}

// current is the pool that /debug/vars reports (expvar names are global to
// the process, so the variable is published once and follows the newest
// server).
var (
	current     atomic.Pointer[iopool.Pool]
	publishOnce sync.Once
)

func publishStats() {
	publishOnce.Do(func() {
		expvar.Publish("iopool", expvar.Func(func() any {
			if p := current.Load(); p != nil {
				return map[string]any{"name": p.Name(), "stats": p.Stats()}
			}
			return nil
		}))
	})
}

// startServer listens on addr and starts serving. A taken address fails
// here.
func startServer(addr string) (*server, error) {
	p, err := iopool.New(iopool.WithName("http"))
	if err != nil {
		return nil, err
	}
	// The pool runs its own loop until Close: net/http's goroutines park on
	// it, and no root task is needed.
	if err := p.Start(); err != nil {
		p.Close()
		return nil, err
	}
	l, err := p.Driver().Listen("tcp", addr)
	if err != nil {
		p.Close()
		return nil, err
	}
	s := &server{pool: p, served: make(chan error, 1)}
	s.addr = l.Addr()
	current.Store(p)
	publishStats()

	mux := http.NewServeMux()
	mux.HandleFunc("POST /echo", echo)
	mux.Handle("GET /debug/vars", expvar.Handler())
	mux.Handle("GET /debug/iopool", iopooldebug.Handler(p))
	s.http = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() { s.served <- s.http.Serve(l.NetListener()) }()
	return s, nil
}

// echo answers with the request's body and headers describing it.
func echo(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	sum := sha256.Sum256(body)
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("X-Body-Length", strconv.Itoa(len(body)))
	w.Header().Set("X-Body-Sha256", hex.EncodeToString(sum[:]))
	w.Write(body)
}

// shutdown stops the HTTP server (closing the listener and idle
// connections), then the pool. Idempotent.
func (s *server) shutdown() error {
	s.shutOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		err := s.http.Shutdown(ctx)
		if serr := <-s.served; !errors.Is(serr, http.ErrServerClosed) && err == nil {
			err = serr
		}
		current.CompareAndSwap(s.pool, nil)
		if cerr := s.pool.Close(); err == nil {
			err = cerr
		}
		s.shutErr = err
	})
	return s.shutErr
}

// demo posts a few bodies and reads the stats, printing what it got.
func demo(base string, out io.Writer) error {
	client := &http.Client{Timeout: 10 * time.Second}
	defer client.CloseIdleConnections()
	for _, body := range []string{"hello, pool", strings.Repeat("x", 100_000)} {
		resp, err := client.Post(base+"/echo", "text/plain", strings.NewReader(body))
		if err != nil {
			return err
		}
		got, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			return err
		}
		if string(got) != body {
			return fmt.Errorf("POST /echo: got %d bytes back, sent %d", len(got), len(body))
		}
		fmt.Fprintf(out, "POST /echo %d bytes -> %s, %s bytes, sha256 %.16s...\n",
			len(body), resp.Status, resp.Header.Get("X-Body-Length"), resp.Header.Get("X-Body-Sha256"))
	}
	resp, err := client.Get(base + "/debug/vars")
	if err != nil {
		return err
	}
	vars, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return err
	}
	if i := strings.Index(string(vars), `"iopool"`); i >= 0 {
		line, _, _ := strings.Cut(string(vars[i:]), "\n")
		fmt.Fprintf(out, "GET /debug/vars -> %s\n", line)
	}
	return nil
}
