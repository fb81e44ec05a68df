package wasm

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"runtime/debug"
	"strings"
)

// abiVersion is the version of the host–module ABI (docs/wasm-abi.md) this package speaks.
const abiVersion = 1

// unchanged as an output's length means "the input record, unchanged".
const unchanged = ^uint32(0)

const (
	keyedHasValue = 1
	keyedHasState = 2
	keyedTimer    = 4
)

var le = binary.LittleEndian

// outputs appends one record's outputs to the results.
type outputs struct {
	buf   []byte
	count uint32
}

func (o *outputs) add(b []byte) {
	o.buf = le.AppendUint32(o.buf, uint32(len(b)))
	o.buf = append(o.buf, b...)
	o.count++
}

func (o *outputs) unchanged() {
	o.buf = le.AppendUint32(o.buf, unchanged)
	o.count++
}

// addMaybeSame adds b, or "unchanged" when b is the input itself.
func (o *outputs) addMaybeSame(b, input []byte) {
	if len(b) == len(input) && len(b) > 0 && &b[0] == &input[0] {
		o.unchanged()
		return
	}
	o.add(b)
}

func appendText(buf []byte, s string) []byte {
	buf = le.AppendUint32(buf, uint32(len(s)))
	return append(buf, s...)
}

// appendError replaces what a failed record wrote after start with its error.
func appendError(buf []byte, start int, err error) []byte {
	f := fail(err)
	buf = buf[:start]
	if f.transient {
		buf = append(buf, 1)
	} else {
		buf = append(buf, 2)
	}
	buf = appendText(buf, f.message)
	return appendText(buf, f.detail)
}

// reader reads the batch encoding; ok turns false at the first short read.
type reader struct {
	b  []byte
	ok bool
}

func (r *reader) take(n int) []byte {
	if !r.ok || n < 0 || n > len(r.b) {
		r.ok = false
		return nil
	}
	s := r.b[:n:n]
	r.b = r.b[n:]
	return s
}

func (r *reader) u32() uint32 {
	if b := r.take(4); b != nil {
		return le.Uint32(b)
	}
	return 0
}

func (r *reader) i64() int64 {
	if b := r.take(8); b != nil {
		return int64(le.Uint64(b))
	}
	return 0
}

func (r *reader) bytes() []byte { return r.take(int(r.u32())) }

// panicked is a panic in a function, as a record failure with the stack as its detail.
func panicked(p any) *failure {
	return &failure{
		message: strings.Join(strings.Fields(fmt.Sprintf("panic: %v", p)), " "),
		detail:  string(debug.Stack()),
	}
}

// callBatch runs function index on an encoded batch and returns the encoded results; nil
// when the batch does not decode or there is no such function.
func callBatch(index int, batch []byte) []byte {
	if index < 0 || index >= len(registry) {
		return nil
	}
	r := &reader{b: batch, ok: true}
	n := r.u32()
	if !r.ok {
		return nil
	}
	c := &batchCall{f: registry[index], r: r, n: n}
	c.out.buf = make([]byte, 0, len(batch)+16*int(n))
	c.out.buf = le.AppendUint32(c.out.buf, n)
	// One deferred recover per panic rather than per record: a panic fails its record and
	// the loop goes on with the next one.
	for c.done < n {
		if !c.run() {
			return nil
		}
	}
	if len(r.b) != 0 {
		return nil
	}
	return c.out.buf
}

// batchCall is the state of one hw_call: records done so far and the results.
type batchCall struct {
	f     Function
	r     *reader
	n     uint32
	done  uint32
	start int // where the current record's result begins
	out   outputs
}

// run goes through the records from c.done on; false when the batch does not decode.
func (c *batchCall) run() (ok bool) {
	defer func() {
		if p := recover(); p != nil {
			c.out.buf = appendError(c.out.buf, c.start, panicked(p))
			c.done++
			ok = c.r.ok
		}
	}()
	for ; c.done < c.n; c.done++ {
		c.start = len(c.out.buf)
		if c.f.records != nil {
			if !c.record() {
				return false
			}
		} else if !c.keyed() {
			return false
		}
	}
	return true
}

func (c *batchCall) record() bool {
	record := c.r.bytes()
	if !c.r.ok {
		return false
	}
	c.out.buf = append(c.out.buf, 0, 0, 0, 0, 0)
	c.out.count = 0
	if err := c.f.records(record, &c.out); err != nil {
		c.out.buf = appendError(c.out.buf, c.start, err)
		return true
	}
	le.PutUint32(c.out.buf[c.start+1:], c.out.count)
	return true
}

func (c *batchCall) keyed() bool {
	r := c.r
	flags := r.take(1)
	call := &keyedCall{time: r.i64()}
	call.timer = r.i64()
	call.key, call.value, call.state = r.bytes(), r.bytes(), r.bytes()
	if !r.ok {
		return false
	}
	call.hasValue = flags[0]&keyedHasValue != 0
	call.hasState = flags[0]&keyedHasState != 0
	call.fired = flags[0]&keyedTimer != 0
	if err := c.f.keyed(call); err != nil {
		c.out.buf = appendError(c.out.buf, c.start, err)
		return true
	}
	buf := append(c.out.buf, 0)
	buf = le.AppendUint32(buf, uint32(len(call.outputs)))
	for _, o := range call.outputs {
		buf = le.AppendUint32(buf, uint32(len(o)))
		buf = append(buf, o...)
	}
	buf = append(buf, call.stateOp)
	if call.stateOp == 1 {
		buf = le.AppendUint32(buf, uint32(len(call.newState)))
		buf = append(buf, call.newState...)
	}
	buf = le.AppendUint32(buf, uint32(len(call.timers)))
	for _, t := range call.timers {
		buf = le.AppendUint64(buf, uint64(t))
	}
	c.out.buf = buf
	return true
}

// describe is the module's description: its ABI version and functions, as JSON.
func describe() []byte {
	type fn struct {
		Name string `json:"name"`
		Kind string `json:"kind"`
	}
	doc := struct {
		ABI       int    `json:"abi"`
		SDK       string `json:"sdk"`
		Functions []fn   `json:"functions"`
		Error     string `json:"error,omitempty"`
	}{ABI: abiVersion, SDK: "headwater sdk-go/wasm", Functions: []fn{}}
	for _, f := range registry {
		doc.Functions = append(doc.Functions, fn{f.name, f.kind})
	}
	if problem != nil {
		doc.Error = problem.Error()
	} else if len(registry) == 0 {
		doc.Error = "no functions are registered: call wasm.Register(...) in an init function"
	}
	b, _ := json.Marshal(doc)
	return b
}
