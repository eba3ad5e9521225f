//go:build linux

package iopool

import (
	"bytes"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"testing"

	"github.com/stretchr/testify/require"
)

// machinePathRE matches an absolute path that exists on one machine only:
// a home directory, root's, or the work tree the authors ran from (a lock
// file there was once named in docs/group.txt and docs/benchmarks.md). It
// is written in pieces so that this file does not match itself.
var machinePathRE = regexp.MustCompile(`(?:^|[\s"'(=:` + "`" + `])(/(?:` + "home|Users|root|work" + `)/[^\s"'()` + "`" + `]+)`)

// No file of the repository (code, docs, recorded output) names a path from
// one machine: a command or a record that only works where it was written
// (issue 23 item 8).
func TestNoPathFromOneMachine(t *testing.T) {
	parallel(t)
	require.True(t, machinePathRE.MatchString("every run wrapped in flock"+" /"+"work/wt/bench"+".lock"), "the check finds the path it was written for")
	require.False(t, machinePathRE.MatchString("go build -o /tmp/conns ./cmd/conns"), "a scratch path of a recipe is not one machine's")
	checked := 0
	err := filepath.WalkDir(".", func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if d.Name() == ".git" || d.Name() == "testdata" {
				return filepath.SkipDir
			}
			return nil
		}
		if !d.Type().IsRegular() || path == ".git" {
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		if bytes.IndexByte(b, 0) >= 0 { // a binary (a test binary left by go test -c)
			return nil
		}
		checked++
		for i, line := range bytes.Split(b, []byte("\n")) {
			if m := machinePathRE.FindSubmatch(line); m != nil {
				t.Errorf("%s:%d names a path from one machine, %s: %s", path, i+1, m[1], bytes.TrimSpace(line))
			}
		}
		return nil
	})
	require.NoError(t, err)
	require.Greater(t, checked, 100, "the walk found the repository's files")
}
