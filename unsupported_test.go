//go:build linux

package iopool

import (
	"go/build/constraint"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestEveryFileIsBuiltOnlyOnLinux: every Go file of the repository (the
// library, its tests, the examples, the bench module) carries a build
// constraint that holds only on Linux, except the unsupported.go files,
// which hold only elsewhere and stop the build there with a name that says
// why. A new file without the line fails here, not on someone's Mac.
func TestEveryFileIsBuiltOnlyOnLinux(t *testing.T) {
	parallel(t)
	// onlyOn reports whether expr lets the file build on goos, with or
	// without the race detector.
	onlyOn := func(expr constraint.Expr, goos string) bool {
		for _, race := range []bool{false, true} {
			if expr.Eval(func(tag string) bool { return tag == goos || tag == "unix" || (tag == "race" && race) }) {
				return true
			}
		}
		return false
	}
	var checked, unsupported int
	err := filepath.WalkDir(".", func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (d.Name() == ".git" || d.Name() == "testdata") {
			return filepath.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(path, ".go") {
			return nil
		}
		src, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		first, _, _ := strings.Cut(string(src), "\n")
		expr, err := constraint.Parse(first)
		if err != nil {
			t.Errorf("%s: the first line is not a //go:build constraint: %q", path, first)
			return nil
		}
		checked++
		if filepath.Base(path) == "unsupported.go" {
			unsupported++
			require.False(t, onlyOn(expr, "linux"), "%s is built on Linux", path)
			require.True(t, onlyOn(expr, "darwin"), "%s is not built on darwin", path)
			require.Contains(t, string(src), "iopool_builds_only_on_linux", path)
			return nil
		}
		require.True(t, onlyOn(expr, "linux"), "%s: %q is not built on Linux", path, first)
		require.False(t, onlyOn(expr, "darwin") || onlyOn(expr, "windows"), "%s: %q is built on another system", path, first)
		return nil
	})
	require.NoError(t, err)
	require.Greater(t, checked, 150, "the walk found too few files")
	require.Equal(t, 4, unsupported, "unsupported.go in the root, internal/sys, internal/uring and iopooldebug")
}
