package headwatertest

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// BinaryNotFoundError says that no headwater binary was found, and where the search looked.
type BinaryNotFoundError struct{ message string }

func (e *BinaryNotFoundError) Error() string { return e.message }

// FindBinary returns the headwater binary to run: binary when not empty, then
// $HEADWATER_BIN, then `headwater` on PATH, then $CARGO_TARGET_DIR/release/headwater, then
// ~/.cache/headwater/target/release/headwater (where `./dev build` puts it). An explicit
// binary or $HEADWATER_BIN that is not an executable file is an error (no fallback).
func FindBinary(binary string) (string, error) {
	if binary != "" {
		return explicit(binary, "Options.Binary")
	}
	if env := os.Getenv("HEADWATER_BIN"); env != "" {
		return explicit(env, "$HEADWATER_BIN")
	}
	var tried []string
	if onPath, err := exec.LookPath("headwater"); err == nil {
		return filepath.Abs(onPath)
	}
	tried = append(tried, "`headwater` on PATH")
	var candidates []string
	if target := os.Getenv("CARGO_TARGET_DIR"); target != "" {
		candidates = append(candidates, filepath.Join(target, "release", "headwater"))
	} else {
		tried = append(tried, "$CARGO_TARGET_DIR/release/headwater ($CARGO_TARGET_DIR is not set)")
	}
	if home, err := os.UserHomeDir(); err == nil {
		candidates = append(candidates, filepath.Join(home, ".cache", "headwater", "target", "release", "headwater"))
	}
	for _, c := range candidates {
		if executable(c) {
			return c, nil
		}
		tried = append(tried, c)
	}
	return "", &BinaryNotFoundError{"cannot find the `headwater` binary; tried: " + strings.Join(tried, "; ") +
		". Build it with `./dev build` in a Headwater checkout (it lands in $CARGO_TARGET_DIR/release/headwater, " +
		"default ~/.cache/headwater/target/release), or set HEADWATER_BIN (or Options.Binary) to its path."}
}

func executable(path string) bool {
	info, err := os.Stat(path)
	return err == nil && info.Mode().IsRegular() && info.Mode().Perm()&0o111 != 0
}

func explicit(path, what string) (string, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return "", err
	}
	if executable(abs) {
		return abs, nil
	}
	problem := "does not exist"
	if info, err := os.Stat(abs); err == nil {
		problem = "is not an executable file"
		if info.IsDir() {
			problem = "is a folder"
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		problem = fmt.Sprintf("cannot be read (%v)", err)
	}
	return "", &BinaryNotFoundError{fmt.Sprintf("the headwater binary given by %s (%s) %s; build it with `./dev build` "+
		"in a Headwater checkout (it lands in ~/.cache/headwater/target/release/headwater)", what, path, problem)}
}
