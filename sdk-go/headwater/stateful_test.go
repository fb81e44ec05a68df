package headwater

import (
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"testing"

	pb "github.com/headwater-streaming/headwater/sdk-go/internal/pb/udfv1"
)

type amount struct {
	Amount int `json:"amount"`
}

func ptr[T any](v T) *T { return &v }

func TestKeyedProcessReadsAndReturnsStateAndTimers(t *testing.T) {
	type total struct {
		Sum int `json:"sum"`
	}
	var sawZeroOnTimer bool
	h := mustHandler(t, KeyedProcess("running_total", func(ctx *KeyedContext[total], a amount) error {
		var shop string
		if err := ctx.DecodeKey(&shop); err != nil {
			return err
		}
		if _, fired := ctx.Timer(); fired {
			sawZeroOnTimer = a == amount{}
			ctx.ClearState()
			ctx.Emit(map[string]any{"shop": shop, "expired": true})
			return nil
		}
		state, _ := ctx.State()
		state.Sum += a.Amount
		ctx.SetState(state)
		ctx.SetTimer(ctx.EventTime() + 1000)
		ctx.Emit(map[string]any{"shop": shop, "total": state.Sum})
		return nil
	}))
	first := call(t, h, "running_total", &pb.Record{Value: []byte(`{"amount":5}`), Key: []byte(`"north"`), EventTime: 100})[0]
	equal(t, outputs(t, first), []any{jsonOf(t, `{"shop":"north","total":5}`)})
	equal(t, string(first.NewState), `{"sum":5}`)
	equal(t, first.Timers, []int64{1100})
	equal(t, first.ClearState, false)

	second := call(t, h, "running_total", &pb.Record{Value: []byte(`{"amount":2}`), Key: []byte(`"north"`), State: first.NewState})[0]
	equal(t, string(second.NewState), `{"sum":7}`)

	// A timer firing: no value, the timer's time; the state is cleared.
	fired := call(t, h, "running_total", &pb.Record{Key: []byte(`"north"`), State: second.NewState, Timer: ptr(int64(1100))})[0]
	equal(t, fired.ClearState, true)
	equal(t, fired.NewState, []byte(nil))
	equal(t, outputs(t, fired), []any{jsonOf(t, `{"shop":"north","expired":true}`)})
	if !sawZeroOnTimer {
		t.Error("a timer call gets the zero record")
	}
}

func TestKeyedStateSetClearAndKeep(t *testing.T) {
	h := mustHandler(t, KeyedProcess("f", func(ctx *KeyedContext[[]string], r struct{ Op string }) error {
		before, had := ctx.State()
		switch r.Op {
		case "set-after-clear":
			ctx.ClearState()
			ctx.SetState([]string{"fresh"})
		case "clear-after-set":
			ctx.SetState([]string{"gone"})
			ctx.ClearState()
			if s, ok := ctx.State(); ok || s != nil {
				return errors.New("cleared state is still there")
			}
		case "read":
			ctx.Emit(map[string]any{"had": had, "state": before, "key": ctx.Key()})
		}
		return nil
	}))
	state := []byte(`["old"]`)
	r := call(t, h, "f", &pb.Record{Value: []byte(`{"Op":"set-after-clear"}`), State: state})[0]
	equal(t, string(r.NewState), `["fresh"]`)
	equal(t, r.ClearState, false)

	r = call(t, h, "f", &pb.Record{Value: []byte(`{"Op":"clear-after-set"}`), State: state})[0]
	equal(t, r.ClearState, true)
	equal(t, r.NewState, []byte(nil))

	// Neither set nor cleared: the state is kept (neither field set).
	r = call(t, h, "f", &pb.Record{Value: []byte(`{"Op":"read"}`), State: state, Key: []byte(`["eu",7]`)})[0]
	equal(t, r.NewState, []byte(nil))
	equal(t, r.ClearState, false)
	equal(t, outputs(t, r), []any{jsonOf(t, `{"had":true,"state":["old"],"key":["eu",7]}`)})

	// No state and no key yet.
	r = call(t, h, "f", &pb.Record{Value: []byte(`{"Op":"read"}`)})[0]
	equal(t, outputs(t, r), []any{jsonOf(t, `{"had":false,"state":null,"key":null}`)})
}

func TestKeyedFailuresKeepNothing(t *testing.T) {
	h := mustHandler(t, KeyedProcess("f", func(ctx *KeyedContext[int], r struct{ Op string }) error {
		ctx.SetState(1)
		ctx.SetTimer(5)
		ctx.Emit("partial")
		switch r.Op {
		case "error":
			return Transient(errors.New("store unavailable"))
		case "emit":
			ctx.Emit(func() {})
		case "panic":
			panic("boom")
		}
		return nil
	}))
	results := call(t, h, "f",
		&pb.Record{Value: []byte(`{"Op":"error"}`)},
		&pb.Record{Value: []byte(`{"Op":"emit"}`)},
		&pb.Record{Value: []byte(`{"Op":"panic"}`)},
		&pb.Record{Value: []byte(`{"Op":""}`), State: []byte(`"not an int"`)},
		&pb.Record{Value: []byte(`{"Op":""}`), State: []byte(`{broken`)},
		&pb.Record{Value: []byte(`nope`)},
	)
	equal(t, errorOf(t, results[0], pb.ErrorClass_ERROR_CLASS_TRANSIENT).Message, "store unavailable")
	equal(t, errorOf(t, results[1], pb.ErrorClass_ERROR_CLASS_PERMANENT).Message,
		"result cannot be encoded as JSON: json: unsupported type: func()")
	equal(t, errorOf(t, results[2], pb.ErrorClass_ERROR_CLASS_PERMANENT).Message, "panic: boom")
	equal(t, errorOf(t, results[3], pb.ErrorClass_ERROR_CLASS_PERMANENT).Message,
		"state: json: cannot unmarshal string into Go value of type int (decoding into int)")
	if m := errorOf(t, results[4], pb.ErrorClass_ERROR_CLASS_PERMANENT).Message; !strings.HasPrefix(m, "state is not valid JSON: ") {
		t.Errorf("message: %q", m)
	}
	if m := errorOf(t, results[5], pb.ErrorClass_ERROR_CLASS_PERMANENT).Message; !strings.HasPrefix(m, "input is not valid JSON: ") {
		t.Errorf("message: %q", m)
	}
}

// spread collects values and returns their spread (max - min).
type spread struct{}

func (spread) Create() []float64 { return []float64{} }

func (spread) Add(acc []float64, o order) ([]float64, error) {
	if o.Price < 0 {
		return acc, Transient(errors.New("negative price"))
	}
	return append(acc, o.Price), nil
}

func (spread) Merge(a, b []float64) ([]float64, error) { return append(a, b...), nil }

func (spread) Result(acc []float64) (float64, error) {
	if len(acc) == 0 {
		return 0, errors.New("no values")
	}
	return slices.Max(acc) - slices.Min(acc), nil
}

func TestWindowAggregateCreateAddMergeResult(t *testing.T) {
	h := mustHandler(t, WindowAggregate[order, []float64, float64]("spread", spread{}))
	op := func(op pb.AggregateOp, r *pb.Record) *pb.RecordResult {
		t.Helper()
		resp := h.Process(&pb.BatchRequest{Function: "spread", AggregateOp: op, Records: []*pb.Record{r}})
		return resp.Results[0]
	}
	empty := op(pb.AggregateOp_AGGREGATE_OP_CREATE, &pb.Record{}).Accumulator
	equal(t, string(empty), `[]`)
	a := op(pb.AggregateOp_AGGREGATE_OP_ADD, &pb.Record{Value: []byte(`{"price":3}`), Accumulators: [][]byte{empty}}).Accumulator
	b := op(pb.AggregateOp_AGGREGATE_OP_ADD, &pb.Record{Value: []byte(`{"price":10}`), Accumulators: [][]byte{empty}}).Accumulator
	merged := op(pb.AggregateOp_AGGREGATE_OP_MERGE, &pb.Record{Accumulators: [][]byte{a, b}}).Accumulator
	equal(t, string(merged), `[3,10]`)
	result := op(pb.AggregateOp_AGGREGATE_OP_RESULT, &pb.Record{Accumulators: [][]byte{merged}})
	equal(t, outputs(t, result), []any{7.0})
	equal(t, result.Accumulator, []byte(nil))

	// ADD of several records at once, from Create() when no accumulator is given.
	folded := op(pb.AggregateOp_AGGREGATE_OP_ADD, &pb.Record{Values: [][]byte{
		[]byte(`{"price":4}`), []byte(`{"price":9}`), []byte(`{"price":1}`),
	}})
	equal(t, string(folded.Accumulator), `[4,9,1]`)

	bad := op(pb.AggregateOp_AGGREGATE_OP_MERGE, &pb.Record{Accumulators: [][]byte{a}})
	equal(t, errorOf(t, bad, pb.ErrorClass_ERROR_CLASS_PERMANENT).Message,
		"bad window-aggregate request: op AGGREGATE_OP_MERGE with 1 accumulator(s)")
	bad = op(pb.AggregateOp_AGGREGATE_OP_UNSPECIFIED, &pb.Record{})
	equal(t, errorOf(t, bad, pb.ErrorClass_ERROR_CLASS_PERMANENT).Message,
		"bad window-aggregate request: op AGGREGATE_OP_UNSPECIFIED with 0 accumulator(s)")
	flaky := op(pb.AggregateOp_AGGREGATE_OP_ADD, &pb.Record{Values: [][]byte{[]byte(`{"price":1}`), []byte(`{"price":-1}`)}})
	equal(t, errorOf(t, flaky, pb.ErrorClass_ERROR_CLASS_TRANSIENT).Message, "negative price")
	noValues := op(pb.AggregateOp_AGGREGATE_OP_RESULT, &pb.Record{Accumulators: [][]byte{empty}})
	equal(t, errorOf(t, noValues, pb.ErrorClass_ERROR_CLASS_PERMANENT).Message, "no values")
	broken := op(pb.AggregateOp_AGGREGATE_OP_RESULT, &pb.Record{Accumulators: [][]byte{[]byte(`{"x":1}`)}})
	equal(t, errorOf(t, broken, pb.ErrorClass_ERROR_CLASS_PERMANENT).Message,
		"accumulator: json: cannot unmarshal object into Go value of type []float64 (decoding into []float64)")
}

func TestWindowAggregateWithStructAccumulator(t *testing.T) {
	type acc struct {
		N     int     `json:"n"`
		Total float64 `json:"total"`
	}
	h := mustHandler(t, WindowAggregate[order, acc, map[string]float64]("avg", avg[acc]{
		add:    func(a acc, o order) acc { return acc{a.N + 1, a.Total + o.Price} },
		merge:  func(a, b acc) acc { return acc{a.N + b.N, a.Total + b.Total} },
		result: func(a acc) map[string]float64 { return map[string]float64{"avg": a.Total / float64(a.N)} },
	}))
	resp := h.Process(&pb.BatchRequest{Function: "avg", AggregateOp: pb.AggregateOp_AGGREGATE_OP_ADD, Records: []*pb.Record{
		{Values: [][]byte{[]byte(`{"price":2}`), []byte(`{"price":4}`)}},
		{Value: []byte(`{"price":9}`), Accumulators: [][]byte{[]byte(`{"n":1,"total":1}`)}},
	}})
	equal(t, string(resp.Results[0].Accumulator), `{"n":2,"total":6}`)
	equal(t, string(resp.Results[1].Accumulator), `{"n":2,"total":10}`)
	resp = h.Process(&pb.BatchRequest{Function: "avg", AggregateOp: pb.AggregateOp_AGGREGATE_OP_RESULT, Records: []*pb.Record{
		{Accumulators: [][]byte{resp.Results[0].Accumulator}},
	}})
	var out map[string]float64
	if err := json.Unmarshal(resp.Results[0].Outputs[0], &out); err != nil || out["avg"] != 3 {
		t.Fatalf("result %q: %v", resp.Results[0].Outputs, err)
	}
}

type avg[A any] struct {
	add    func(A, order) A
	merge  func(A, A) A
	result func(A) map[string]float64
}

func (g avg[A]) Create() A                              { var zero A; return zero }
func (g avg[A]) Add(a A, o order) (A, error)            { return g.add(a, o), nil }
func (g avg[A]) Merge(a, b A) (A, error)                { return g.merge(a, b), nil }
func (g avg[A]) Result(a A) (map[string]float64, error) { return g.result(a), nil }
