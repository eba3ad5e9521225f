//go:build linux

package iopool

import (
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// goexitCalls are the testing.TB methods that end the calling goroutine
// (runtime.Goexit). Called from a goroutine other than the test's, they end
// that goroutine only: the test then hangs waiting for it, or goes on with
// its work half done.
var goexitCalls = map[string]bool{
	"FailNow": true, "Fatal": true, "Fatalf": true,
	"SkipNow": true, "Skip": true, "Skipf": true,
}

// goroutineGoexits lists, in one parsed file, each call of testify's
// require or of a goexitCalls method inside the function a go statement
// starts: a function literal, or a local variable or function of the file
// bound to one.
func goroutineGoexits(fset *token.FileSet, f *ast.File) []string {
	var found []string
	ast.Inspect(f, func(n ast.Node) bool {
		g, ok := n.(*ast.GoStmt)
		if !ok {
			return true
		}
		bodies := []ast.Node{g.Call}
		if id, ok := g.Call.Fun.(*ast.Ident); ok && id.Obj != nil {
			switch d := id.Obj.Decl.(type) {
			case *ast.FuncDecl:
				bodies = append(bodies, d.Body)
			case *ast.AssignStmt:
				for i, lhs := range d.Lhs {
					if l, ok := lhs.(*ast.Ident); ok && l.Obj == id.Obj && i < len(d.Rhs) {
						bodies = append(bodies, d.Rhs[i])
					}
				}
			}
		}
		for _, body := range bodies {
			ast.Inspect(body, func(m ast.Node) bool {
				sel, ok := m.(*ast.SelectorExpr)
				if !ok {
					return true
				}
				if x, ok := sel.X.(*ast.Ident); (ok && x.Name == "require") || goexitCalls[sel.Sel.Name] {
					found = append(found, fmt.Sprintf("%s: %s in the goroutine started at line %d",
						fset.Position(sel.Pos()), sel.Sel.Name, fset.Position(g.Pos()).Line))
				}
				return true
			})
		}
		return true
	})
	return found
}

// TestNoRequireInOtherGoroutines (issue 24 item 8): no test of the
// repository calls require, or t.FailNow and the methods that call it,
// inside a goroutine it starts; such a goroutine hands its error to the
// test's goroutine, which checks it. A failure there would end the
// goroutine, not the test, and turn into a hang. (A task's body may call
// require: runPool reports the task's Goexit as the test's failure.)
func TestNoRequireInOtherGoroutines(t *testing.T) {
	parallel(t)
	planted := `package p
func TestX(t *testing.T) {
	go func() { require.NoError(t, nil) }()
	check := func() { t.Fatal("no") }
	go check()
	go func() { errc <- nil }()
}`
	fset := token.NewFileSet()
	f, err := parser.ParseFile(fset, "planted_test.go", planted, 0)
	require.NoError(t, err)
	require.Len(t, goroutineGoexits(fset, f), 2, "the check finds what it looks for")

	files := 0
	err = filepath.WalkDir(".", func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (d.Name() == ".git" || d.Name() == "testdata" || d.Name() == "vendor") {
			return filepath.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(path, "_test.go") {
			return nil
		}
		f, err := parser.ParseFile(fset, path, nil, 0)
		if err != nil {
			return err
		}
		files++
		for _, s := range goroutineGoexits(fset, f) {
			t.Errorf("%s: send the error to the test's goroutine and check it there", s)
		}
		return nil
	})
	require.NoError(t, err)
	require.Greater(t, files, 80, "the walk found too few test files")
}
