//go:build !unix

package headwatertest

import "os/exec"

func ownGroup(*exec.Cmd) {}

func killGroup(*exec.Cmd) {}

func exitCode(err *exec.ExitError) int { return err.ExitCode() }
