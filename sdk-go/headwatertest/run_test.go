//go:build unix

package headwatertest

// The run machinery, against a stand-in host: the test binary itself, run with
// HEADWATERTEST_FAKE_HOST set.

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	yaml "go.yaml.in/yaml/v3"
)

func TestMain(m *testing.M) {
	if os.Getenv("HEADWATERTEST_FAKE_HOST") != "" {
		os.Exit(fakeHost(os.Args[1:]))
	}
	os.Exit(m.Run())
}

// fakeHost reads `run PIPELINE ARGS...`, copies the only source's records to every output
// sink (the first as two committed parts and a pending one, the others as the plain path),
// records with "late" to the late sinks, and records with "bad" to the DLQ.
func fakeHost(args []string) int {
	fmt.Fprintln(os.Stderr, "fake host:", strings.Join(args, " "))
	if pidFile := os.Getenv("FAKE_SLEEP"); pidFile != "" {
		child := exec.Command("sleep", "60")
		if err := child.Start(); err != nil {
			return 9
		}
		_ = os.WriteFile(pidFile, []byte(strconv.Itoa(child.Process.Pid)), 0o644)
		time.Sleep(60 * time.Second)
	}
	if code := os.Getenv("FAKE_EXIT"); code != "" {
		fmt.Fprintln(os.Stderr, "error: something broke")
		n, _ := strconv.Atoi(code)
		return n
	}
	if os.Getenv("FAKE_KILL") != "" {
		_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
	}
	text, err := os.ReadFile(args[1])
	if err != nil {
		return 10
	}
	var spec struct {
		Sources map[string]struct{ Path string }
		Sinks   map[string]struct{ Path string }
		Output  any
		DLQ     struct{ Path string }
		Steps   []map[string]any
	}
	if err := yaml.Unmarshal(text, &spec); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 11
	}
	outputs := []string{}
	switch o := spec.Output.(type) {
	case string:
		outputs = append(outputs, o)
	case []any:
		for _, s := range o {
			outputs = append(outputs, s.(string))
		}
	}
	var late []string
	for _, step := range spec.Steps {
		window, _ := step["window"].(map[string]any)
		if l, ok := window["late"].(map[string]any); ok {
			late = append(late, l["sink"].(string))
		}
	}
	var source string
	for _, s := range spec.Sources {
		source = s.Path
	}
	in, err := os.Open(source)
	if err != nil {
		return 12
	}
	defer in.Close()
	written := map[string][]string{}
	var dead []string
	scanner := bufio.NewScanner(in)
	for scanner.Scan() {
		var record map[string]any
		if err := json.Unmarshal(scanner.Bytes(), &record); err != nil || record["bad"] != nil {
			envelope, _ := json.Marshal(map[string]any{"source": "in", "partition": 0, "offset": 1,
				"step": "steps[0] udf f", "error_class": "permanent", "error": "boom", "detail": "stack",
				"attempts": 1, "event_time": 7, "failed_at": "2026-01-01T00:00:00.000Z", "raw": scanner.Text()})
			dead = append(dead, string(envelope))
			continue
		}
		record["args"] = args[2:]
		record["greeting"] = os.Getenv("GREETING")
		line, _ := json.Marshal(record)
		sinks := outputs
		if record["late"] != nil {
			sinks = late
		}
		for _, s := range sinks {
			written[s] = append(written[s], string(line))
		}
	}
	for i, name := range append(outputs, late...) {
		path := spec.Sinks[name].Path
		lines := written[name]
		if i > 0 {
			_ = os.WriteFile(path, []byte(strings.Join(lines, "\n")+"\n"), 0o644)
			continue
		}
		stem := strings.TrimSuffix(path, ".jsonl")
		half := len(lines) / 2
		_ = os.WriteFile(stem+"-0000000002.jsonl", []byte(strings.Join(lines[half:], "\n")+"\n"), 0o644)
		_ = os.WriteFile(stem+"-0000000001.jsonl", []byte(strings.Join(lines[:half], "\n")+"\n\n"), 0o644)
		pending := filepath.Join(filepath.Dir(path), "."+filepath.Base(stem)+"-0000000003.jsonl.pending")
		_ = os.WriteFile(pending, []byte(`{"uncommitted":true}`+"\n"), 0o644)
	}
	if len(dead) > 0 {
		_ = os.WriteFile(spec.DLQ.Path, []byte(strings.Join(dead, "\n")+"\n"), 0o644)
	}
	return 0
}

const fakePipeline = `
name: fake
sources: { in: { type: stdin, event_time: { field: ts } } }
steps:
  - key_by: k
  - window: { type: tumbling, size: 1m, aggregates: { n: count() }, late: { sink: late } }
sinks:
  a: { type: stdout }
  b: { type: file, path: out/b.jsonl }
  late: { type: file, path: out/late.jsonl }
  unused: { type: blackhole }
output: [b, a]
`

func fakeRun(t *testing.T, pipeline string, records any, opts *Options) (*Result, error) {
	t.Helper()
	if opts == nil {
		opts = &Options{}
	}
	opts.Binary = os.Args[0]
	if opts.Env == nil {
		opts.Env = map[string]string{}
	}
	opts.Env["HEADWATERTEST_FAKE_HOST"] = "1"
	return RunPipeline(context.Background(), pipeline, records, opts)
}

func texts(records []json.RawMessage) []string {
	out := []string{}
	for _, r := range records {
		out = append(out, string(r))
	}
	return out
}

func TestRunCollectsEverySinkTheLateRecordsAndTheDeadLetters(t *testing.T) {
	dir := t.TempDir()
	pipeline := write(t, filepath.Join(dir, "p", "pipeline.yaml"), fakePipeline)
	result, err := fakeRun(t, pipeline,
		[]any{map[string]any{"ts": 1}, `{"ts": 2, "bad": true}`, map[string]any{"ts": 3}, map[string]any{"ts": 4}, map[string]any{"ts": 5, "late": 1}},
		&Options{Env: map[string]string{"GREETING": "hi"}, Parallelism: 3})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		`{"args":["--fresh","-p","3"],"greeting":"hi","ts":1}`,
		`{"args":["--fresh","-p","3"],"greeting":"hi","ts":3}`,
		`{"args":["--fresh","-p","3"],"greeting":"hi","ts":4}`,
	}
	// b: committed parts in checkpoint order (the pending part is not output); a: the plain file.
	equal(t, texts(result.Output), want)
	equal(t, texts(result.Outputs["b"]), want)
	equal(t, texts(result.Outputs["a"]), want)
	equal(t, len(result.Outputs["unused"]), 0)
	equal(t, texts(result.Late), []string{`{"args":["--fresh","-p","3"],"greeting":"hi","late":1,"ts":5}`})
	equal(t, len(result.DeadLetters), 1)
	dead := result.DeadLetters[0]
	five := int64(7)
	equal(t, dead, DeadLetter{Source: "in", Offset: 1, Step: "steps[0] udf f", ErrorClass: "permanent",
		Error: "boom", Detail: "stack", Attempts: 1, EventTime: &five, FailedAt: "2026-01-01T00:00:00.000Z",
		Raw: `{"ts": 2, "bad": true}`, JSON: dead.JSON})
	equal(t, result.ExitCode, 0)
	equal(t, result.Inputs, map[string]int{"in": 5})
	if !strings.Contains(result.Stderr, "fake host: run ") {
		t.Errorf("stderr: %q", result.Stderr)
	}
	// Nothing was written next to the pipeline.
	entries, _ := os.ReadDir(filepath.Dir(pipeline))
	equal(t, len(entries), 1)
}

func TestWorkDirIsKept(t *testing.T) {
	dir := t.TempDir()
	pipeline := write(t, filepath.Join(dir, "pipeline.yaml"), fakePipeline)
	work := filepath.Join(dir, "kept")
	if _, err := fakeRun(t, pipeline, []map[string]int{{"ts": 1}}, &Options{WorkDir: work}); err != nil {
		t.Fatal(err)
	}
	text, _ := os.ReadFile(filepath.Join(work, "pipeline.yaml"))
	if !strings.HasPrefix(string(text), "# Rewritten by headwatertest") {
		t.Errorf("pipeline: %.80s", text)
	}
	input, _ := os.ReadFile(filepath.Join(work, "input", "in.jsonl"))
	equal(t, string(input), `{"ts":1}`+"\n")
	if _, err := os.Stat(filepath.Join(work, "out", "b-0000000002.jsonl")); err != nil {
		t.Error(err)
	}
}

func TestAFailedRunReturnsExitCodeStderrAndPipeline(t *testing.T) {
	dir := t.TempDir()
	pipeline := write(t, filepath.Join(dir, "pipeline.yaml"), fakePipeline)
	_, err := fakeRun(t, pipeline, []any{}, &Options{Env: map[string]string{"FAKE_EXIT": "2"}})
	var perr *PipelineError
	if !errors.As(err, &perr) {
		t.Fatalf("got %v", err)
	}
	equal(t, perr.ExitCode, 2)
	for _, want := range []string{"exit code 2 (2: the pipeline is invalid or could not start)",
		"error: something broke", "   1 | # Rewritten by headwatertest", "name: fake"} {
		errorContains(t, err, want)
	}
	if !strings.Contains(perr.Stderr, "error: something broke") || !strings.Contains(perr.PipelineText, "name: fake") {
		t.Errorf("%+v", perr)
	}

	result, err := fakeRun(t, pipeline, []any{}, &Options{Env: map[string]string{"FAKE_EXIT": "1"}, AllowFailure: true})
	if err != nil {
		t.Fatal(err)
	}
	equal(t, result.ExitCode, 1)
	equal(t, len(result.Output), 0)

	_, err = fakeRun(t, pipeline, []any{}, &Options{Env: map[string]string{"FAKE_KILL": "1"}})
	errorContains(t, err, "(killed by signal 9)")
}

func TestATimeoutKillsTheHostAndItsChildren(t *testing.T) {
	dir := t.TempDir()
	pipeline := write(t, filepath.Join(dir, "pipeline.yaml"), fakePipeline)
	pidFile := filepath.Join(dir, "child.pid")
	started := time.Now()
	_, err := fakeRun(t, pipeline, []any{}, &Options{Env: map[string]string{"FAKE_SLEEP": pidFile}, Timeout: 2 * time.Second})
	var perr *PipelineError
	if !errors.As(err, &perr) || !perr.TimedOut {
		t.Fatalf("got %v", err)
	}
	errorContains(t, err, "did not finish within 2s and was killed")
	if !strings.Contains(perr.Stderr, "fake host: run") {
		t.Errorf("stderr so far: %q", perr.Stderr)
	}
	if time.Since(started) > 30*time.Second {
		t.Error("the timeout took too long")
	}
	text, _ := os.ReadFile(pidFile)
	child, _ := strconv.Atoi(string(text))
	deadline := time.Now().Add(10 * time.Second)
	for alive(child) && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if alive(child) {
		t.Error("the host's child process outlived the timeout")
	}
}

func alive(pid int) bool {
	if pid <= 0 {
		return false
	}
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return syscall.Kill(pid, 0) == nil
	}
	return !strings.Contains(string(status), "\nState:\tZ")
}

func TestRunSkipsWithoutABinaryUnlessOneIsRequired(t *testing.T) {
	t.Setenv("HEADWATER_BIN", filepath.Join(t.TempDir(), "missing"))
	t.Setenv("HEADWATER_REQUIRE_BINARY", "")
	ft := &fakeT{TB: t}
	ft.run(func() { Run(ft, "pipeline.yaml", nil, nil) })
	if !ft.skipped || !strings.Contains(ft.message, "end-to-end test needs the headwater binary") {
		t.Errorf("skipped %v: %q", ft.skipped, ft.message)
	}
	t.Setenv("HEADWATER_REQUIRE_BINARY", "1")
	ft = &fakeT{TB: t}
	ft.run(func() { Run(ft, "pipeline.yaml", nil, nil) })
	if !ft.failed || !strings.Contains(ft.message, "HEADWATER_REQUIRE_BINARY is set but") {
		t.Errorf("failed %v: %q", ft.failed, ft.message)
	}
}

// fakeT records a Skip or Fatal instead of ending the test.
type fakeT struct {
	testing.TB
	skipped, failed bool
	message         string
}

func (f *fakeT) Helper() {}

func (f *fakeT) Skipf(format string, args ...any) {
	f.skipped, f.message = true, fmt.Sprintf(format, args...)
	panic(f)
}

func (f *fakeT) Fatalf(format string, args ...any) {
	f.failed, f.message = true, fmt.Sprintf(format, args...)
	panic(f)
}

func (f *fakeT) run(fn func()) {
	defer func() {
		if v := recover(); v != nil && v != f {
			panic(v)
		}
	}()
	fn()
}

func TestBuildWorkerBuildsAMainPackage(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a Go program")
	}
	bin := BuildWorker(t, "./testdata/worker")
	out, err := exec.Command(bin, "--help").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "--socket") {
		t.Fatalf("%s: %v\n%s", bin, err, out)
	}
	_, err = goBuild(".", "./testdata/nope", t.TempDir())
	errorContains(t, err, "building the Go worker (go build -o ")

	// A pipeline outside any module that names the worker's folder: built from inside it.
	dir := t.TempDir()
	worker, _ := filepath.Abs("testdata/worker")
	pipeline := write(t, filepath.Join(dir, "p.yaml"), `
name: p
sources: { in: { type: stdin, event_time: { field: ts } } }
udfs: { enrich: { runtime: go, package: `+worker+`, function: enrich } }
sinks: { out: { type: stdout } }
output: out
`)
	p, err := prepare(pipeline, filepath.Join(dir, "w"), nil, &Options{}, goBuild)
	if err != nil {
		t.Fatal(err)
	}
	built := load(t, p.pipelineFile)["udfs"].(map[string]any)["enrich"].(map[string]any)["binary"].(string)
	if !executable(built) || !strings.HasPrefix(filepath.Base(built), "worker-") {
		t.Fatalf("built %s", built)
	}
}
