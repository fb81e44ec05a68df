// The Go worker of the host's end-to-end tests (host/tests/go_udf.rs): the same functions as
// the Python tests' module, so both runtimes are held to the same results.
package main

import (
	"encoding/json"
	"fmt"
	"os"
	"time"

	"github.com/headwater-streaming/headwater/sdk-go/headwater"
)

// Rec is an input record: {"ts": ..., "n": ...} (and a poison mark for the window test).
type Rec struct {
	TS     int64 `json:"ts"`
	N      int64 `json:"n"`
	Poison bool  `json:"poison,omitempty"`
}

type Square struct {
	N      int64 `json:"n"`
	Square int64 `json:"square"`
}

// enrich fails on every 97th record (n % 97 == 13): that record alone goes to the DLQ.
func enrich(r Rec) (Square, error) {
	if r.N%97 == 13 {
		return Square{}, fmt.Errorf("bad record %d", r.N)
	}
	return Square{N: r.N, Square: r.N * r.N}, nil
}

func even(r Rec) (bool, error) { return r.N%2 == 0, nil }

type Copy struct {
	N    int64 `json:"n"`
	Copy int   `json:"copy"`
}

func twice(r Rec) ([]Copy, error) {
	return []Copy{{r.N, 1}, {r.N, 2}}, nil
}

// explode indexes past the end of a slice on every 89th record (n % 89 == 7): a runtime
// panic in user code.
func explode(r Rec) (Rec, error) {
	table := make([]int64, 7)
	if r.N%89 == 7 {
		return Rec{N: table[r.N%89]}, nil
	}
	return r, nil
}

func slow(r json.RawMessage) (json.RawMessage, error) {
	time.Sleep(200 * time.Microsecond)
	return r, nil
}

func sleepy(r json.RawMessage) (json.RawMessage, error) {
	time.Sleep(2 * time.Millisecond)
	return r, nil
}

// hangOnce never answers the first call after $HANG_MARKER is set (it creates the file).
func hangOnce(r json.RawMessage) (json.RawMessage, error) {
	if marker := os.Getenv("HANG_MARKER"); marker != "" {
		if f, err := os.OpenFile(marker, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o644); err == nil {
			f.Close()
			time.Sleep(time.Hour)
		}
	}
	return r, nil
}

// Bucket is one open 100-ms bucket of a key.
type Bucket struct {
	Total int64 `json:"total"`
	Count int64 `json:"count"`
}

type BucketOut struct {
	User      json.RawMessage `json:"user"`
	BucketEnd int64           `json:"bucket_end"`
	Total     int64           `json:"total"`
	Count     int64           `json:"count"`
}

// bucketTotals keeps, per key, its open buckets (bucket end -> total and count of n) and
// emits each bucket when the watermark passes its end.
func bucketTotals(ctx *headwater.KeyedContext[map[int64]Bucket], r Rec) error {
	old, _ := ctx.State()
	buckets := make(map[int64]Bucket, len(old)+1)
	for k, v := range old {
		buckets[k] = v
	}
	if at, fired := ctx.Timer(); fired {
		done, ok := buckets[at]
		if !ok {
			return fmt.Errorf("timer %d fired for key %s without its bucket", at, ctx.Key())
		}
		delete(buckets, at)
		ctx.Emit(BucketOut{User: ctx.Key(), BucketEnd: at, Total: done.Total, Count: done.Count})
	} else {
		end := r.TS/100*100 + 99
		b := buckets[end]
		buckets[end] = Bucket{Total: b.Total + r.N, Count: b.Count + 1}
		ctx.SetTimer(end)
	}
	if len(buckets) > 0 {
		ctx.SetState(buckets)
	} else {
		ctx.ClearState()
	}
	return nil
}

// spread is max(n) - min(n) over a window (null for an empty one); a poisoned record fails.
type spread struct{}

type loHi struct {
	Lo *int64 `json:"lo"`
	Hi *int64 `json:"hi"`
}

func (spread) Create() loHi { return loHi{} }

func (spread) Add(acc loHi, r Rec) (loHi, error) {
	if r.Poison {
		return acc, fmt.Errorf("poisoned record %d", r.N)
	}
	n := r.N
	if acc.Lo == nil || n < *acc.Lo {
		acc.Lo = &n
	}
	if acc.Hi == nil || n > *acc.Hi {
		acc.Hi = &n
	}
	return acc, nil
}

func (s spread) Merge(a, b loHi) (loHi, error) {
	for _, p := range []*int64{b.Lo, b.Hi} {
		if p != nil {
			a, _ = s.Add(a, Rec{N: *p})
		}
	}
	return a, nil
}

func (spread) Result(acc loHi) (*int64, error) {
	if acc.Lo == nil {
		return nil, nil
	}
	d := *acc.Hi - *acc.Lo
	return &d, nil
}

func main() {
	headwater.Main(
		headwater.Map("enrich", enrich),
		headwater.Filter("even", even),
		headwater.FlatMap("twice", twice),
		headwater.Map("explode", explode),
		headwater.Map("slow", slow),
		headwater.Map("sleepy", sleepy),
		headwater.Map("hang_once", hangOnce),
		headwater.KeyedProcess("bucket_totals", bucketTotals),
		headwater.WindowAggregate[Rec, loHi, *int64]("spread", spread{}),
	)
}
