package headwatertest

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// builder builds the Go main package pkg (a path relative to dir, or an import path) into
// a binary in folder and returns its path.
type builder func(dir, pkg, folder string) (string, error)

// goBuild builds with the go command on PATH (under `go test`, the one running the tests),
// in dir: the module of dir is the main module.
func goBuild(dir, pkg, folder string) (string, error) {
	goCmd, err := exec.LookPath("go")
	if err != nil {
		return "", fmt.Errorf("cannot build the Go worker %s: the go command is not on PATH; "+
			"build it yourself and pass it in Options.Workers", pkg)
	}
	sum := sha256.Sum256([]byte(dir + "\x00" + pkg))
	name := "worker-" + hex.EncodeToString(sum[:6])
	if base := filepath.Base(filepath.Join(dir, pkg)); safeName.MatchString(base) {
		name = base + "-" + hex.EncodeToString(sum[:6])
	}
	if err := os.MkdirAll(folder, 0o755); err != nil {
		return "", err
	}
	out := filepath.Join(folder, name)
	cmd := exec.Command(goCmd, "build", "-o", out, pkg)
	cmd.Dir = dir
	if text, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("building the Go worker (go build -o %s %s, in %s) failed: %v\n%s",
			out, pkg, dir, err, strings.TrimRight(string(text), "\n"))
	}
	return out, nil
}

// BuildWorker builds the Go main package pkg (a folder such as "." or "./cmd/worker",
// relative to the test's package folder, or an import path) into a temporary binary for the
// test and returns its path; pass it in Options.Workers. A package that does not build fails
// the test with the compiler's output.
func BuildWorker(t testing.TB, pkg string) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	if isPathLike(pkg) {
		dir, pkg = resolve(dir, pkg), "."
	}
	bin, err := goBuild(dir, pkg, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return bin
}
