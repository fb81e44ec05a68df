package headwater

// Protocol round trips through the handler: build a request, call it, check the response.
// No host and no network needed.

import (
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"runtime"
	"strings"
	"sync"
	"testing"

	pb "github.com/headwater-streaming/headwater/sdk-go/internal/pb/udfv1"
	"github.com/headwater-streaming/headwater/sdk-go/internal/worker"
)

type order struct {
	ID       int64   `json:"id"`
	Price    float64 `json:"price"`
	Quantity float64 `json:"quantity,omitempty"`
}

func mustHandler(t *testing.T, fns ...Function) *worker.Handler {
	t.Helper()
	h, err := handler(fns)
	if err != nil {
		t.Fatalf("handler: %v", err)
	}
	return h
}

func rec(t *testing.T, v any) *pb.Record {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return &pb.Record{Value: b}
}

func call(t *testing.T, h *worker.Handler, function string, records ...*pb.Record) []*pb.RecordResult {
	t.Helper()
	resp := h.Process(&pb.BatchRequest{BatchId: 1, Function: function, Records: records})
	if len(resp.Results) != len(records) {
		t.Fatalf("%d results for %d records", len(resp.Results), len(records))
	}
	return resp.Results
}

// outputs decodes a result's outputs; it fails the test when the result is an error.
func outputs(t *testing.T, r *pb.RecordResult) []any {
	t.Helper()
	if r.Error != nil {
		t.Fatalf("unexpected error result: %v", r.Error)
	}
	out := []any{}
	for _, o := range r.Outputs {
		var v any
		if err := json.Unmarshal(o, &v); err != nil {
			t.Fatalf("output %q is not JSON: %v", o, err)
		}
		out = append(out, v)
	}
	return out
}

func jsonOf(t *testing.T, s string) any {
	t.Helper()
	var v any
	if err := json.Unmarshal([]byte(s), &v); err != nil {
		t.Fatal(err)
	}
	return v
}

func equal(t *testing.T, got, want any) {
	t.Helper()
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got  %#v\nwant %#v", got, want)
	}
}

func errorOf(t *testing.T, r *pb.RecordResult, class pb.ErrorClass) *pb.Error {
	t.Helper()
	if r.Error == nil {
		t.Fatalf("expected an error result, got outputs %q", r.Outputs)
	}
	if r.Error.Class != class {
		t.Fatalf("error class %v, want %v (message %q)", r.Error.Class, class, r.Error.Message)
	}
	if len(r.Outputs) > 0 || r.NewState != nil || r.ClearState || len(r.Timers) > 0 || r.Accumulator != nil {
		t.Fatalf("a failed record carries more than its error: %v", r)
	}
	return r.Error
}

func TestHandshakeListsFunctionsWithKindsAndFormatsInOrder(t *testing.T) {
	h := mustHandler(t,
		Map("enrich", func(o order) (order, error) { return o, nil }),
		Filter("paid", func(o order) (bool, error) { return true, nil }),
		FlatMapBytes("split", func(b []byte) ([][]byte, error) { return nil, nil }),
		KeyedProcess("sessions", func(*KeyedContext[int], order) error { return nil }),
		WindowAggregate[order, []float64, float64]("spread", spread{}),
		MapBytes("raw", func(b []byte) ([]byte, error) { return b, nil }),
	)
	resp := h.Handshake(&pb.HandshakeRequest{ProtocolVersion: 1, HostVersion: "0.1.0"})
	equal(t, resp.ProtocolVersion, uint32(1))
	want := "headwater-go 0.1.0 (" + runtime.Version() + ")"
	equal(t, resp.Worker, want)
	// The code version is the test executable's digest: the same on every call.
	if !strings.HasPrefix(resp.CodeVersion, "sha256:") || len(resp.CodeVersion) != len("sha256:")+16 {
		t.Fatalf("code version %q: want sha256: and 16 hex digits", resp.CodeVersion)
	}
	equal(t, h.Handshake(&pb.HandshakeRequest{}).CodeVersion, resp.CodeVersion)
	type spec struct {
		name    string
		kind    pb.FunctionKind
		in, out pb.Format
	}
	var got []spec
	for _, f := range resp.Functions {
		got = append(got, spec{f.Name, f.Kind, f.Input, f.Output})
	}
	J, B := pb.Format_FORMAT_JSON, pb.Format_FORMAT_BYTES
	equal(t, got, []spec{
		{"enrich", pb.FunctionKind_FUNCTION_KIND_MAP, J, J},
		{"paid", pb.FunctionKind_FUNCTION_KIND_FILTER, J, J},
		{"split", pb.FunctionKind_FUNCTION_KIND_FLAT_MAP, B, B},
		{"sessions", pb.FunctionKind_FUNCTION_KIND_KEYED_PROCESS, J, J},
		{"spread", pb.FunctionKind_FUNCTION_KIND_WINDOW_AGGREGATE, J, J},
		{"raw", pb.FunctionKind_FUNCTION_KIND_MAP, B, B},
	})
}

func TestMapFilterAndFlatMapOutputs(t *testing.T) {
	type n struct {
		N int `json:"n"`
	}
	h := mustHandler(t,
		Map("double", func(r map[string]any) (map[string]any, error) {
			r["n"] = r["n"].(float64) * 2
			return r, nil
		}),
		Filter("even", func(r n) (bool, error) { return r.N%2 == 0, nil }),
		FlatMap("explode", func(r n) ([]map[string]int, error) {
			var out []map[string]int
			for i := range r.N {
				out = append(out, map[string]int{"i": i})
			}
			return out, nil
		}),
		Map("html", func(r map[string]string) (map[string]string, error) { return r, nil }),
	)
	resp := h.Process(&pb.BatchRequest{BatchId: 7, Function: "double", Records: []*pb.Record{rec(t, n{2})}})
	equal(t, resp.BatchId, uint64(7))
	equal(t, outputs(t, resp.Results[0]), []any{jsonOf(t, `{"n":4}`)})

	// A kept record is the input itself, byte for byte (spacing and key order included).
	raw := []byte(`{ "z": 1, "n" : 2 }`)
	results := call(t, h, "even", &pb.Record{Value: raw}, rec(t, n{3}))
	equal(t, results[0].Outputs, [][]byte{raw})
	equal(t, outputs(t, results[1]), []any{})

	results = call(t, h, "explode", rec(t, n{3}), rec(t, n{0}))
	equal(t, outputs(t, results[0]), []any{jsonOf(t, `{"i":0}`), jsonOf(t, `{"i":1}`), jsonOf(t, `{"i":2}`)})
	equal(t, outputs(t, results[1]), []any{})

	// Outputs are compact JSON, without HTML escaping.
	results = call(t, h, "html", rec(t, map[string]string{"s": "<a&b>"}))
	equal(t, string(results[0].Outputs[0]), `{"s":"<a&b>"}`)
}

func TestBytesFunctionsSeeAndReturnRawBytes(t *testing.T) {
	h := mustHandler(t,
		MapBytes("upper", func(b []byte) ([]byte, error) { return []byte(strings.ToUpper(string(b))), nil }),
		MapBytes("empty", func(b []byte) ([]byte, error) { return nil, nil }),
		FilterBytes("short", func(b []byte) (bool, error) { return len(b) < 4, nil }),
		FlatMapBytes("split", func(b []byte) ([][]byte, error) {
			parts := strings.Split(string(b), ",")
			out := make([][]byte, len(parts))
			for i, p := range parts {
				out[i] = []byte(p)
			}
			return out, nil
		}),
	)
	equal(t, call(t, h, "upper", &pb.Record{Value: []byte("not json")})[0].Outputs, [][]byte{[]byte("NOT JSON")})
	equal(t, call(t, h, "empty", &pb.Record{Value: []byte("x")})[0].Outputs, [][]byte{{}})
	results := call(t, h, "short", &pb.Record{Value: []byte("abc")}, &pb.Record{Value: []byte("abcd")})
	equal(t, results[0].Outputs, [][]byte{[]byte("abc")})
	equal(t, len(results[1].Outputs), 0)
	equal(t, call(t, h, "split", &pb.Record{Value: []byte("a,b")})[0].Outputs, [][]byte{[]byte("a"), []byte("b")})
}

type lookupError struct{ id int64 }

func (e *lookupError) Error() string { return fmt.Sprintf("no customer for order %d", e.id) }

func TestAFailingRecordNeverFailsItsBatch(t *testing.T) {
	unavailable := errors.New("pricing service unavailable")
	h := mustHandler(t, Map("strict", func(o order) (order, error) {
		switch {
		case o.Price < 0:
			return o, errors.New("price must be positive")
		case o.Price == 0:
			return o, fmt.Errorf("order %d: %w", o.ID, Transient(unavailable))
		case o.Price == 1:
			return o, Permanent(Transient(unavailable)) // the outermost mark wins
		case o.Price == 2:
			return o, &lookupError{o.ID}
		case o.Price == 3:
			return o, errors.New("first line\nsecond line\n")
		}
		return o, nil
	}))
	results := call(t, h, "strict",
		rec(t, order{ID: 1, Price: 5}), rec(t, order{ID: 2, Price: -1}), rec(t, order{ID: 3, Price: 0}),
		rec(t, order{ID: 4, Price: 1}), rec(t, order{ID: 5, Price: 2}), rec(t, order{ID: 6, Price: 3}))
	equal(t, outputs(t, results[0]), []any{jsonOf(t, `{"id":1,"price":5}`)})

	bad := errorOf(t, results[1], pb.ErrorClass_ERROR_CLASS_PERMANENT)
	equal(t, bad.Message, "price must be positive")
	if !strings.Contains(bad.Traceback, "price must be positive") || !strings.Contains(bad.Traceback, "*errors.errorString") {
		t.Errorf("traceback: %q", bad.Traceback)
	}
	flaky := errorOf(t, results[2], pb.ErrorClass_ERROR_CLASS_TRANSIENT)
	equal(t, flaky.Message, "order 3: pricing service unavailable")
	if !strings.Contains(flaky.Traceback, "error chain: *fmt.wrapError -> *headwater.TransientError -> *errors.errorString") {
		t.Errorf("traceback: %q", flaky.Traceback)
	}
	errorOf(t, results[3], pb.ErrorClass_ERROR_CLASS_PERMANENT)
	typed := errorOf(t, results[4], pb.ErrorClass_ERROR_CLASS_PERMANENT)
	equal(t, typed.Message, "no customer for order 5")
	if !strings.Contains(typed.Traceback, "*headwater.lookupError") {
		t.Errorf("traceback: %q", typed.Traceback)
	}
	multi := errorOf(t, results[5], pb.ErrorClass_ERROR_CLASS_PERMANENT)
	equal(t, multi.Message, "first line second line")
	if !strings.Contains(multi.Traceback, "first line\nsecond line") {
		t.Errorf("traceback keeps the lines: %q", multi.Traceback)
	}
}

func TestErrorMarks(t *testing.T) {
	base := errors.New("x")
	if Transient(nil) != nil || Permanent(nil) != nil {
		t.Fatal("marking nil must stay nil")
	}
	if IsTransient(base) || !IsTransient(Transient(base)) || IsTransient(Permanent(Transient(base))) {
		t.Fatal("IsTransient")
	}
	if !IsTransient(fmt.Errorf("wrapped: %w", Transient(base))) || !IsTransient(errors.Join(base, Transient(base))) {
		t.Fatal("IsTransient through wrapping")
	}
	var te *TransientError
	if !errors.As(fmt.Errorf("w: %w", Transient(base)), &te) || te.Err != base || !errors.Is(te, base) {
		t.Fatal("errors.As finds the TransientError, which unwraps to its cause")
	}
	equal(t, Transient(base).Error(), "x")
	equal(t, Permanent(base).Error(), "x")
}

func TestAPanicFailsItsRecordWithTheValueAndStack(t *testing.T) {
	h := mustHandler(t,
		Map("fragile", func(o order) (order, error) {
			if o.ID == 2 {
				var items []int
				_ = items[o.ID] // index out of range
			}
			if o.ID == 3 {
				panic(Transient(errors.New("panicking is never transient")))
			}
			if o.ID == 4 {
				panic("multi\nline")
			}
			return o, nil
		}),
		FlatMap("nilmap", func(o order) ([]int, error) {
			var m map[string]int
			//lint:ignore SA5000 the panic is the point
			m["x"] = 1
			return nil, nil
		}),
	)
	results := call(t, h, "fragile", rec(t, order{ID: 1}), rec(t, order{ID: 2}), rec(t, order{ID: 3}), rec(t, order{ID: 4}))
	outputs(t, results[0])
	p := errorOf(t, results[1], pb.ErrorClass_ERROR_CLASS_PERMANENT)
	equal(t, p.Message, "panic: runtime error: index out of range [2] with length 0")
	for _, want := range []string{"panic: runtime error: index out of range", "[recovered]", "goroutine ", "handler_test.go", "TestAPanicFailsItsRecord"} {
		if !strings.Contains(p.Traceback, want) {
			t.Errorf("traceback lacks %q:\n%s", want, p.Traceback)
		}
	}
	equal(t, errorOf(t, results[2], pb.ErrorClass_ERROR_CLASS_PERMANENT).Message, "panic: panicking is never transient")
	equal(t, errorOf(t, results[3], pb.ErrorClass_ERROR_CLASS_PERMANENT).Message, "panic: multi line")
	equal(t, errorOf(t, call(t, h, "nilmap", rec(t, order{}))[0], pb.ErrorClass_ERROR_CLASS_PERMANENT).Message,
		"panic: assignment to entry in nil map")
}

func TestGoexitFailsItsRecordAndTheBatchGoesOn(t *testing.T) {
	h := mustHandler(t, Map("quitter", func(o order) (order, error) {
		if o.ID == 2 {
			runtime.Goexit()
		}
		return o, nil
	}))
	results := call(t, h, "quitter", rec(t, order{ID: 1}), rec(t, order{ID: 2}), rec(t, order{ID: 3}))
	outputs(t, results[0])
	if m := errorOf(t, results[1], pb.ErrorClass_ERROR_CLASS_PERMANENT).Message; !strings.Contains(m, "runtime.Goexit") {
		t.Errorf("message: %q", m)
	}
	equal(t, outputs(t, results[2]), []any{jsonOf(t, `{"id":3,"price":0}`)})
}

func TestBadInputsAndOutputsArePermanentErrors(t *testing.T) {
	h := mustHandler(t,
		Map("typed", func(o order) (order, error) { return o, nil }),
		Map("pointer", func(o *order) (*order, error) { return o, nil }),
		Map("unencodable", func(o order) (any, error) { return make(chan int), nil }),
		FlatMap("half", func(o order) ([]any, error) { return []any{1, func() {}}, nil }),
	)
	results := call(t, h, "typed",
		&pb.Record{Value: []byte(`{"id": 1, "price": "cheap"}`)},
		&pb.Record{Value: []byte(`{not json`)},
		&pb.Record{},
		&pb.Record{Value: []byte(`[1, 2]`)},
	)
	equal(t, errorOf(t, results[0], pb.ErrorClass_ERROR_CLASS_PERMANENT).Message,
		"json: cannot unmarshal string into Go struct field order.price of type float64 (decoding into headwater.order)")
	equal(t, errorOf(t, results[1], pb.ErrorClass_ERROR_CLASS_PERMANENT).Message,
		"input is not valid JSON: invalid character 'n' looking for beginning of object key string (decoding into headwater.order)")
	equal(t, errorOf(t, results[2], pb.ErrorClass_ERROR_CLASS_PERMANENT).Message,
		"input is not valid JSON: unexpected end of JSON input (decoding into headwater.order)")
	if m := errorOf(t, results[3], pb.ErrorClass_ERROR_CLASS_PERMANENT).Message; !strings.HasSuffix(m, "(decoding into headwater.order)") {
		t.Errorf("message: %q", m)
	}
	if tb := results[0].Error.Traceback; tb == "" {
		t.Error("a decode failure has a traceback too")
	}
	m := errorOf(t, call(t, h, "pointer", &pb.Record{Value: []byte(`"x"`)})[0], pb.ErrorClass_ERROR_CLASS_PERMANENT).Message
	equal(t, m, "json: cannot unmarshal string into Go value of type headwater.order (decoding into *headwater.order)")
	equal(t, errorOf(t, call(t, h, "unencodable", rec(t, order{}))[0], pb.ErrorClass_ERROR_CLASS_PERMANENT).Message,
		"result cannot be encoded as JSON: json: unsupported type: chan int")
	equal(t, errorOf(t, call(t, h, "half", rec(t, order{}))[0], pb.ErrorClass_ERROR_CLASS_PERMANENT).Message,
		"result cannot be encoded as JSON: json: unsupported type: func()")

	for _, r := range call(t, h, "nope", rec(t, order{}), rec(t, order{})) {
		equal(t, errorOf(t, r, pb.ErrorClass_ERROR_CLASS_PERMANENT).Message,
			"unknown function 'nope'; this worker has: typed, pointer, unencodable, half")
	}
	equal(t, len(call(t, h, "typed")), 0)
}

func TestConcurrentBatchesGetTheirOwnResults(t *testing.T) {
	h := mustHandler(t, Map("square", func(r struct{ N int }) (map[string]int, error) {
		if r.N%7 == 0 {
			return nil, Transient(fmt.Errorf("seven divides %d", r.N))
		}
		return map[string]int{"sq": r.N * r.N}, nil
	}))
	var wg sync.WaitGroup
	for b := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var records []*pb.Record
			for i := range 50 {
				records = append(records, &pb.Record{Value: fmt.Appendf(nil, `{"N": %d}`, b*50+i)})
			}
			resp := h.Process(&pb.BatchRequest{BatchId: uint64(b), Function: "square", Records: records})
			if resp.BatchId != uint64(b) || len(resp.Results) != 50 {
				t.Errorf("batch %d: id %d, %d results", b, resp.BatchId, len(resp.Results))
				return
			}
			for i, r := range resp.Results {
				n := b*50 + i
				if n%7 == 0 {
					if r.Error == nil || r.Error.Class != pb.ErrorClass_ERROR_CLASS_TRANSIENT {
						t.Errorf("record %d: %v", n, r)
					}
				} else if string(r.Outputs[0]) != fmt.Sprintf(`{"sq":%d}`, n*n) {
					t.Errorf("record %d: %q", n, r.Outputs[0])
				}
			}
		}()
	}
	wg.Wait()
}

func TestRegistrationProblemsAreReported(t *testing.T) {
	ok := Map("a", func(o order) (order, error) { return o, nil })
	//lint:ignore U1000 a type with no exported fields is the point
	type hidden struct{ n int }
	cases := []struct {
		fns  []Function
		want string
	}{
		{nil, "no functions are registered"},
		{[]Function{ok, Filter("a", func(o order) (bool, error) { return true, nil })}, `two functions are named "a"`},
		{[]Function{Map[order, order]("", nil)}, `map function "": the function is nil`},
		{[]Function{Map("", func(o order) (order, error) { return o, nil })}, "a function has no name"},
		{[]Function{{}}, "a zero Function was registered"},
		{[]Function{WindowAggregate[order, []float64, float64]("agg", nil)}, `window_aggregate function "agg": the function is nil`},
		{[]Function{KeyedProcess("k", func(*KeyedContext[hidden], order) error { return nil })},
			`keyed_process function "k": its state type headwater.hidden has no exported fields`},
		{[]Function{Map("c", func(o order) (chan int, error) { return nil, nil })}, "its output type chan int cannot be encoded as JSON"},
	}
	for _, c := range cases {
		_, err := handler(c.fns)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("want an error containing %q, got %v", c.want, err)
		}
	}
	// Types JSON handles on their own terms are fine, unexported fields and all.
	if _, err := handler([]Function{Map("raw", func(r json.RawMessage) (json.RawMessage, error) { return r, nil })}); err != nil {
		t.Error(err)
	}
	equal(t, ok.Name(), "a")
	equal(t, ok.Kind(), "map")
}
