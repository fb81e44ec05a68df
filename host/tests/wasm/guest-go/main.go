// The Go Wasm guest of the host's end-to-end tests (host/tests/wasm_udf.rs) and of
// `./dev bench wasm`: the same functions as the Rust guest (host/tests/wasm/guest-rust) and
// the Go test worker (host/tests/go-worker), so every runtime is held to the same results.
//
//	GOOS=wasip1 GOARCH=wasm go build -buildmode=c-shared -o guest.wasm .
package main

import (
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/headwater-streaming/headwater/sdk-go/wasm"
)

// Rec is an input record: {"ts": ..., "n": ...}.
type Rec struct {
	TS int64 `json:"ts"`
	N  int64 `json:"n"`
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

func twice(r Rec) ([]Copy, error) { return []Copy{{r.N, 1}, {r.N, 2}}, nil }

// explode indexes past the end of a slice on every 89th record: a panic, which the SDK turns
// into that record's error.
func explode(r Rec) (map[string]int64, error) {
	table := make([]int64, 7)
	v := int64(0)
	if r.N%89 == 7 {
		v = table[r.N%89]
	}
	return map[string]int64{"n": r.N, "v": v}, nil
}

// spin never returns for n == 5.
func spin(r Rec) (Rec, error) {
	for x := r.N; x == 5; {
		x = spinValue(x)
	}
	return r, nil
}

//go:noinline
func spinValue(x int64) int64 { return x }

var kept [][]byte

// hog allocates without end for n == 5.
func hog(r Rec) (Rec, error) {
	for r.N == 5 {
		kept = append(kept, make([]byte, 1<<20))
	}
	return r, nil
}

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

// bucketTotals keeps, per key, its open 100-ms buckets and emits each when the watermark
// passes its end.
func bucketTotals(ctx *wasm.KeyedContext[map[int64]Bucket], r Rec) error {
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

// sandbox reports what the sandbox lets the module see: a file, the environment, the clock,
// the random source; and writes a line on standard output.
func sandbox(json.RawMessage) (map[string]any, error) {
	file := "read /etc/passwd"
	if _, err := os.ReadFile("/etc/passwd"); err != nil {
		file = err.Error()
	}
	fmt.Println("sandbox says hello")
	return map[string]any{
		"file":   file,
		"env":    len(os.Environ()),
		"now_ms": time.Now().UnixMilli(),
		"random": strconv.FormatUint(rand.Uint64(), 10),
	}, nil
}

// trivial is the benchmark's trivial map: the record, unchanged, not decoded.
func trivial(b []byte) ([]byte, error) { return b, nil }

type Order struct {
	OrderID  int64   `json:"order_id"`
	Customer string  `json:"customer"`
	Price    float64 `json:"price"`
	Quantity int64   `json:"quantity"`
	Currency string  `json:"currency"`
	TS       int64   `json:"ts"`
}

type Priced struct {
	OrderID    int64   `json:"order_id"`
	Customer   string  `json:"customer"`
	RevenueUSD float64 `json:"revenue_usd"`
	Minute     int64   `json:"minute"`
	Large      bool    `json:"large"`
}

var rates = map[string]float64{"USD": 1.0, "EUR": 1.08, "GBP": 1.27}

// realistic is the benchmark's realistic map: parse, convert the currency, bucket, serialize.
func realistic(o Order) (Priced, error) {
	rate, ok := rates[strings.ToUpper(o.Currency)]
	if !ok {
		return Priced{}, fmt.Errorf("unknown currency %s", o.Currency)
	}
	revenue := math.Round(o.Price*float64(o.Quantity)*rate*100) / 100
	return Priced{o.OrderID, o.Customer, revenue, o.TS / 60_000 * 60_000, revenue >= 100}, nil
}

func init() {
	wasm.Register(
		wasm.Map("enrich", enrich),
		wasm.Filter("even", even),
		wasm.FlatMap("twice", twice),
		wasm.Map("explode", explode),
		wasm.Map("spin", spin),
		wasm.Map("hog", hog),
		wasm.Map("sandbox", sandbox),
		wasm.KeyedProcess("bucket_totals", bucketTotals),
		wasm.MapBytes("trivial", trivial),
		wasm.Map("realistic", realistic),
	)
}

func main() {}
