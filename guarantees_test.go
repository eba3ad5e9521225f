//go:build linux

package iopool

import (
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// Every test named in docs/guarantees.md exists: a renamed or removed test
// would leave a promise that nothing proves any more.
func TestGuaranteesNameExistingTests(t *testing.T) {
	doc, err := os.ReadFile("docs/guarantees.md")
	require.NoError(t, err)
	named := regexp.MustCompile("`((?:Test|Fuzz)[A-Za-z0-9_]+)`").FindAllStringSubmatch(string(doc), -1)
	require.NotEmpty(t, named, "docs/guarantees.md names no test")

	defined := map[string]bool{}
	funcRE := regexp.MustCompile(`(?m)^func ((?:Test|Fuzz)[A-Za-z0-9_]+)\(`)
	err = filepath.WalkDir(".", func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && path != "." && strings.HasPrefix(d.Name(), ".") {
			return filepath.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(path, "_test.go") {
			return nil
		}
		src, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		for _, m := range funcRE.FindAllStringSubmatch(string(src), -1) {
			defined[m[1]] = true
		}
		return nil
	})
	require.NoError(t, err)
	var missing []string
	for _, m := range named {
		if !defined[m[1]] {
			missing = append(missing, m[1])
		}
	}
	require.Empty(t, missing, "docs/guarantees.md names tests that do not exist")

	// A link [`TestA`, `TestB`](../x_test.go) says where they are: there.
	linkRE := regexp.MustCompile(`\[([^\]]*)\]\(\.\./([a-z_]+_test\.go)\)`)
	for _, link := range linkRE.FindAllStringSubmatch(string(doc), -1) {
		src, err := os.ReadFile(link[2])
		require.NoError(t, err, "docs/guarantees.md links to %s", link[2])
		for _, name := range regexp.MustCompile("`((?:Test|Fuzz)[A-Za-z0-9_]+)`").FindAllStringSubmatch(link[1], -1) {
			require.True(t, strings.Contains(string(src), "\nfunc "+name[1]+"("), "docs/guarantees.md says %s is in %s", name[1], link[2])
		}
	}
}
