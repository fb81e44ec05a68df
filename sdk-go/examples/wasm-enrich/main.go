// A Headwater Wasm UDF module in Go: enrich orders, keep the large ones, total per customer
// and minute. The same functions as examples/wasm/rust-enrich, so either module serves the
// same pipeline (docs/wasm.md).
//
//	GOOS=wasip1 GOARCH=wasm go build -buildmode=c-shared -o module/enrich.wasm ./examples/wasm-enrich
//
// (run in sdk-go/, or scripts/build-wasm-examples.sh), and `go test ./examples/wasm-enrich`
// tests the functions natively.
package main

import (
	"fmt"
	"math"

	"github.com/headwater-streaming/headwater/sdk-go/wasm"
)

type Order struct {
	OrderID  int64    `json:"order_id"`
	Customer string   `json:"customer"`
	Price    float64  `json:"price"`
	Quantity int64    `json:"quantity"`
	Currency string   `json:"currency"`
	TS       int64    `json:"ts"`
	Items    []string `json:"items"`
}

type Enriched struct {
	OrderID    int64    `json:"order_id"`
	Customer   string   `json:"customer"`
	RevenueUSD float64  `json:"revenue_usd"`
	TS         int64    `json:"ts"`
	Items      []string `json:"items"`
}

// usdRates is USD per unit of each currency the shop takes.
var usdRates = map[string]float64{"USD": 1.0, "EUR": 1.08, "GBP": 1.27}

// enrich computes the revenue in US dollars; an unknown currency or a negative price goes to
// the dead-letter queue.
func enrich(o Order) (Enriched, error) {
	if o.Price < 0 || o.Quantity < 0 {
		return Enriched{}, fmt.Errorf("order %d: negative price or quantity", o.OrderID)
	}
	rate, ok := usdRates[o.Currency]
	if !ok {
		return Enriched{}, fmt.Errorf("order %d: unknown currency %s", o.OrderID, o.Currency)
	}
	if o.Items == nil {
		o.Items = []string{}
	}
	revenue := math.Round(o.Price*float64(o.Quantity)*rate*100) / 100
	return Enriched{o.OrderID, o.Customer, revenue, o.TS, o.Items}, nil
}

// large keeps orders worth 100 USD or more.
func large(o Enriched) (bool, error) { return o.RevenueUSD >= 100, nil }

type Item struct {
	OrderID int64  `json:"order_id"`
	Item    string `json:"item"`
}

// items makes one record per item of an order.
func items(o Enriched) ([]Item, error) {
	out := make([]Item, 0, len(o.Items))
	for _, it := range o.Items {
		out = append(out, Item{o.OrderID, it})
	}
	return out, nil
}

// Minute is a customer's open minute: its revenue and order count.
type Minute struct {
	End        int64   `json:"end"`
	RevenueUSD float64 `json:"revenue_usd"`
	Orders     int64   `json:"orders"`
}

type MinuteOut struct {
	Customer   string  `json:"customer"`
	MinuteEnd  int64   `json:"minute_end"`
	RevenueUSD float64 `json:"revenue_usd"`
	Orders     int64   `json:"orders"`
}

func round(v float64) float64 { return math.Round(v*100) / 100 }

// perMinute totals, per customer (the key) and minute of event time, the revenue and the
// order count, and emits them when the watermark passes the end of the minute.
func perMinute(ctx *wasm.KeyedContext[Minute], o Enriched) error {
	var customer string
	if err := ctx.DecodeKey(&customer); err != nil {
		return err
	}
	m, _ := ctx.State()
	if at, fired := ctx.Timer(); fired {
		// A minute already emitted early (below) leaves its timer behind: nothing to do then.
		if m.Orders > 0 && m.End == at {
			ctx.Emit(MinuteOut{customer, at, round(m.RevenueUSD), m.Orders})
			ctx.ClearState()
		}
		return nil
	}
	end := o.TS - ((o.TS%60_000)+60_000)%60_000 + 59_999
	if m.End != end {
		if m.Orders > 0 {
			ctx.Emit(MinuteOut{customer, m.End, round(m.RevenueUSD), m.Orders})
		}
		m = Minute{End: end}
		ctx.SetTimer(end)
	}
	m.RevenueUSD += o.RevenueUSD
	m.Orders++
	ctx.SetState(m)
	return nil
}

func init() {
	wasm.Register(
		wasm.Map("enrich", enrich),
		wasm.Filter("large", large),
		wasm.FlatMap("items", items),
		wasm.KeyedProcess("per_minute", perMinute),
	)
}

func main() {}
