package wasm

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
)

// Function is a function ready to register: make one with [Map], [Filter], [FlatMap],
// [KeyedProcess] or a Bytes variant. The name is what the pipeline's `function:` refers to.
type Function struct {
	name    string
	kind    string
	records func(in []byte, out *outputs) error
	keyed   func(call *keyedCall) error
}

// Name is the function's name.
func (f Function) Name() string { return f.name }

// Kind is the function's kind as the pipeline's `kind:` spells it.
func (f Function) Kind() string { return f.kind }

var (
	registry []Function
	// problem is the first registration error; the module reports it to the host, which
	// refuses to start it.
	problem error
)

// Register adds functions to the module; call it from an init function. A problem (a
// duplicate name, a zero Function) is reported when the host loads the module.
func Register(fns ...Function) {
	for _, f := range fns {
		switch {
		case f.name == "":
			problem = errors.Join(problem, errors.New("a Function without a name was registered; make functions with wasm.Map, wasm.Filter and the like"))
		case index(f.name) >= 0:
			problem = errors.Join(problem, fmt.Errorf("function %q is registered twice", f.name))
		default:
			registry = append(registry, f)
		}
	}
}

func index(name string) int {
	for i, f := range registry {
		if f.name == name {
			return i
		}
	}
	return -1
}

// decode decodes a JSON document into a new T; a failure is permanent and names T.
func decode[T any](raw []byte, what string) (T, error) {
	var v T
	if err := json.Unmarshal(raw, &v); err != nil {
		return v, permanentf("%s: %v (decoding into %s)", what, err, reflect.TypeFor[T]())
	}
	return v, nil
}

// encode encodes v as compact JSON, without escaping <, > and &.
func encode(v any, what string) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, permanentf("%s cannot be encoded as JSON: %v", what, err)
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}

// Map makes a map function: one output per record, decoded into In and encoded from Out
// with encoding/json.
func Map[In, Out any](name string, fn func(In) (Out, error)) Function {
	return Function{name: name, kind: "map", records: func(raw []byte, out *outputs) error {
		in, err := decode[In](raw, "record")
		if err != nil {
			return err
		}
		res, err := fn(in)
		if err != nil {
			return err
		}
		b, err := encode(res, "result")
		if err != nil {
			return err
		}
		out.add(b)
		return nil
	}}
}

// Filter makes a filter: return true to keep the record (the input itself, byte for byte).
func Filter[In any](name string, fn func(In) (bool, error)) Function {
	return Function{name: name, kind: "filter", records: func(raw []byte, out *outputs) error {
		in, err := decode[In](raw, "record")
		if err != nil {
			return err
		}
		keep, err := fn(in)
		if err != nil {
			return err
		}
		if keep {
			out.unchanged()
		}
		return nil
	}}
}

// FlatMap makes a flat-map function: any number of outputs per record.
func FlatMap[In, Out any](name string, fn func(In) ([]Out, error)) Function {
	return Function{name: name, kind: "flat_map", records: func(raw []byte, out *outputs) error {
		in, err := decode[In](raw, "record")
		if err != nil {
			return err
		}
		res, err := fn(in)
		if err != nil {
			return err
		}
		for _, r := range res {
			b, err := encode(r, "result")
			if err != nil {
				return err
			}
			out.add(b)
		}
		return nil
	}}
}

// MapBytes is [Map] on the record's JSON text (do not modify it). Returning the input slice
// itself passes the record on unchanged at no cost.
func MapBytes(name string, fn func([]byte) ([]byte, error)) Function {
	return Function{name: name, kind: "map", records: func(raw []byte, out *outputs) error {
		res, err := fn(raw)
		if err != nil {
			return err
		}
		out.addMaybeSame(res, raw)
		return nil
	}}
}

// FilterBytes is [Filter] on the record's JSON text (do not modify it).
func FilterBytes(name string, fn func([]byte) (bool, error)) Function {
	return Function{name: name, kind: "filter", records: func(raw []byte, out *outputs) error {
		keep, err := fn(raw)
		if err != nil {
			return err
		}
		if keep {
			out.unchanged()
		}
		return nil
	}}
}

// FlatMapBytes is [FlatMap] on the record's JSON text: each output must be JSON text.
func FlatMapBytes(name string, fn func([]byte) ([][]byte, error)) Function {
	return Function{name: name, kind: "flat_map", records: func(raw []byte, out *outputs) error {
		res, err := fn(raw)
		if err != nil {
			return err
		}
		for _, r := range res {
			out.addMaybeSame(r, raw)
		}
		return nil
	}}
}
