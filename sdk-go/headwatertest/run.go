package headwatertest

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"
)

// DefaultTimeout is how long a run may take when Options.Timeout is zero.
const DefaultTimeout = 2 * time.Minute

// Options tunes a run. The zero value (or nil) runs the pipeline as written, with the binary
// FindBinary finds, building every Go UDF's package.
type Options struct {
	// Inputs gives the records per source name, for a pipeline with several sources (pass
	// nil records then); each value is a slice of records. Sources not named read nothing.
	Inputs map[string]any
	// Binary is the headwater binary; default: see [FindBinary].
	Binary string
	// Workers maps Go UDF names to worker binaries you built (see [BuildWorker]), used
	// instead of the UDF's binary, package or endpoint.
	Workers map[string]string
	// HostBuilds leaves the Go UDFs declared with `package:` for the host to build (their
	// paths made absolute), instead of building them here with this go command.
	HostBuilds bool
	// Timeout is how long the run may take before it is killed (with its workers) and a
	// *PipelineError returned; default DefaultTimeout.
	Timeout time.Duration
	// Env adds environment variables for the host and its workers (e.g. settings your
	// UDFs read), on top of the current environment.
	Env map[string]string
	// Parallelism overrides the pipeline's parallelism (`headwater run -p`) when above 0.
	Parallelism int
	// WorkDir is a folder (created if needed) to run in and keep, to look at the rewritten
	// pipeline.yaml, the inputs and outputs; default a temporary folder that is removed.
	WorkDir string
	// AllowFailure returns a Result for a run that failed (its ExitCode not 0) instead of a
	// *PipelineError.
	AllowFailure bool
}

// Result is what a run produced. Records are JSON documents: decode them with [Decode], or
// compare them as text.
//
// With a parallelism above 1 and a key_by, the order of records across keys is not defined:
// sort them in your assertions, or set Options.Parallelism to 1.
type Result struct {
	// Outputs maps every sink name to the records it committed, in order.
	Outputs map[string][]json.RawMessage
	// Output is the main output: the records of the first sink named in the pipeline's
	// `output` (all sinks named there receive the same records), or of the only sink.
	Output []json.RawMessage
	// Late are the records that windows sent to their `late: { sink: NAME }` sinks.
	Late []json.RawMessage
	// DeadLetters are the DLQ envelopes, in order.
	DeadLetters []DeadLetter
	// Inputs says, per source, how many records it was given.
	Inputs   map[string]int
	ExitCode int
	Stdout   string
	Stderr   string
}

// DeadLetter is one dead-letter envelope (see docs/pipeline.md, `dlq`).
type DeadLetter struct {
	Source        string `json:"source"`
	Partition     int    `json:"partition"`
	PartitionName string `json:"partition_name"`
	// Offset is the 1-based line for files.
	Offset int64 `json:"offset"`
	// Step is the step that failed, e.g. "steps[0] udf enrich".
	Step string `json:"step"`
	// ErrorClass is "permanent" or "transient" (retried, then dead-lettered).
	ErrorClass string `json:"error_class"`
	Error      string `json:"error"`
	// ErrorType is the error's kind (the leading `name:` of Error, or the host check that
	// failed); Fingerprint groups dead letters with one cause (`headwater dlq inspect`).
	ErrorType   string `json:"error_type"`
	Fingerprint string `json:"fingerprint"`
	// Detail is the traceback (for a Go UDF: the panic's stack, or the error chain).
	Detail   string `json:"detail"`
	Attempts int    `json:"attempts"`
	// Tier is which tier of a udf step gave up ("retry" or "remediation"); UDFVersion names
	// the code that failed (the runtime, and the code's digest where known); both are empty for
	// other steps. CorrelationID is the record's position, the same in every attempt and run.
	Tier          string `json:"tier"`
	UDFVersion    string `json:"udf_version"`
	CorrelationID string `json:"correlation_id"`
	EventTime     *int64 `json:"event_time"`
	// FirstFailedAt is when the first attempt failed; FailedAt when the last did.
	FirstFailedAt string `json:"first_failed_at"`
	FailedAt      string `json:"failed_at"`
	// Raw is the record as it was read; RawBase64 when it is not UTF-8.
	Raw       string `json:"raw"`
	RawBase64 string `json:"raw_base64"`
	// JSON is the whole envelope.
	JSON json.RawMessage `json:"-"`
}

// PipelineError is a run that failed or did not finish in time.
type PipelineError struct {
	// ExitCode is the host's exit code (2: the pipeline is invalid or could not start, e.g.
	// a Go worker that does not build or exits at once; 1: the run failed), -N when it was
	// killed by signal N, and -1 after a timeout.
	ExitCode int
	TimedOut bool
	Stdout   string
	// Stderr holds what the host printed, including the workers' stderr.
	Stderr string
	// PipelineText is the rewritten pipeline that was run (error positions refer to it).
	PipelineText string
	message      string
}

func (e *PipelineError) Error() string { return e.message }

// Run runs the pipeline file on records (a slice of structs, maps, json.RawMessage or
// strings, which are written as raw lines; nil when Options.Inputs is used) with the real
// headwater binary, and returns what it produced. Without a binary the test is skipped,
// unless HEADWATER_REQUIRE_BINARY is set (CI), which makes a missing binary a failure; any
// other problem fails the test.
//
//	result := headwatertest.Run(t, "pipeline.yaml", []Order{{ID: 1, Price: 2.5, Quantity: 4}}, nil)
//	got := headwatertest.Decode[Enriched](t, result.Output)
func Run(t testing.TB, pipeline string, records any, opts *Options) *Result {
	t.Helper()
	o := Options{}
	if opts != nil {
		o = *opts
	}
	exe, err := FindBinary(o.Binary)
	if err != nil {
		if v := os.Getenv("HEADWATER_REQUIRE_BINARY"); v != "" && v != "0" {
			t.Fatalf("HEADWATER_REQUIRE_BINARY is set but %v", err)
		}
		t.Skipf("end-to-end test needs the headwater binary: %v", err)
	}
	o.Binary = exe
	if o.WorkDir == "" {
		o.WorkDir = t.TempDir()
	}
	result, err := RunPipeline(context.Background(), pipeline, records, &o)
	if err != nil {
		t.Fatal(err)
	}
	return result
}

// RunPipeline is [Run] without a testing.TB: it returns a *BinaryNotFoundError when there
// is no binary, a *PipelineError when the run fails, and other errors when records or
// options do not fit the pipeline. Cancelling ctx kills the run.
func RunPipeline(ctx context.Context, pipeline string, records any, opts *Options) (*Result, error) {
	o := Options{}
	if opts != nil {
		o = *opts
	}
	exe, err := FindBinary(o.Binary)
	if err != nil {
		return nil, err
	}
	folder := o.WorkDir
	if folder == "" {
		if folder, err = os.MkdirTemp("", "headwater-"); err != nil {
			return nil, err
		}
		defer os.RemoveAll(folder)
	} else {
		if folder, err = filepath.Abs(folder); err != nil {
			return nil, err
		}
		if err := os.MkdirAll(folder, 0o755); err != nil {
			return nil, err
		}
	}
	p, err := prepare(pipeline, folder, records, &o, goBuild)
	if err != nil {
		return nil, err
	}
	args := []string{"run", p.pipelineFile, "--fresh"} // every run starts from its own input
	if o.Parallelism > 0 {
		args = append(args, "-p", strconv.Itoa(o.Parallelism))
	}
	timeout := o.Timeout
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	env := os.Environ()
	for k, v := range o.Env {
		env = append(env, k+"="+v)
	}
	code, stdout, stderr, err := execute(ctx, exe, args, env, folder, timeout)
	if err != nil {
		var perr *PipelineError
		if errors.As(err, &perr) {
			perr.PipelineText = p.text
			perr.message += "\n" + numbered(p.text)
		}
		return nil, err
	}
	if code != 0 && !o.AllowFailure {
		return nil, &PipelineError{
			ExitCode: code, Stdout: stdout, Stderr: stderr, PipelineText: p.text,
			message: fmt.Sprintf("headwater run %s failed with exit code %d%s:\n%s\n%s",
				pipeline, code, exitHint(code), strings.TrimRight(stderr, "\n"), numbered(p.text)),
		}
	}
	result := &Result{
		Outputs: map[string][]json.RawMessage{}, Inputs: p.counts,
		ExitCode: code, Stdout: stdout, Stderr: stderr,
	}
	for _, name := range p.sinkOrder {
		if result.Outputs[name], err = readSink(p.sinks[name]); err != nil {
			return nil, err
		}
	}
	result.Output = result.Outputs[p.mainSink]
	for _, name := range p.lateSinks {
		result.Late = append(result.Late, result.Outputs[name]...)
	}
	letters, err := readJSONL(p.dlq)
	if err != nil {
		return nil, err
	}
	for _, raw := range letters {
		d := DeadLetter{JSON: raw}
		if err := json.Unmarshal(raw, &d); err != nil {
			return nil, fmt.Errorf("%s: a dead letter that is not an envelope: %w", p.dlq, err)
		}
		result.DeadLetters = append(result.DeadLetters, d)
	}
	return result, nil
}

func exitHint(code int) string {
	switch {
	case code == 2:
		return " (2: the pipeline is invalid or could not start)"
	case code == 1:
		return " (1: the run failed)"
	case code < 0:
		return fmt.Sprintf(" (killed by signal %d)", -code)
	}
	return ""
}

// execute runs the host in a process group of its own, so that a timeout also ends its
// workers, and ends whatever of the group is left when the host exits.
func execute(ctx context.Context, exe string, args, env []string, dir string, timeout time.Duration) (int, string, string, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, exe, args...)
	cmd.Dir, cmd.Env = dir, env
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	ownGroup(cmd)
	cmd.WaitDelay = 10 * time.Second // a process outside the group holding the pipes
	err := cmd.Run()
	killGroup(cmd)
	if ctx.Err() != nil {
		what := fmt.Sprintf("did not finish within %v and was killed", timeout)
		if !errors.Is(ctx.Err(), context.DeadlineExceeded) {
			what = "was cancelled"
		}
		return 0, "", "", &PipelineError{
			ExitCode: -1, TimedOut: true, Stdout: stdout.String(), Stderr: stderr.String(),
			message: fmt.Sprintf("headwater run %s %s; stderr so far:\n%s", args[1], what, strings.TrimRight(stderr.String(), "\n")),
		}
	}
	var exit *exec.ExitError
	switch {
	case err == nil:
		return 0, stdout.String(), stderr.String(), nil
	case errors.As(err, &exit):
		return exitCode(exit), stdout.String(), stderr.String(), nil
	}
	return 0, "", "", fmt.Errorf("cannot run %s: %w", exe, err)
}

// readSink reads a file sink's committed output: with checkpoints on (the default) the host
// writes one part per checkpoint, <stem>-<10-digit checkpoint id><ext>; with them off, the
// path itself.
func readSink(path string) ([]json.RawMessage, error) {
	ext := filepath.Ext(path)
	stem := strings.TrimSuffix(path, ext)
	parts, err := filepath.Glob(stem + "-" + strings.Repeat("[0-9]", 10) + ext)
	if err != nil {
		return nil, err
	}
	if len(parts) == 0 {
		return readJSONL(path)
	}
	sort.Strings(parts)
	var out []json.RawMessage
	for _, part := range parts {
		records, err := readJSONL(part)
		if err != nil {
			return nil, err
		}
		out = append(out, records...)
	}
	return out, nil
}

func readJSONL(path string) ([]json.RawMessage, error) {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []json.RawMessage
	scanner := bufio.NewScanner(f)
	scanner.Buffer(make([]byte, 64<<10), 256<<20)
	for line := 1; scanner.Scan(); line++ {
		text := bytes.TrimSpace(scanner.Bytes())
		if len(text) == 0 {
			continue
		}
		if !json.Valid(text) {
			return nil, fmt.Errorf("%s:%d is not JSON: %.80s", path, line, text)
		}
		out = append(out, json.RawMessage(bytes.Clone(text)))
	}
	return out, scanner.Err()
}

func numbered(text string) string {
	var b strings.Builder
	b.WriteString("the rewritten pipeline that was run:")
	for i, line := range strings.Split(strings.TrimRight(text, "\n"), "\n") {
		fmt.Fprintf(&b, "\n%4d | %s", i+1, line)
	}
	return b.String()
}

// Decode decodes records (e.g. Result.Output) into a slice of T, failing the test when one
// does not decode.
func Decode[T any](t testing.TB, records []json.RawMessage) []T {
	t.Helper()
	out := make([]T, 0, len(records))
	for i, raw := range records {
		var v T
		if err := json.Unmarshal(raw, &v); err != nil {
			t.Fatalf("record %d (%s) does not decode into %T: %v", i+1, raw, v, err)
		}
		out = append(out, v)
	}
	return out
}
