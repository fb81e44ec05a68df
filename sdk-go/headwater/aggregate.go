package headwater

import (
	pb "github.com/headwater-streaming/headwater/sdk-go/internal/pb/udfv1"
	"github.com/headwater-streaming/headwater/sdk-go/internal/worker"
)

// Aggregator is a user-defined window aggregate over records of type In, with accumulators
// of type Acc (stored as JSON in the host's state, so give Acc exported fields) and a result
// of type Out. The host folds a window's records into its accumulator, merges accumulators
// when session windows merge, and asks for the result when the window fires. The worker
// keeps nothing: every call gets its accumulators from the host.
type Aggregator[In, Acc, Out any] interface {
	// Create returns an empty accumulator.
	Create() Acc
	// Add folds one record into acc and returns the new accumulator.
	Add(acc Acc, record In) (Acc, error)
	// Merge combines two accumulators (session windows that merge).
	Merge(a, b Acc) (Acc, error)
	// Result is the window's aggregate value.
	Result(acc Acc) (Out, error)
}

// WindowAggregate makes a window aggregate function, used in a window's aggregates as
// `udf(NAME)` (declared with `kind: window_aggregate`). Type arguments cannot be inferred
// from agg's methods, so give them:
//
//	type spread struct{}
//	type minMax struct{ Min, Max float64; N int }
//	func (spread) Create() minMax                            { return minMax{} }
//	func (spread) Add(a minMax, o Order) (minMax, error)     { ... }
//	func (spread) Merge(a, b minMax) (minMax, error)         { ... }
//	func (spread) Result(a minMax) (float64, error)          { return a.Max - a.Min, nil }
//
//	headwater.WindowAggregate[Order, minMax, float64]("spread", spread{})
func WindowAggregate[In, Acc, Out any](name string, agg Aggregator[In, Acc, Out]) Function {
	return newFunction(name, pb.FunctionKind_FUNCTION_KIND_WINDOW_AGGREGATE, formatJSON, agg,
		func(op pb.AggregateOp, rec *pb.Record, res *pb.RecordResult) error {
			accs := make([]Acc, len(rec.GetAccumulators()))
			for i, raw := range rec.GetAccumulators() {
				var err error
				if accs[i], err = decode[Acc](raw, "accumulator"); err != nil {
					return err
				}
			}
			var (
				acc Acc
				err error
			)
			switch {
			case op == pb.AggregateOp_AGGREGATE_OP_CREATE:
				acc = agg.Create()
			case op == pb.AggregateOp_AGGREGATE_OP_ADD && len(accs) <= 1:
				// Folds every record of `values` (or the one in `value`) into the
				// accumulator; no accumulator yet means start from Create().
				if len(accs) == 1 {
					acc = accs[0]
				} else {
					acc = agg.Create()
				}
				values := rec.GetValues()
				if len(values) == 0 {
					values = [][]byte{rec.GetValue()}
				}
				for _, raw := range values {
					in, err := decode[In](raw, "input")
					if err != nil {
						return err
					}
					if acc, err = agg.Add(acc, in); err != nil {
						return failure(err)
					}
				}
			case op == pb.AggregateOp_AGGREGATE_OP_MERGE && len(accs) == 2:
				if acc, err = agg.Merge(accs[0], accs[1]); err != nil {
					return failure(err)
				}
			case op == pb.AggregateOp_AGGREGATE_OP_RESULT && len(accs) == 1:
				out, err := agg.Result(accs[0])
				if err != nil {
					return failure(err)
				}
				b, err := encode(out, "result")
				if err != nil {
					return err
				}
				res.Outputs = append(res.Outputs, b)
				return nil
			default:
				return worker.Permanentf("bad window-aggregate request: op %s with %d accumulator(s)", op, len(accs))
			}
			b, err := encode(acc, "accumulator")
			if err != nil {
				return err
			}
			res.Accumulator = b
			return nil
		}, role[In]("input type"), role[Acc]("accumulator type"), role[Out]("output type"))
}
