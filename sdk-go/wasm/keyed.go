package wasm

import "encoding/json"

// KeyedContext is what a keyed process function gets with each record: the record's key,
// event time, the key's state (of type S, stored as JSON by the host), timers and outputs.
// It is valid only during the call; the module keeps nothing between records (the host
// persists the state exactly once).
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

// NewKeyedContext makes a context for calling a keyed function in tests: key (JSON), the
// record's event time, and the key's state (nil: none).
func NewKeyedContext[S any](key json.RawMessage, eventTime int64, state *S) *KeyedContext[S] {
	c := &KeyedContext[S]{key: key, eventTime: eventTime}
	if state != nil {
		c.state, c.hasState = *state, true
	}
	return c
}

// Fire makes the context a timer call for at (in tests).
func (c *KeyedContext[S]) Fire(at int64) *KeyedContext[S] {
	c.timer, c.fired, c.eventTime = at, true, at
	return c
}

// Key is the record's key as JSON (e.g. `"north"`).
func (c *KeyedContext[S]) Key() json.RawMessage { return c.key }

// DecodeKey decodes the key into v (a pointer).
func (c *KeyedContext[S]) DecodeKey(v any) error {
	if len(c.key) == 0 {
		return json.Unmarshal([]byte("null"), v)
	}
	return json.Unmarshal(c.key, v)
}

// EventTime is the record's event time, in ms since the Unix epoch.
func (c *KeyedContext[S]) EventTime() int64 { return c.eventTime }

// Timer reports whether this call is a timer that fired rather than a record, and its time.
// When it is, the function's record argument is In's zero value.
func (c *KeyedContext[S]) Timer() (at int64, fired bool) { return c.timer, c.fired }

// State is the key's current state; ok is false when the key has none.
func (c *KeyedContext[S]) State() (state S, ok bool) { return c.state, c.hasState }

// SetState stores a new state for the key.
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

// SetTimer calls the function again for this key when the watermark passes at.
func (c *KeyedContext[S]) SetTimer(at int64) { c.timers = append(c.timers, at) }

// Emit outputs a record, encoded as JSON now.
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

// Emitted is what the call emitted (in tests).
func (c *KeyedContext[S]) Emitted() [][]byte { return c.outputs }

// Timers are the timers the call set (in tests).
func (c *KeyedContext[S]) Timers() []int64 { return c.timers }

// keyedCall is one keyed call as the batch holds it, and its result.
type keyedCall struct {
	key, value, state []byte
	hasValue          bool
	hasState          bool
	time, timer       int64
	fired             bool

	outputs  [][]byte
	stateOp  byte // 0 keep, 1 set, 2 clear
	newState []byte
	timers   []int64
}

// KeyedProcess makes a keyed process function: it runs after a key_by, gets each record
// (decoded into In) with its key's state S, and emits any number of outputs with
// [KeyedContext.Emit]. When a timer fires, fn gets In's zero value and
// [KeyedContext.Timer] reports the timer. A call that fails changes nothing.
func KeyedProcess[In, S any](name string, fn func(ctx *KeyedContext[S], record In) error) Function {
	return Function{name: name, kind: "keyed_process", keyed: func(call *keyedCall) error {
		ctx := &KeyedContext[S]{key: call.key, eventTime: call.time}
		if call.hasState {
			state, err := decode[S](call.state, "state")
			if err != nil {
				return err
			}
			ctx.state, ctx.hasState = state, true
		}
		var in In
		if call.fired {
			ctx.timer, ctx.fired = call.timer, true
		} else {
			var err error
			if in, err = decode[In](call.value, "record"); err != nil {
				return err
			}
		}
		if err := fn(ctx, in); err != nil {
			return err
		}
		if ctx.emitErr != nil {
			return ctx.emitErr
		}
		call.outputs, call.timers = ctx.outputs, ctx.timers
		switch {
		case ctx.cleared:
			call.stateOp = 2
		case ctx.changed:
			b, err := encode(ctx.state, "state")
			if err != nil {
				return err
			}
			call.stateOp, call.newState = 1, b
		}
		return nil
	}}
}
