// Command enrich is an example Go UDF worker for Headwater: a map function that computes
// each order's revenue, and a keyed process function that groups a customer's orders into
// sessions (a session ends after 30 minutes without an order).
//
// Run it with the pipeline next to it (the host builds this package and starts the worker):
//
//	headwater run pipeline.yaml
package main

import (
	"fmt"

	"github.com/headwater-streaming/headwater/sdk-go/headwater"
)

// Order is an input record; encoding/json fills it from the record's JSON.
type Order struct {
	TS       int64   `json:"ts"`
	ID       int64   `json:"id"`
	Customer string  `json:"customer"`
	Price    float64 `json:"price"`
	Quantity int     `json:"quantity"`
}

// Enriched is an order with its revenue.
type Enriched struct {
	Order
	Revenue float64 `json:"revenue"`
}

// enrich computes the revenue. An order with a negative quantity fails alone: it goes to
// the dead-letter queue with this error, and the run goes on.
func enrich(o Order) (Enriched, error) {
	if o.Quantity < 0 {
		return Enriched{}, fmt.Errorf("order %d: negative quantity %d", o.ID, o.Quantity)
	}
	return Enriched{Order: o, Revenue: o.Price * float64(o.Quantity)}, nil
}

// SessionGap is how long a session stays open after its last order (event time, ms).
const SessionGap = 30 * 60 * 1000

// Session is the state kept per customer (the host stores it as JSON, so its fields are
// exported), and the record emitted when the session ends.
type Session struct {
	Customer string  `json:"customer"`
	Start    int64   `json:"start"`
	Last     int64   `json:"last"`
	Orders   int     `json:"orders"`
	Revenue  float64 `json:"revenue"`
}

// add folds an order into a session: a plain function, easy to unit test.
func (s Session) add(e Enriched) Session {
	if s.Orders == 0 {
		s.Start = e.TS
	}
	s.Customer = e.Customer
	s.Last = max(s.Last, e.TS)
	s.Orders++
	s.Revenue += e.Revenue
	return s
}

// sessions runs after `key_by: customer`: the host sends each order with its customer's
// state, and calls it again (with ctx.Timer() set) when a timer it set fires.
func sessions(ctx *headwater.KeyedContext[Session], e Enriched) error {
	s, ok := ctx.State()
	if at, fired := ctx.Timer(); fired {
		// Every order set a timer; only the one of the latest order ends the session.
		if ok && at == s.Last+SessionGap {
			ctx.Emit(s)
			ctx.ClearState()
		}
		return nil
	}
	// Records of one batch can come before the watermark that fires the previous session's
	// timer: a gap closes that session here too.
	if ok && e.TS > s.Last+SessionGap {
		ctx.Emit(s)
		s = Session{}
	}
	s = s.add(e)
	ctx.SetState(s)
	ctx.SetTimer(e.TS + SessionGap)
	return nil
}

func main() {
	headwater.Main(
		headwater.Map("enrich", enrich),
		headwater.KeyedProcess("sessions", sessions),
	)
}
