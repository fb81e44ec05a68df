package headwater

import (
	"encoding/json"

	pb "github.com/headwater-streaming/headwater/sdk-go/internal/pb/udfv1"
)

// KeyedContext is what a keyed process function gets with each record: the record's key,
// event time, the key's state (of type S, stored as JSON by the host), timers and the
// outputs. It is valid only during the call; the worker keeps nothing between records (the
// host persists the state exactly once, Stateful Functions style).
type KeyedContext[S any] struct {
	key       json.RawMessage
	eventTime int64
	timer     int64
	fired     bool

	state    S
	hasState bool
	changed  bool
	cleared  bool

	timers  []int64
	outputs [][]byte
	emitErr error
}

// Key is the record's key as JSON (e.g. `"north"`, or `["eu", 7]` for a key of several
// fields); nil when the record has none.
func (c *KeyedContext[S]) Key() json.RawMessage { return c.key }

// DecodeKey decodes the key into v (a pointer), as json.Unmarshal does; an absent key is
// null, which leaves v unchanged.
func (c *KeyedContext[S]) DecodeKey(v any) error {
	if len(c.key) == 0 {
		return json.Unmarshal([]byte("null"), v)
	}
	return json.Unmarshal(c.key, v)
}

// EventTime is the record's event time, in ms since the Unix epoch.
func (c *KeyedContext[S]) EventTime() int64 { return c.eventTime }

// Timer reports whether this call is a timer that fired rather than a record, and the
// event time it was set for. When it is, the function's record argument is In's zero value.
func (c *KeyedContext[S]) Timer() (at int64, fired bool) { return c.timer, c.fired }

// State is the key's current state: what was stored last for this key, or what this call
// set; ok is false when the key has no state (at first, or after [KeyedContext.ClearState]).
func (c *KeyedContext[S]) State() (state S, ok bool) { return c.state, c.hasState }

// SetState stores a new state for the key (encoded as JSON when the function returns).
func (c *KeyedContext[S]) SetState(state S) {
	c.state, c.hasState = state, true
	c.changed, c.cleared = true, false
}

// ClearState deletes the key's state.
func (c *KeyedContext[S]) ClearState() {
	var zero S
	c.state, c.hasState = zero, false
	c.changed, c.cleared = false, true
}

// SetTimer calls the function again for this key, with [KeyedContext.Timer] set, when the
// watermark passes at (event time, ms since the epoch).
func (c *KeyedContext[S]) SetTimer(at int64) { c.timers = append(c.timers, at) }

// Emit outputs a record, encoded as JSON now (so changing v afterwards changes nothing). A
// value that cannot be encoded fails the call's record.
func (c *KeyedContext[S]) Emit(v any) {
	b, err := encode(v, "result")
	if err != nil {
		if c.emitErr == nil {
			c.emitErr = err
		}
		return
	}
	c.outputs = append(c.outputs, b)
}

// KeyedProcess makes a keyed process function: it runs after a key_by, gets each record
// (decoded into In) with its key's state S, and emits any number of outputs with
// [KeyedContext.Emit]. It can set and clear the state and set timers; when a timer fires,
// fn is called with In's zero value and [KeyedContext.Timer] reports the timer.
//
//	headwater.KeyedProcess("sessionize", func(ctx *headwater.KeyedContext[int], c Click) error {
//		if at, fired := ctx.Timer(); fired {
//			var user string
//			if err := ctx.DecodeKey(&user); err != nil {
//				return err
//			}
//			n, _ := ctx.State()
//			ctx.Emit(Session{User: user, Clicks: n, End: at})
//			ctx.ClearState()
//			return nil
//		}
//		n, _ := ctx.State()
//		ctx.SetState(n + 1)
//		ctx.SetTimer(ctx.EventTime() + 60_000)
//		return nil
//	})
//
// A call that fails (an error, a panic, a record or state that does not decode) changes
// nothing: no outputs, state or timers are kept.
func KeyedProcess[In, S any](name string, fn func(ctx *KeyedContext[S], record In) error) Function {
	return newFunction(name, pb.FunctionKind_FUNCTION_KIND_KEYED_PROCESS, formatJSON, fn,
		func(_ pb.AggregateOp, rec *pb.Record, res *pb.RecordResult) error {
			ctx := &KeyedContext[S]{key: rec.GetKey(), eventTime: rec.GetEventTime()}
			if len(ctx.key) == 0 {
				ctx.key = nil
			}
			if rec.State != nil {
				state, err := decode[S](rec.State, "state")
				if err != nil {
					return err
				}
				ctx.state, ctx.hasState = state, true
			}
			var in In
			if rec.Timer != nil {
				ctx.timer, ctx.fired = rec.GetTimer(), true
			} else {
				var err error
				if in, err = decode[In](rec.GetValue(), "input"); err != nil {
					return err
				}
			}
			if err := fn(ctx, in); err != nil {
				return failure(err)
			}
			if ctx.emitErr != nil {
				return ctx.emitErr
			}
			res.Outputs, res.Timers = ctx.outputs, ctx.timers
			switch {
			case ctx.cleared:
				res.ClearState = true
			case ctx.changed:
				b, err := encode(ctx.state, "state")
				if err != nil {
					return err
				}
				res.NewState = b
			}
			return nil
		}, role[In]("input type"), role[S]("state type"))
}
