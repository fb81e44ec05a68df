// A Go worker for the harness's end-to-end tests.
package main

import (
	"errors"
	"fmt"
	"os"
	"slices"

	"github.com/headwater-streaming/headwater/sdk-go/headwater"
)

type Order struct {
	TS       int64   `json:"ts"`
	ID       int64   `json:"id"`
	Shop     string  `json:"shop,omitempty"`
	Price    float64 `json:"price"`
	Quantity float64 `json:"quantity"`
}

type Enriched struct {
	Order
	Revenue float64 `json:"revenue"`
}

func enrich(o Order) (Enriched, error) {
	if o.Quantity < 0 {
		return Enriched{}, fmt.Errorf("negative quantity in order %d", o.ID)
	}
	if o.Quantity == 13 {
		panic("unlucky quantity")
	}
	return Enriched{Order: o, Revenue: o.Price * o.Quantity}, nil
}

func big(e Enriched) (bool, error) { return e.Revenue >= 10, nil }

// where tells what the worker sees of its environment.
func where(o Order) (map[string]any, error) {
	return map[string]any{"id": o.ID, "greeting": os.Getenv("GREETING")}, nil
}

// flaky always fails transiently: the host retries, then dead-letters the record.
func flaky(o Order) (Order, error) {
	return o, headwater.Transient(errors.New("pricing service unavailable"))
}

type Total struct {
	Orders  int     `json:"orders"`
	Revenue float64 `json:"revenue"`
}

// shopTotals keeps a running total per shop and emits it when the watermark passes 10 s
// after the shop's first order.
func shopTotals(ctx *headwater.KeyedContext[Total], e Enriched) error {
	var shop string
	if err := ctx.DecodeKey(&shop); err != nil {
		return err
	}
	total, ok := ctx.State()
	if at, fired := ctx.Timer(); fired {
		if !ok {
			return nil // an earlier timer of this key emitted and cleared the total
		}
		ctx.Emit(map[string]any{"shop": shop, "orders": total.Orders, "revenue": total.Revenue, "at": at})
		ctx.ClearState()
		return nil
	}
	total.Orders++
	total.Revenue += e.Revenue
	ctx.SetState(total)
	ctx.SetTimer(ctx.EventTime() + 10_000)
	return nil
}

// spread is the window aggregate max(price) - min(price).
type spread struct{}

type prices struct {
	Prices []float64 `json:"prices"`
}

func (spread) Create() prices { return prices{Prices: []float64{}} }

func (spread) Add(acc prices, o Order) (prices, error) {
	acc.Prices = append(acc.Prices, o.Price)
	return acc, nil
}

func (spread) Merge(a, b prices) (prices, error) {
	return prices{Prices: append(a.Prices, b.Prices...)}, nil
}

func (spread) Result(acc prices) (float64, error) {
	if len(acc.Prices) == 0 {
		return 0, nil
	}
	return slices.Max(acc.Prices) - slices.Min(acc.Prices), nil
}

func main() {
	if os.Getenv("BROKEN_WORKER") != "" {
		headwater.Main(headwater.Map("enrich", enrich), headwater.Map("enrich", enrich))
	}
	headwater.Main(
		headwater.Map("enrich", enrich),
		headwater.Filter("big", big),
		headwater.Map("where", where),
		headwater.Map("flaky", flaky),
		headwater.KeyedProcess("shop_totals", shopTotals),
		headwater.WindowAggregate[Order, prices, float64]("spread", spread{}),
	)
}
