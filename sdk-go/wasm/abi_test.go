package wasm

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
)

type rec struct {
	N int64 `json:"n"`
}

type sq struct {
	N      int64 `json:"n"`
	Square int64 `json:"square"`
}

func init() {
	Register(
		Map("square", func(r rec) (sq, error) {
			if r.N < 0 {
				return sq{}, Transient(errors.New("negative"))
			}
			if r.N == 13 {
				panic("thirteen")
			}
			return sq{r.N, r.N * r.N}, nil
		}),
		Filter("even", func(r rec) (bool, error) { return r.N%2 == 0, nil }),
		FlatMap("twice", func(r json.RawMessage) ([]json.RawMessage, error) { return []json.RawMessage{r, r}, nil }),
		MapBytes("same", func(b []byte) ([]byte, error) { return b, nil }),
		KeyedProcess("total", func(ctx *KeyedContext[int64], r rec) error {
			sum, _ := ctx.State()
			if at, fired := ctx.Timer(); fired {
				ctx.Emit(map[string]int64{"total": sum, "at": at})
				ctx.ClearState()
				return nil
			}
			ctx.SetState(sum + r.N)
			ctx.SetTimer(ctx.EventTime() + 10)
			return nil
		}),
	)
}

func raw(s string) json.RawMessage { return json.RawMessage(s) }

func TestRecordsGoThroughTheEncodingWithTheirErrors(t *testing.T) {
	out, err := Call("square", raw(`{"n":3}`), raw(`{"n":-1}`), raw(`{"n":13}`), raw(`{"n":"x"}`))
	if err != nil {
		t.Fatal(err)
	}
	if string(out[0].Outputs[0]) != `{"n":3,"square":9}` {
		t.Errorf("square: %s", out[0].Outputs[0])
	}
	if out[1].Err != "negative" || !out[1].Transient {
		t.Errorf("transient: %+v", out[1])
	}
	if out[2].Err != "panic: thirteen" || out[2].Transient {
		t.Errorf("panic: %+v", out[2])
	}
	if !strings.Contains(out[3].Err, "decoding into wasm.rec") {
		t.Errorf("decode: %+v", out[3])
	}
	out, _ = Call("even", raw(`{"n":2}`), raw(`{"n":3}`))
	if len(out[0].Outputs) != 1 || string(out[0].Outputs[0]) != `{"n":2}` || len(out[1].Outputs) != 0 {
		t.Errorf("filter: %+v", out)
	}
	out, _ = Call("twice", raw(`[1]`))
	if len(out[0].Outputs) != 2 {
		t.Errorf("flat_map: %+v", out)
	}
	out, _ = Call("same", raw(`{"a":1}`))
	if string(out[0].Outputs[0]) != `{"a":1}` {
		t.Errorf("same: %+v", out)
	}
}

func TestKeyedCallsThreadStateAndTimers(t *testing.T) {
	at := int64(20)
	out, err := CallKeyed("total",
		KeyedCall{Key: raw(`"k"`), Record: raw(`{"n":5}`), Time: 10, State: raw(`2`)},
		KeyedCall{Key: raw(`"k"`), Time: 20, Timer: &at, State: raw(`7`)},
	)
	if err != nil {
		t.Fatal(err)
	}
	if out[0].StateOp != "set" || string(out[0].NewState) != "7" || len(out[0].Timers) != 1 || out[0].Timers[0] != 20 {
		t.Errorf("record: %+v", out[0])
	}
	if out[1].StateOp != "clear" || string(out[1].Outputs[0]) != `{"at":20,"total":7}` {
		t.Errorf("timer: %+v %s", out[1], out[1].Outputs)
	}
}

func TestTheDescriptionListsFunctionsAndProblems(t *testing.T) {
	var doc struct {
		ABI       int `json:"abi"`
		Functions []struct{ Name, Kind string }
		Error     string `json:"error"`
	}
	if err := json.Unmarshal(describe(), &doc); err != nil {
		t.Fatal(err)
	}
	if doc.ABI != 1 || len(doc.Functions) != 5 || doc.Functions[4].Kind != "keyed_process" || doc.Error != "" {
		t.Errorf("%+v", doc)
	}
	Register(Map("square", func(r rec) (rec, error) { return r, nil }))
	defer func() { problem = nil }()
	if err := json.Unmarshal(describe(), &doc); err != nil || !strings.Contains(doc.Error, `"square" is registered twice`) {
		t.Errorf("%v %+v", err, doc)
	}
	if callBatch(0, []byte{1, 0, 0, 0}) != nil || callBatch(9, []byte{0, 0, 0, 0}) != nil {
		t.Error("a truncated batch or an unknown function must give no results")
	}
}
