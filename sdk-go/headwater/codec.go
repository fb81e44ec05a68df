package headwater

import (
	"bytes"
	"encoding"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"sync"

	"github.com/headwater-streaming/headwater/sdk-go/internal/worker"
)

// decode decodes a JSON document into a new T. what names the document in the error
// ("input", "state", "accumulator"); a failure is permanent and names T:
//
//	json: cannot unmarshal string into Go struct field Order.price of type float64 (decoding into main.Order)
func decode[T any](raw []byte, what string) (T, error) {
	var v T
	if err := json.Unmarshal(raw, &v); err != nil {
		return v, decodeFailure(err, what, reflect.TypeFor[T]())
	}
	return v, nil
}

func decodeFailure(err error, what string, t reflect.Type) *worker.Failure {
	var syntax *json.SyntaxError
	switch {
	case errors.As(err, &syntax):
		return worker.Permanentf("%s is not valid JSON: %v (decoding into %s)", what, err, t)
	case what == "input":
		return worker.Permanentf("%v (decoding into %s)", err, t)
	default:
		return worker.Permanentf("%s: %v (decoding into %s)", what, err, t)
	}
}

// encoder is a reusable JSON encoder writing to its own buffer.
type encoder struct {
	buf bytes.Buffer
	enc *json.Encoder
}

var encoders = sync.Pool{New: func() any {
	e := &encoder{}
	e.enc = json.NewEncoder(&e.buf)
	e.enc.SetEscapeHTML(false)
	return e
}}

// encode encodes v as compact JSON, without escaping <, > and & (as Python's json does).
func encode(v any, what string) ([]byte, error) {
	e := encoders.Get().(*encoder)
	defer encoders.Put(e)
	e.buf.Reset()
	if err := e.enc.Encode(v); err != nil {
		return nil, worker.Permanentf("%s cannot be encoded as JSON: %v", what, err)
	}
	return bytes.Clone(bytes.TrimSuffix(e.buf.Bytes(), []byte("\n"))), nil
}

var (
	jsonMarshaler   = reflect.TypeFor[json.Marshaler]()
	jsonUnmarshaler = reflect.TypeFor[json.Unmarshaler]()
	textMarshaler   = reflect.TypeFor[encoding.TextMarshaler]()
	textUnmarshaler = reflect.TypeFor[encoding.TextUnmarshaler]()
)

// checkJSON refuses, at registration, types that encoding/json would silently mangle: a
// struct with fields but none exported (it would be written as {} and read as nothing), and
// types JSON cannot hold at all (channels, functions, complex numbers).
func checkJSON(t reflect.Type, role string) error {
	base := t
	for base.Kind() == reflect.Pointer {
		base = base.Elem()
	}
	for _, m := range []reflect.Type{jsonMarshaler, jsonUnmarshaler, textMarshaler, textUnmarshaler} {
		if base.Implements(m) || reflect.PointerTo(base).Implements(m) {
			return nil
		}
	}
	switch base.Kind() {
	case reflect.Chan, reflect.Func, reflect.Complex64, reflect.Complex128, reflect.UnsafePointer:
		return fmt.Errorf("its %s %s cannot be encoded as JSON", role, t)
	case reflect.Struct:
		if base.NumField() == 0 {
			return nil
		}
		for i := range base.NumField() {
			if f := base.Field(i); f.IsExported() || f.Anonymous {
				return nil
			}
		}
		return fmt.Errorf("its %s %s has no exported fields, so encoding/json would see it as {}; "+
			"export its fields (or give it MarshalJSON and UnmarshalJSON methods)", role, t)
	}
	return nil
}
