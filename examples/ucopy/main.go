//go:build linux

// Command ucopy copies a file with io_uring on an iopool pool:
//
//	go run ./examples/ucopy SRC DST
//	go run ./examples/ucopy -bs 1048576 -depth 16 SRC DST
//
// Every system call of the copy goes through the pool's ring: statx and
// openat, then rounds of -depth reads of -bs bytes queued as one Batch and
// waited for with one suspension of the task, the same for the writes, then
// fsync and close. It copies to the end of SRC, whatever size statx reported
// (files in /proc and /sys, files that grow). It prints the size, the time,
// the throughput and how many operations each io_uring_enter carried. DST is
// created (mode 0644) or truncated; it may also be a pipe or a device such
// as /dev/null, written in order and not synced. If DST is SRC (the same
// path, a symlink or a hard link to it), ucopy refuses without touching it
// and exits 1, as cp does. If the kernel refuses io_uring, ucopy says so and
// exits 1.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/signal"
	"time"

	"golang.org/x/sys/unix"

	"github.com/iopool/iopool"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(2)
		}
		fmt.Fprintln(os.Stderr, "ucopy:", err)
		os.Exit(1)
	}
}

type config struct {
	src, dst  string
	bs, depth int
}

func parseArgs(args []string, out io.Writer) (config, error) {
	var c config
	fs := flag.NewFlagSet("ucopy", flag.ContinueOnError)
	fs.SetOutput(out)
	fs.Usage = func() {
		fmt.Fprintln(out, "Usage: ucopy [-bs BYTES] [-depth N] SRC DST")
		fs.PrintDefaults()
	}
	fs.IntVar(&c.bs, "bs", 128<<10, "bytes per read and write")
	fs.IntVar(&c.depth, "depth", 8, "reads (and then writes) in flight at once")
	if err := fs.Parse(args); err != nil {
		return c, flag.ErrHelp // the flag package printed the problem and the usage
	}
	var bad string
	switch {
	case c.bs < 512 || c.bs > 64<<20:
		bad = fmt.Sprintf("-bs %d (want 512..67108864)", c.bs)
	case c.depth < 1 || c.depth > 1024:
		bad = fmt.Sprintf("-depth %d (want 1..1024)", c.depth)
	case fs.NArg() != 2:
		bad = fmt.Sprintf("want SRC and DST, got %d arguments", fs.NArg())
	}
	if bad != "" {
		fmt.Fprintf(out, "ucopy: %s\n", bad)
		fs.Usage()
		return c, flag.ErrHelp
	}
	c.src, c.dst = fs.Arg(0), fs.Arg(1)
	return c, nil
}

func run(ctx context.Context, args []string, out io.Writer) error {
	c, err := parseArgs(args, out)
	if err != nil {
		return err
	}
	p, err := iopool.New(iopool.WithUringEntries(uint32(min(2*c.depth, 4096))))
	if err != nil {
		return err
	}
	defer p.Close()
	// Ctrl-C closes the pool: the copy task is canceled, its operations in
	// the kernel canceled and waited for.
	ran := make(chan struct{})
	defer close(ran)
	go func() {
		select {
		case <-ctx.Done():
			p.Close()
		case <-ran:
		}
	}()
	start := time.Now()
	var size int64
	err = p.Run(func(t *iopool.Task) error {
		u, err := t.Driver().Uring()
		if errors.Is(err, iopool.ErrUringUnavailable) {
			return fmt.Errorf("this system refuses io_uring, which ucopy needs: %w", err)
		}
		if err != nil {
			return err
		}
		size, err = copyFile(t, u, c)
		return err
	})
	if errors.Is(err, iopool.ErrClosed) && ctx.Err() != nil {
		return fmt.Errorf("interrupted; %s is incomplete", c.dst)
	}
	if err != nil {
		return err
	}
	elapsed := time.Since(start)
	st := p.Stats()
	fmt.Fprintf(out, "copied %d bytes from %s to %s in %v (%.1f MB/s)\n",
		size, c.src, c.dst, elapsed.Round(time.Microsecond), float64(size)/1e6/elapsed.Seconds())
	fmt.Fprintf(out, "io_uring: %d operations in %d io_uring_enter calls (%.1f per call), %d loop cycles\n",
		st.UringSubmitted, st.UringEnters, float64(st.UringSubmitted)/float64(max(st.UringEnters, 1)), st.Cycles)
	return nil
}

// copyFile copies c.src to c.dst through the ring, to the end of SRC (not
// to the size statx reports: /proc files report 0, sysfs files 4096, and a
// file may grow during the copy), and returns the bytes copied.
func copyFile(t *iopool.Task, u *iopool.Uring, c config) (size int64, err error) {
	var src, dst unix.Statx_t
	if err := u.Statx(t, unix.AT_FDCWD, c.src, 0, unix.STATX_TYPE|unix.STATX_INO, &src); err != nil {
		return 0, err
	}
	if src.Mode&unix.S_IFMT != unix.S_IFREG {
		return 0, fmt.Errorf("%s is not a regular file", c.src)
	}
	// DST may be SRC itself (the same path, a symlink or a hard link to it):
	// opening it with O_TRUNC would destroy the data before it is read.
	switch err := u.Statx(t, unix.AT_FDCWD, c.dst, 0, unix.STATX_TYPE|unix.STATX_INO, &dst); {
	case err == nil && sameFile(&src, &dst):
		return 0, fmt.Errorf("%s and %s are the same file (device %d:%d, inode %d); nothing copied",
			c.src, c.dst, src.Dev_major, src.Dev_minor, src.Ino)
	case err != nil && !errors.Is(err, fs.ErrNotExist):
		return 0, err
	}
	sfd, err := u.Openat(t, unix.AT_FDCWD, c.src, unix.O_RDONLY, 0)
	if err != nil {
		return 0, err
	}
	defer closeFd(t, u, sfd, &err)
	dfd, err := u.Openat(t, unix.AT_FDCWD, c.dst, unix.O_WRONLY|unix.O_CREAT|unix.O_TRUNC, 0o644)
	if err != nil {
		return 0, err
	}
	defer closeFd(t, u, dfd, &err)
	// A regular DST is written at offsets, many writes at once, and synced;
	// anything else (a pipe, /dev/null, a terminal) is written in order at
	// its position and not synced (fsync fails with EINVAL there).
	if err := u.Statx(t, dfd, "", unix.AT_EMPTY_PATH, unix.STATX_TYPE, &dst); err != nil {
		return 0, err
	}
	regular := dst.Mode&unix.S_IFMT == unix.S_IFREG

	bufs := make([][]byte, c.depth)
	for i := range bufs {
		bufs[i] = make([]byte, c.bs)
	}
	batch := u.NewBatch()
	// On an early return, operations already queued are still waited for
	// (or, if the task was canceled, canceled), so their buffers are free.
	defer batch.Await(t)
	for off := int64(0); ; {
		// Queue depth reads, wait for all of them at once.
		for i := range bufs {
			if err := batch.Read(t, sfd, bufs[i], off+int64(i*c.bs)); err != nil {
				return 0, err
			}
		}
		if err := batch.Await(t); err != nil {
			return 0, err
		}
		// A short read (the end of the file, or the kernel gave less) ends
		// the round there; the next round starts after the bytes read, and
		// a round that reads nothing is the end of the file.
		got := make([]int, 0, len(bufs))
		round := int64(0)
		for i := range bufs {
			n, err := batch.Result(i)
			if err != nil {
				return 0, fmt.Errorf("reading %s: %w", c.src, err)
			}
			got = append(got, int(n))
			round += int64(n)
			if int(n) < c.bs {
				break
			}
		}
		if round == 0 {
			break
		}
		if err := writeAll(t, u, batch, dfd, regular, bufs, got, off); err != nil {
			return 0, fmt.Errorf("writing %s: %w", c.dst, err)
		}
		off += round
		size = off
	}
	if regular {
		if err := u.Fsync(t, dfd); err != nil {
			return 0, fmt.Errorf("writing %s: %w", c.dst, err)
		}
	}
	return size, nil
}

// sameFile reports whether two statx results name one file.
func sameFile(a, b *unix.Statx_t) bool {
	return a.Dev_major == b.Dev_major && a.Dev_minor == b.Dev_minor && a.Ino == b.Ino
}

// writeAll writes bufs[i][:got[i]] at consecutive offsets from off. To a
// regular file the writes are queued as one batch and a short write is
// finished with further writes; to anything else they are made one after
// the other at the file's position, which keeps them in order.
func writeAll(t *iopool.Task, u *iopool.Uring, batch *iopool.Batch, fd int, regular bool, bufs [][]byte, got []int, off int64) error {
	if !regular {
		for i, n := range got {
			if err := writeRest(t, u, fd, bufs[i][:n], -1); err != nil {
				return err
			}
		}
		return nil
	}
	at := off
	for i, n := range got {
		if err := batch.Write(t, fd, bufs[i][:n], at); err != nil {
			return err
		}
		at += int64(n)
	}
	if err := batch.Await(t); err != nil {
		return err
	}
	at = off
	for i, n := range got {
		w, err := batch.Result(i)
		if err != nil {
			return err
		}
		if err := writeRest(t, u, fd, bufs[i][w:n], at+int64(w)); err != nil {
			return err
		}
		at += int64(n)
	}
	return nil
}

// writeRest writes all of b at off (-1: at the file position).
func writeRest(t *iopool.Task, u *iopool.Uring, fd int, b []byte, off int64) error {
	for len(b) > 0 {
		m, err := u.Write(t, fd, b, off)
		if err != nil {
			return err
		}
		if m == 0 {
			return io.ErrShortWrite
		}
		b = b[m:]
		if off >= 0 {
			off += int64(m)
		}
	}
	return nil
}

// closeFd closes fd through the ring, keeping the first error. A canceled
// task can no longer wait for the ring, so it closes the fd directly.
func closeFd(t *iopool.Task, u *iopool.Uring, fd int, err *error) {
	cerr := u.CloseFd(t, fd)
	if errors.Is(cerr, iopool.ErrCanceled) {
		cerr = unix.Close(fd)
	}
	if *err == nil && cerr != nil {
		*err = cerr
	}
}
