//go:build unix

package headwater_test

// The worker process's launch contract, with the test binary itself as the worker: run
// with HEADWATER_TEST_WORKER set, it calls headwater.Main instead of running the tests.

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/headwater-streaming/headwater/sdk-go/headwater"
	pb "github.com/headwater-streaming/headwater/sdk-go/internal/pb/udfv1"
)

func TestMain(m *testing.M) {
	switch os.Getenv("HEADWATER_TEST_WORKER") {
	case "":
		os.Exit(m.Run())
	case "map":
		headwater.Main(headwater.Map("upper", upper),
			headwater.Filter("long", func(w word) (bool, error) { return len(w.Word) > 3, nil }))
	case "registered":
		headwater.Register(headwater.Map("upper", upper))
		headwater.Main()
	case "none":
		headwater.Main()
	case "duplicate":
		headwater.Main(headwater.Map("upper", upper), headwater.Map("upper", upper))
	}
	fmt.Fprintln(os.Stderr, "unknown HEADWATER_TEST_WORKER")
	os.Exit(99)
}

type workerProc struct {
	cmd    *exec.Cmd
	stdout *bufio.Reader
	stderr *strings.Builder
}

// startWorker starts the test binary as a worker; the test process is its parent, and the
// host unless env says otherwise.
func startWorker(t *testing.T, mode string, env []string, args ...string) *workerProc {
	t.Helper()
	cmd := exec.Command(os.Args[0], args...)
	cmd.Env = append(os.Environ(), "HEADWATER_TEST_WORKER="+mode, "HEADWATER_HOST_PID="+strconv.Itoa(os.Getpid()))
	cmd.Env = append(cmd.Env, env...)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	stderr := &strings.Builder{}
	cmd.Stderr = stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
	})
	return &workerProc{cmd: cmd, stdout: bufio.NewReader(out), stderr: stderr}
}

// readyLine waits for the worker's first line on stdout.
func (w *workerProc) readyLine(t *testing.T) string {
	t.Helper()
	line := make(chan string, 1)
	go func() {
		s, _ := w.stdout.ReadString('\n')
		line <- s
	}()
	select {
	case s := <-line:
		return strings.TrimSuffix(s, "\n")
	case <-time.After(20 * time.Second):
		t.Fatalf("no readiness line; stderr: %s", w.stderr)
		return ""
	}
}

// exit waits for the worker to exit and returns its exit code.
func (w *workerProc) exit(t *testing.T, within time.Duration) int {
	t.Helper()
	_, _ = io.Copy(io.Discard, w.stdout)
	done := make(chan error, 1)
	go func() { done <- w.cmd.Wait() }()
	select {
	case err := <-done:
		var exit *exec.ExitError
		if err != nil && !errors.As(err, &exit) {
			t.Fatal(err)
		}
		return w.cmd.ProcessState.ExitCode()
	case <-time.After(within):
		t.Fatalf("the worker did not exit within %v; stderr: %s", within, w.stderr)
		return -1
	}
}

func handshake(t *testing.T, target string) *pb.HandshakeResponse {
	t.Helper()
	conn, err := grpc.NewClient(target, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	hello, err := pb.NewWorkerClient(conn).Handshake(ctx, &pb.HandshakeRequest{ProtocolVersion: 1})
	if err != nil {
		t.Fatal(err)
	}
	return hello
}

func TestWorkerServesOnASocketAndStopsOnSIGTERM(t *testing.T) {
	socket := filepath.Join(socketDir(t), "w.sock")
	if err := os.WriteFile(socket, []byte("stale"), 0o600); err != nil {
		t.Fatal(err)
	}
	w := startWorker(t, "map", nil, "--socket", socket)
	if got, want := w.readyLine(t), "headwater worker ready on unix:"+socket+": upper, long"; got != want {
		t.Fatalf("readiness line %q, want %q", got, want)
	}
	hello := handshake(t, "unix:"+socket)
	if len(hello.Functions) != 2 || hello.Functions[1].Kind != pb.FunctionKind_FUNCTION_KIND_FILTER {
		t.Fatalf("handshake: %v", hello)
	}
	// A host keeps its Process stream open: the stop must not wait for it forever.
	conn, err := grpc.NewClient("unix:"+socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	stream, err := pb.NewWorkerClient(conn).Process(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(batch(1, "long", `{"word":"hello"}`, `{"word":"hi"}`)); err != nil {
		t.Fatal(err)
	}
	resp, err := stream.Recv()
	if err != nil || len(resp.Results[0].Outputs) != 1 || len(resp.Results[1].Outputs) != 0 {
		t.Fatalf("filter: %v %v", resp, err)
	}
	stopping := time.Now()
	if err := w.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := w.exit(t, 10*time.Second); code != 0 {
		t.Fatalf("exit code %d after SIGTERM; stderr: %s", code, w.stderr)
	}
	if took := time.Since(stopping); took > 5*time.Second {
		t.Errorf("the stop took %v", took)
	}
	if _, err := stream.Recv(); err == nil {
		t.Error("the stream is still open after the worker stopped")
	}
	if _, err := os.Stat(socket); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the socket file is left behind: %v", err)
	}
}

func TestWorkerServesOnTCPAndStopsOnSIGINT(t *testing.T) {
	w := startWorker(t, "registered", nil, "--address", "127.0.0.1:0")
	line := w.readyLine(t)
	address, names, ok := strings.Cut(strings.TrimPrefix(line, "headwater worker ready on "), ": ")
	if !ok || names != "upper" || !strings.HasPrefix(address, "127.0.0.1:") || strings.HasSuffix(address, ":0") {
		t.Fatalf("readiness line %q", line)
	}
	if hello := handshake(t, address); hello.Functions[0].Name != "upper" {
		t.Fatalf("handshake: %v", hello)
	}
	if err := w.cmd.Process.Signal(os.Interrupt); err != nil {
		t.Fatal(err)
	}
	if code := w.exit(t, 10*time.Second); code != 0 {
		t.Fatalf("exit code %d after SIGINT", code)
	}
}

func TestRegistrationProblemsExitWithCode3(t *testing.T) {
	for mode, want := range map[string]string{
		"none":      "headwater worker: no functions are registered; pass them to headwater.Main",
		"duplicate": `headwater worker: two functions are named "upper"`,
	} {
		w := startWorker(t, mode, nil, "--socket", filepath.Join(socketDir(t), "w.sock"))
		if code := w.exit(t, 10*time.Second); code != 3 {
			t.Errorf("%s: exit code %d, want 3", mode, code)
		}
		if !strings.Contains(w.stderr.String(), want) {
			t.Errorf("%s: stderr %q lacks %q", mode, w.stderr, want)
		}
	}
}

func TestABadCommandLineExitsWithCode2(t *testing.T) {
	socket := filepath.Join(socketDir(t), "w.sock")
	for _, args := range [][]string{
		{},
		{"--socket", socket, "--address", "127.0.0.1:0"},
		{"--module", "x"},
		{"--socket", socket, "extra"},
	} {
		w := startWorker(t, "map", nil, args...)
		if code := w.exit(t, 10*time.Second); code != 2 {
			t.Errorf("%q: exit code %d, want 2", args, code)
		}
		if w.stderr.Len() == 0 {
			t.Errorf("%q: nothing on stderr", args)
		}
	}
	w := startWorker(t, "map", []string{"HEADWATER_HOST_PID=abc"}, "--socket", socket)
	if code := w.exit(t, 10*time.Second); code != 2 || !strings.Contains(w.stderr.String(), `HEADWATER_HOST_PID="abc" is not a process id`) {
		t.Errorf("exit code %d, stderr %q", code, w.stderr)
	}
}

func TestAWorkerWhoseParentIsNotTheHostExitsAtOnce(t *testing.T) {
	socket := filepath.Join(socketDir(t), "w.sock")
	// Not our pid: the host that started this worker is already gone.
	w := startWorker(t, "map", []string{"HEADWATER_HOST_PID=" + strconv.Itoa(os.Getpid()+100000)}, "--socket", socket)
	if code := w.exit(t, 10*time.Second); code != 0 {
		t.Fatalf("exit code %d, want 0; stderr %s", code, w.stderr)
	}
	if _, err := os.Stat(socket); !errors.Is(err, os.ErrNotExist) {
		t.Error("the worker listened although its host is gone")
	}
}

func TestAWorkerExitsWhenItsHostIsGone(t *testing.T) {
	socket := filepath.Join(socketDir(t), "w.sock")
	// A shell plays the host: it starts the worker with its own pid, then exits without
	// stopping it. The worker, now an orphan, must notice and exit.
	script := `HEADWATER_HOST_PID=$$ "$0" --socket "$1" >/dev/null 2>&1 & echo $!; ` +
		`while [ ! -S "$1" ]; do sleep 0.05; done; exit 0`
	cmd := exec.Command("/bin/sh", "-c", script, os.Args[0], socket)
	cmd.Env = append(os.Environ(), "HEADWATER_TEST_WORKER=map")
	out, err := cmd.Output()
	if err != nil {
		t.Fatal(err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(out)))
	if err != nil {
		t.Fatalf("worker pid %q: %v", out, err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for alive(pid) {
		if time.Now().After(deadline) {
			_ = syscall.Kill(pid, syscall.SIGKILL)
			t.Fatal("the worker outlived its host by 10 s")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// alive tells whether pid runs (a zombie, exited but not yet reaped, does not count).
func alive(pid int) bool {
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return syscall.Kill(pid, 0) == nil
	}
	return !strings.Contains(string(status), "\nState:\tZ")
}
