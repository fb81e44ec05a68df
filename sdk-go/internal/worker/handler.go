// Package worker is the worker side of the UDF protocol without gRPC: it turns a
// HandshakeRequest or a BatchRequest into its response. Kept free of networking so it can be
// tested by building a request, calling the handler and checking the response, and reused by
// any transport.
package worker

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"runtime/debug"
	"strings"
	"sync"

	pb "github.com/headwater-streaming/headwater/sdk-go/internal/pb/udfv1"
)

// ProtocolVersion is the protocol version this worker speaks.
const ProtocolVersion = 1

// Version is the Go SDK's version, reported in the handshake.
const Version = "0.1.0"

// Function is one registered function: its spec and the code that computes one record's
// result.
type Function struct {
	Name   string
	Kind   pb.FunctionKind
	Input  pb.Format
	Output pb.Format
	// Fill computes the result of one record into res, a fresh RecordResult; op is the
	// batch's aggregate op (window aggregates only). An error fails the record: a *Failure
	// keeps its class, any other error is permanent. Fill may panic; the handler turns the
	// panic into the record's error.
	Fill func(op pb.AggregateOp, rec *pb.Record, res *pb.RecordResult) error
}

// Failure is a record's error with its class, message and traceback.
type Failure struct {
	Class     pb.ErrorClass
	Message   string
	Traceback string
}

func (f *Failure) Error() string { return f.Message }

// Permanentf returns a permanent Failure whose message and traceback are the formatted text.
func Permanentf(format string, args ...any) *Failure {
	message := fmt.Sprintf(format, args...)
	return &Failure{Class: pb.ErrorClass_ERROR_CLASS_PERMANENT, Message: OneLine(message), Traceback: message}
}

// OneLine folds a message onto one line: the protocol's error messages are single lines
// (the full text goes into the traceback).
func OneLine(s string) string {
	s = strings.TrimSpace(s)
	if !strings.ContainsAny(s, "\r\n") {
		return s
	}
	lines := strings.FieldsFunc(s, func(r rune) bool { return r == '\n' || r == '\r' })
	kept := lines[:0]
	for _, l := range lines {
		if l = strings.TrimSpace(l); l != "" {
			kept = append(kept, l)
		}
	}
	return strings.Join(kept, " ")
}

// Handler answers Handshake and Process requests from a fixed set of functions. Its
// methods are safe for concurrent use.
type Handler struct {
	functions []*Function
	byName    map[string]*Function
}

// New checks the functions (at least one, unique non-empty names, a Fill each) and returns
// their handler.
func New(functions []*Function) (*Handler, error) {
	if len(functions) == 0 {
		return nil, errors.New("no functions are registered")
	}
	h := &Handler{byName: make(map[string]*Function, len(functions))}
	var problems []string
	for _, f := range functions {
		switch {
		case f.Name == "":
			problems = append(problems, "a function has no name")
		case f.Fill == nil:
			problems = append(problems, fmt.Sprintf("function %q has no code", f.Name))
		case h.byName[f.Name] != nil:
			problems = append(problems, fmt.Sprintf("two functions are named %q; give one of them another name", f.Name))
		default:
			h.byName[f.Name] = f
			h.functions = append(h.functions, f)
		}
	}
	if len(problems) > 0 {
		return nil, errors.New(strings.Join(problems, "; "))
	}
	return h, nil
}

// Names lists the functions' names in registration order.
func (h *Handler) Names() []string {
	names := make([]string, len(h.functions))
	for i, f := range h.functions {
		names[i] = f.Name
	}
	return names
}

// WorkerName is the worker's description in the handshake, e.g.
// "headwater-go 0.1.0 (go1.26.8)".
func WorkerName() string {
	return fmt.Sprintf("headwater-go %s (%s)", Version, runtime.Version())
}

// CodeVersion identifies the code of the worker's functions: "sha256:" and the first 16 hex
// digits of the running executable's digest ("" when it cannot be read). Dead letters carry
// it, so a fix deployed since they failed shows.
var CodeVersion = sync.OnceValue(func() string {
	path, err := os.Executable()
	if err != nil {
		return ""
	}
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	digest := sha256.New()
	if _, err := io.Copy(digest, f); err != nil {
		return ""
	}
	return "sha256:" + hex.EncodeToString(digest.Sum(nil))[:16]
})

// Handshake lists the functions with their kinds and formats.
func (h *Handler) Handshake(*pb.HandshakeRequest) *pb.HandshakeResponse {
	resp := &pb.HandshakeResponse{
		ProtocolVersion: ProtocolVersion, Worker: WorkerName(), CodeVersion: CodeVersion(),
	}
	for _, f := range h.functions {
		resp.Functions = append(resp.Functions, &pb.FunctionSpec{
			Name: f.Name, Kind: f.Kind, Input: f.Input, Output: f.Output,
		})
	}
	return resp
}

// Process computes one result per record, in order. A record that fails (an error, a
// panic, runtime.Goexit) gets an error result; it never fails the batch.
func (h *Handler) Process(req *pb.BatchRequest) *pb.BatchResponse {
	records := req.GetRecords()
	resp := &pb.BatchResponse{BatchId: req.GetBatchId(), Results: make([]*pb.RecordResult, len(records))}
	f := h.byName[req.GetFunction()]
	if f == nil {
		known := strings.Join(h.Names(), ", ")
		message := fmt.Sprintf("unknown function '%s'; this worker has: %s", req.GetFunction(), known)
		for i := range resp.Results {
			resp.Results[i] = &pb.RecordResult{Error: &pb.Error{
				Class: pb.ErrorClass_ERROR_CLASS_PERMANENT, Message: message,
			}}
		}
		return resp
	}
	op := req.GetAggregateOp()
	for next := 0; next < len(records); {
		next = runFrom(f, op, records, resp.Results, next)
	}
	return resp
}

// runFrom computes results from records[start] on, on a goroutine of its own, and returns
// where to go on: len(records) when done, or the record after one whose function called
// runtime.Goexit (which ends the goroutine it runs on, and cannot be stopped).
func runFrom(f *Function, op pb.AggregateOp, records []*pb.Record, results []*pb.RecordResult, start int) int {
	next := make(chan int, 1)
	go func() {
		i := start
		defer func() {
			if i < len(records) { // the loop did not finish: runtime.Goexit in record i
				results[i] = failed(Permanentf("the function called runtime.Goexit (t.FailNow or the like); return an error instead"))
				next <- i + 1
			}
		}()
		// The batch's results and their first outputs are allocated together: one map
		// output per record costs no allocation of its own.
		fresh := make([]pb.RecordResult, len(records)-start)
		firsts := make([][]byte, len(records)-start)
		for ; i < len(records); i++ {
			res := &fresh[i-start]
			res.Outputs = firsts[i-start : i-start : i-start+1]
			results[i] = one(f, op, records[i], res)
		}
		next <- i
	}()
	return <-next
}

// one computes one record's result into res, turning errors and panics into an error result.
func one(f *Function, op pb.AggregateOp, rec *pb.Record, res *pb.RecordResult) (out *pb.RecordResult) {
	defer func() {
		if v := recover(); v != nil {
			out = failed(panicked(v, debug.Stack()))
		}
	}()
	if err := f.Fill(op, rec, res); err != nil {
		return failed(classify(err))
	}
	return res
}

func failed(f *Failure) *pb.RecordResult {
	return &pb.RecordResult{Error: &pb.Error{Class: f.Class, Message: f.Message, Traceback: f.Traceback}}
}

func classify(err error) *Failure {
	var f *Failure
	if errors.As(err, &f) {
		return f
	}
	text := safeText(err.Error)
	return &Failure{Class: pb.ErrorClass_ERROR_CLASS_PERMANENT, Message: OneLine(text), Traceback: Describe(err)}
}

// safeText calls text, which runs user code (an Error or String method), and tells a panic
// in it instead of letting it escape: a panic outside a function's call would end the worker.
func safeText(text func() string) (s string) {
	defer func() {
		if v := recover(); v != nil {
			s = fmt.Sprintf("(the error's text could not be had: its Error or String method panicked: %v)", v)
		}
	}()
	return text()
}

// Describe is an error's traceback: its text (with %+v, which errors that carry a stack
// print), then the chain of error types.
func Describe(err error) string {
	var b strings.Builder
	b.WriteString(safeText(func() string { return fmt.Sprintf("%+v", err) }))
	b.WriteString("\n\nerror chain: ")
	for e := err; e != nil; e = errors.Unwrap(e) {
		if e != err {
			b.WriteString(" -> ")
		}
		fmt.Fprintf(&b, "%T", e)
		if _, ok := e.(interface{ Unwrap() []error }); ok {
			break // errors.Join and friends: the chain branches
		}
	}
	return b.String()
}

// panicked is the Failure of a function that panicked with v; stack is the goroutine's stack
// taken in the deferred recover, so it starts at the panic.
func panicked(v any, stack []byte) *Failure {
	text := safeText(func() string { return fmt.Sprint(v) })
	return &Failure{
		Class:     pb.ErrorClass_ERROR_CLASS_PERMANENT,
		Message:   OneLine("panic: " + text),
		Traceback: fmt.Sprintf("panic: %s [recovered]\n\n%s", text, stack),
	}
}
