package headwater

import (
	"errors"
	"fmt"
	"reflect"

	pb "github.com/headwater-streaming/headwater/sdk-go/internal/pb/udfv1"
	"github.com/headwater-streaming/headwater/sdk-go/internal/worker"
)

// Function is a user-defined function ready to serve: make one with [Map], [Filter],
// [FlatMap], [KeyedProcess], [WindowAggregate] or a Bytes variant, and pass it to [Main]
// (or [Register]). The name is what the pipeline's `function:` refers to.
type Function struct {
	def *worker.Function
	err error // a problem found when it was made; reported when it is served
}

// Name is the function's name.
func (f Function) Name() string {
	if f.def == nil {
		return ""
	}
	return f.def.Name
}

// Kind is the function's kind as the pipeline's `kind:` spells it: "map", "filter",
// "flat_map", "keyed_process" or "window_aggregate".
func (f Function) Kind() string {
	if f.def == nil {
		return ""
	}
	return kindNames[f.def.Kind]
}

var kindNames = map[pb.FunctionKind]string{
	pb.FunctionKind_FUNCTION_KIND_MAP:              "map",
	pb.FunctionKind_FUNCTION_KIND_FILTER:           "filter",
	pb.FunctionKind_FUNCTION_KIND_FLAT_MAP:         "flat_map",
	pb.FunctionKind_FUNCTION_KIND_KEYED_PROCESS:    "keyed_process",
	pb.FunctionKind_FUNCTION_KIND_WINDOW_AGGREGATE: "window_aggregate",
}

type fill = func(op pb.AggregateOp, rec *pb.Record, res *pb.RecordResult) error

const (
	formatJSON  = pb.Format_FORMAT_JSON
	formatBytes = pb.Format_FORMAT_BYTES
)

// newFunction makes a Function; problems (a nil function, a type JSON cannot hold) are kept
// in it and reported when it is registered.
func newFunction(name string, kind pb.FunctionKind, format pb.Format, code any, f fill, types ...typeRole) Function {
	def := &worker.Function{Name: name, Kind: kind, Input: format, Output: format, Fill: f}
	if isNil(code) {
		return Function{def: def, err: fmt.Errorf("%s function %q: the function is nil", kindNames[kind], name)}
	}
	for _, t := range types {
		if err := checkJSON(t.t, t.role); err != nil {
			return Function{def: def, err: fmt.Errorf("%s function %q: %w", kindNames[kind], name, err)}
		}
	}
	return Function{def: def}
}

func isNil(v any) bool {
	rv := reflect.ValueOf(v)
	switch rv.Kind() {
	case reflect.Invalid:
		return true
	case reflect.Func, reflect.Pointer, reflect.Map, reflect.Slice, reflect.Interface, reflect.Chan:
		return rv.IsNil()
	}
	return false
}

type typeRole struct {
	t    reflect.Type
	role string
}

func role[T any](name string) typeRole { return typeRole{reflect.TypeFor[T](), name} }

// Map makes a map function: one output record per input record. Records are JSON: the
// input is decoded into In and the result encoded from Out with encoding/json.
//
//	headwater.Map("enrich", func(o Order) (Enriched, error) {
//		return Enriched{Order: o, Revenue: o.Price * o.Quantity}, nil
//	})
//
// A returned error fails the record (see [Transient]); so does a panic, and an input that
// does not decode into In (a permanent error naming In).
func Map[In, Out any](name string, fn func(In) (Out, error)) Function {
	return newFunction(name, pb.FunctionKind_FUNCTION_KIND_MAP, formatJSON, fn,
		func(_ pb.AggregateOp, rec *pb.Record, res *pb.RecordResult) error {
			in, err := decode[In](rec.GetValue(), "input")
			if err != nil {
				return err
			}
			out, err := fn(in)
			if err != nil {
				return failure(err)
			}
			b, err := encode(out, "result")
			if err != nil {
				return err
			}
			res.Outputs = append(res.Outputs, b)
			return nil
		}, role[In]("input type"), role[Out]("output type"))
}

// Filter makes a filter function: return true to keep the record. A kept record is the
// input itself, byte for byte, not a re-encoding of the decoded In.
func Filter[In any](name string, fn func(In) (bool, error)) Function {
	return newFunction(name, pb.FunctionKind_FUNCTION_KIND_FILTER, formatJSON, fn,
		func(_ pb.AggregateOp, rec *pb.Record, res *pb.RecordResult) error {
			in, err := decode[In](rec.GetValue(), "input")
			if err != nil {
				return err
			}
			return keepIf(fn(in))(rec, res)
		}, role[In]("input type"))
}

func keepIf(keep bool, err error) func(*pb.Record, *pb.RecordResult) error {
	return func(rec *pb.Record, res *pb.RecordResult) error {
		if err != nil {
			return failure(err)
		}
		if keep {
			res.Outputs = append(res.Outputs, rec.GetValue())
		}
		return nil
	}
}

// FlatMap makes a flat-map function: any number of output records (none for a nil or
// empty slice) per input record.
func FlatMap[In, Out any](name string, fn func(In) ([]Out, error)) Function {
	return newFunction(name, pb.FunctionKind_FUNCTION_KIND_FLAT_MAP, formatJSON, fn,
		func(_ pb.AggregateOp, rec *pb.Record, res *pb.RecordResult) error {
			in, err := decode[In](rec.GetValue(), "input")
			if err != nil {
				return err
			}
			outs, err := fn(in)
			if err != nil {
				return failure(err)
			}
			for _, out := range outs {
				b, err := encode(out, "result")
				if err != nil {
					return err
				}
				res.Outputs = append(res.Outputs, b)
			}
			return nil
		}, role[In]("input type"), role[Out]("output type"))
}

// MapBytes is [Map] on raw records: fn gets the record's bytes (do not modify them) and
// returns the output's bytes. The function's formats are "bytes".
func MapBytes(name string, fn func([]byte) ([]byte, error)) Function {
	return newFunction(name, pb.FunctionKind_FUNCTION_KIND_MAP, formatBytes, fn,
		func(_ pb.AggregateOp, rec *pb.Record, res *pb.RecordResult) error {
			out, err := fn(rec.GetValue())
			if err != nil {
				return failure(err)
			}
			res.Outputs = append(res.Outputs, nonNil(out))
			return nil
		})
}

// FilterBytes is [Filter] on raw records (do not modify them).
func FilterBytes(name string, fn func([]byte) (bool, error)) Function {
	return newFunction(name, pb.FunctionKind_FUNCTION_KIND_FILTER, formatBytes, fn,
		func(_ pb.AggregateOp, rec *pb.Record, res *pb.RecordResult) error {
			return keepIf(fn(rec.GetValue()))(rec, res)
		})
}

// FlatMapBytes is [FlatMap] on raw records (do not modify them).
func FlatMapBytes(name string, fn func([]byte) ([][]byte, error)) Function {
	return newFunction(name, pb.FunctionKind_FUNCTION_KIND_FLAT_MAP, formatBytes, fn,
		func(_ pb.AggregateOp, rec *pb.Record, res *pb.RecordResult) error {
			outs, err := fn(rec.GetValue())
			if err != nil {
				return failure(err)
			}
			for _, out := range outs {
				res.Outputs = append(res.Outputs, nonNil(out))
			}
			return nil
		})
}

func nonNil(b []byte) []byte {
	if b == nil {
		return []byte{}
	}
	return b
}

// handler checks fns and returns their protocol handler.
func handler(fns []Function) (*worker.Handler, error) {
	var problems []error
	defs := make([]*worker.Function, 0, len(fns))
	for _, f := range fns {
		switch {
		case f.def == nil:
			problems = append(problems, errors.New("a zero Function was registered; make functions with headwater.Map, headwater.Filter and the like"))
		case f.err != nil:
			problems = append(problems, f.err)
		default:
			defs = append(defs, f.def)
		}
	}
	if len(problems) > 0 {
		return nil, errors.Join(problems...)
	}
	if len(defs) == 0 {
		return nil, errors.New("no functions are registered; pass them to headwater.Main, " +
			`e.g. headwater.Main(headwater.Map("enrich", enrich)), or to headwater.Register first`)
	}
	return worker.New(defs)
}
