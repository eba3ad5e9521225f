//go:build linux

package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/iopool/iopool"
	"github.com/iopool/iopool/internal/sys"
	"github.com/iopool/iopool/internal/uring"
)

// skipWithoutUring skips when the kernel refuses io_uring (uring.Refused),
// the one reason outside the code for these tests not to run. Every ring
// setup error is wrapped in ErrUringUnavailable, so that alone is no reason:
// a setup that fails for another cause fails the test.
func skipWithoutUring(t *testing.T) {
	t.Helper()
	p, err := iopool.New()
	require.NoError(t, err)
	defer p.Close()
	_, err = p.Driver().Uring()
	if errors.Is(err, iopool.ErrUringUnavailable) && uring.Refused(err) {
		t.Skipf("the kernel refuses io_uring: %v", err)
	}
	require.NoError(t, err, "io_uring setup failed, and not because the kernel refuses io_uring")
}

func copyAndCompare(t *testing.T, data []byte, args ...string) string {
	t.Helper()
	dir := t.TempDir()
	src, dst := filepath.Join(dir, "src"), filepath.Join(dir, "dst")
	require.NoError(t, os.WriteFile(src, data, 0o600))
	var out bytes.Buffer
	require.NoError(t, run(context.Background(), append(args, src, dst), &out), out.String())
	got, err := os.ReadFile(dst)
	require.NoError(t, err)
	require.True(t, bytes.Equal(data, got), "the copy differs from the source (%d vs %d bytes)", len(got), len(data))
	info, err := os.Stat(dst)
	require.NoError(t, err)
	require.Zero(t, info.Mode().Perm()&^0o644, "DST is created with at most mode 0644")
	return out.String()
}

func TestCopiesOddSizedFile(t *testing.T) {
	skipWithoutUring(t)
	data := make([]byte, 3<<20+12345) // not a multiple of the block size
	r := rand.New(rand.NewPCG(1, 2))
	for i := range data {
		data[i] = byte(r.Uint32())
	}
	out := copyAndCompare(t, data)
	require.Contains(t, out, "copied 3158073 bytes")
	require.Contains(t, out, "io_uring_enter calls")

	// Small blocks and a shallow queue: many rounds, the same bytes.
	copyAndCompare(t, data[:100_001], "-bs", "4096", "-depth", "3")
}

func TestCopiesEmptyFile(t *testing.T) {
	skipWithoutUring(t)
	out := copyAndCompare(t, nil)
	require.Contains(t, out, "copied 0 bytes")
}

func TestOverwritesALongerDestination(t *testing.T) {
	skipWithoutUring(t)
	dir := t.TempDir()
	src, dst := filepath.Join(dir, "src"), filepath.Join(dir, "dst")
	require.NoError(t, os.WriteFile(src, []byte("short"), 0o600))
	require.NoError(t, os.WriteFile(dst, bytes.Repeat([]byte("long"), 1000), 0o600))
	require.NoError(t, run(context.Background(), []string{src, dst}, &bytes.Buffer{}))
	got, err := os.ReadFile(dst)
	require.NoError(t, err)
	require.Equal(t, "short", string(got), "DST is truncated")
}

func TestErrorsNameThePath(t *testing.T) {
	skipWithoutUring(t)
	dir := t.TempDir()
	err := run(context.Background(), []string{filepath.Join(dir, "missing"), filepath.Join(dir, "dst")}, &bytes.Buffer{})
	require.ErrorIs(t, err, fs.ErrNotExist)
	require.ErrorContains(t, err, filepath.Join(dir, "missing"))

	err = run(context.Background(), []string{dir, filepath.Join(dir, "dst")}, &bytes.Buffer{})
	require.ErrorContains(t, err, dir+" is not a regular file")

	src := filepath.Join(dir, "src")
	require.NoError(t, os.WriteFile(src, []byte("x"), 0o600))
	err = run(context.Background(), []string{src, filepath.Join(dir, "no", "such", "dir")}, &bytes.Buffer{})
	require.ErrorIs(t, err, fs.ErrNotExist)
	require.ErrorContains(t, err, filepath.Join(dir, "no", "such", "dir"))
}

func TestBadArguments(t *testing.T) {
	for _, args := range [][]string{{}, {"one"}, {"a", "b", "c"}, {"-bs", "0", "a", "b"}, {"-depth", "-1", "a", "b"}, {"-nope", "a", "b"}} {
		var out bytes.Buffer
		err := run(context.Background(), args, &out)
		require.ErrorIs(t, err, flag.ErrHelp, "%q", args)
		require.Contains(t, out.String(), "Usage: ucopy", "%q", args)
	}
}

func TestSaysSoWhenIoUringIsRefused(t *testing.T) {
	// run makes its pool itself: the hook reaches it as the hook of new
	// pools, which is process-wide, so this test is not parallel.
	fs := new(sys.Faults)
	fs.Set(func(c sys.Call) error {
		if c == sys.CallUringSetup {
			return unix.ENOSYS
		}
		return nil
	})
	prev := sys.SetForNewPools(fs)
	defer sys.SetForNewPools(prev)
	dir := t.TempDir()
	src := filepath.Join(dir, "src")
	require.NoError(t, os.WriteFile(src, []byte("data"), 0o600))
	err := run(context.Background(), []string{src, filepath.Join(dir, "dst")}, &bytes.Buffer{})
	require.ErrorIs(t, err, iopool.ErrUringUnavailable)
	require.ErrorIs(t, err, unix.ENOSYS)
	require.ErrorContains(t, err, "this system refuses io_uring, which ucopy needs")
	require.NoFileExists(t, filepath.Join(dir, "dst"), "nothing is created")
}

// Scenario 7 of issue 13: DST is SRC by the same path, a symlink or a hard
// link. ucopy refuses (an error, so exit status 1) without touching the
// file; before, it opened DST with O_TRUNC and emptied the source.
func TestRegressionRefusesToCopyAFileOntoItself(t *testing.T) {
	skipWithoutUring(t)
	dir := t.TempDir()
	src := filepath.Join(dir, "src")
	data := []byte("precious data")
	require.NoError(t, os.WriteFile(src, data, 0o600))
	require.NoError(t, os.Symlink(src, filepath.Join(dir, "symlink")))
	require.NoError(t, os.Link(src, filepath.Join(dir, "hardlink")))
	for _, dst := range []string{src, filepath.Join(dir, "symlink"), filepath.Join(dir, "hardlink"), filepath.Join(dir, ".", "src")} {
		err := run(context.Background(), []string{src, dst}, &bytes.Buffer{})
		require.ErrorContains(t, err, "are the same file", dst)
		require.ErrorContains(t, err, "nothing copied")
		got, rerr := os.ReadFile(src)
		require.NoError(t, rerr)
		require.Equal(t, data, got, "SRC was touched when copied onto %s", dst)
	}
	// A different file with the same content is not the same file.
	other := filepath.Join(dir, "other")
	require.NoError(t, os.WriteFile(other, data, 0o600))
	require.NoError(t, run(context.Background(), []string{src, other}, &bytes.Buffer{}))
}

// Scenario 8 of issue 13: ucopy copies to the end of SRC, not to the size
// statx reported: a /proc file (size 0) and a sysfs file (size 4096) are
// copied whole; and DST may be /dev/null or a pipe, which fsync refuses.
// Before: the /proc file came out empty with success, the sysfs file failed
// with "ended at N bytes", and /dev/null failed with fsync's EINVAL.
func TestRegressionCopiesToEndOfFileAndToNonRegularFiles(t *testing.T) {
	skipWithoutUring(t)
	dir := t.TempDir()
	for _, src := range []string{"/proc/version", "/sys/devices/system/cpu/possible"} {
		want, err := os.ReadFile(src)
		if err != nil {
			t.Logf("skipping %s: %v", src, err) // not every kernel has it
			continue
		}
		dst := filepath.Join(dir, filepath.Base(src))
		var out bytes.Buffer
		require.NoError(t, run(context.Background(), []string{src, dst}, &out), src)
		got, err := os.ReadFile(dst)
		require.NoError(t, err)
		require.Equal(t, string(want), string(got), "a copy of %s", src)
		require.Contains(t, out.String(), fmt.Sprintf("copied %d bytes", len(want)))
	}

	src := filepath.Join(dir, "src")
	data := bytes.Repeat([]byte("0123456789abcdef"), 40_000) // 640 KB: several rounds
	require.NoError(t, os.WriteFile(src, data, 0o600))
	require.NoError(t, run(context.Background(), []string{src, "/dev/null"}, &bytes.Buffer{}), "to /dev/null")

	var fds [2]int
	require.NoError(t, unix.Pipe2(fds[:], unix.O_CLOEXEC))
	r := os.NewFile(uintptr(fds[0]), "pipe-r")
	defer r.Close()
	read := make(chan []byte, 1)
	go func() {
		b, _ := io.ReadAll(r)
		read <- b
	}()
	err := run(context.Background(), []string{"-bs", "4096", "-depth", "4", src, fmt.Sprintf("/proc/self/fd/%d", fds[1])}, &bytes.Buffer{})
	unix.Close(fds[1])
	require.NoError(t, err, "to a pipe")
	require.True(t, bytes.Equal(data, <-read), "the pipe got the file's bytes in order")
}
