package wasm

import (
	"encoding/json"
	"fmt"
)

// Result is what one record's call returned, as the host gets it: its outputs (for a
// filter, the record or nothing), or its error.
type Result struct {
	Outputs   []json.RawMessage
	Err       string
	Transient bool
}

// KeyedCall is one call of a keyed function for [CallKeyed].
type KeyedCall struct {
	Key    json.RawMessage
	Record json.RawMessage // nil for a timer
	Time   int64
	Timer  *int64
	State  json.RawMessage // nil: no state
}

// KeyedResult is what a keyed call returned: outputs, the state ("keep", "clear" or "set"
// with NewState), timers, or its error.
type KeyedResult struct {
	Result
	StateOp  string
	NewState json.RawMessage
	Timers   []int64
}

// Call runs function name on records (JSON) through the module's encoding, natively, as the
// host would: for tests.
func Call(name string, records ...json.RawMessage) ([]Result, error) {
	i := index(name)
	if i < 0 {
		return nil, fmt.Errorf("no function %q is registered", name)
	}
	batch := le.AppendUint32(nil, uint32(len(records)))
	for _, r := range records {
		batch = le.AppendUint32(batch, uint32(len(r)))
		batch = append(batch, r...)
	}
	res := callBatch(i, batch)
	if res == nil {
		return nil, fmt.Errorf("function %q is not a map, filter or flat_map", name)
	}
	rd := &reader{b: res, ok: true}
	out := make([]Result, rd.u32())
	for k := range out {
		out[k] = readResult(rd, records[k])
	}
	return out, nil
}

// CallKeyed runs keyed function name on calls through the module's encoding: for tests.
func CallKeyed(name string, calls ...KeyedCall) ([]KeyedResult, error) {
	i := index(name)
	if i < 0 || registry[i].keyed == nil {
		return nil, fmt.Errorf("no keyed function %q is registered", name)
	}
	batch := le.AppendUint32(nil, uint32(len(calls)))
	for _, c := range calls {
		var flags byte
		var timer int64
		if c.Record != nil {
			flags |= keyedHasValue
		}
		if c.State != nil {
			flags |= keyedHasState
		}
		if c.Timer != nil {
			flags |= keyedTimer
			timer = *c.Timer
		}
		batch = append(batch, flags)
		batch = le.AppendUint64(batch, uint64(c.Time))
		batch = le.AppendUint64(batch, uint64(timer))
		for _, b := range [][]byte{c.Key, c.Record, c.State} {
			batch = le.AppendUint32(batch, uint32(len(b)))
			batch = append(batch, b...)
		}
	}
	res := callBatch(i, batch)
	rd := &reader{b: res, ok: res != nil}
	out := make([]KeyedResult, rd.u32())
	for k := range out {
		r := readResult(rd, calls[k].Record)
		out[k].Result = r
		if r.Err != "" {
			continue
		}
		switch rd.take(1)[0] {
		case 0:
			out[k].StateOp = "keep"
		case 1:
			out[k].StateOp, out[k].NewState = "set", rd.bytes()
		default:
			out[k].StateOp = "clear"
		}
		for range rd.u32() {
			out[k].Timers = append(out[k].Timers, rd.i64())
		}
	}
	return out, nil
}

func readResult(rd *reader, input json.RawMessage) Result {
	status := rd.take(1)
	if status == nil {
		return Result{Err: "truncated results"}
	}
	if status[0] != 0 {
		msg := string(rd.bytes())
		rd.bytes() // the detail
		return Result{Err: msg, Transient: status[0] == 1}
	}
	var r Result
	for range rd.u32() {
		n := rd.u32()
		if n == unchanged {
			r.Outputs = append(r.Outputs, input)
			continue
		}
		r.Outputs = append(r.Outputs, rd.take(int(n)))
	}
	return r
}
