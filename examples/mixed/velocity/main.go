// Command velocity is the Go half of the mixed example (examples/mixed): a keyed process
// function that screens each account's payments, after the Python step has converted them
// to euros. The host builds this package (`package: ./velocity`) and starts the worker.
package main

import (
	"github.com/headwater-streaming/headwater/sdk-go/headwater"
)

// Window is how far back (event time, ms) an account's payments count as recent.
const Window = 10 * 60 * 1000

// Limits: a payment this large, or this many recent payments of one account, is flagged.
const (
	LargeEUR    = 1000.0
	BurstCount  = 3
	flagLarge   = "large"
	flagBurst   = "burst"
	flagForeign = "foreign"
)

// Payment is a record from the Python step (only the fields used here are decoded).
type Payment struct {
	TS        string  `json:"ts"`
	ID        string  `json:"id"`
	Account   string  `json:"account"`
	Country   string  `json:"country"`
	AmountEUR float64 `json:"amount_eur"`
}

// Recent is the state kept per account: the event times of its payments in the last
// Window, and its home country (that of its first payment).
type Recent struct {
	Home  string  `json:"home"`
	Times []int64 `json:"times"`
}

// Screened is the record emitted for each payment.
type Screened struct {
	TS        string   `json:"ts"`
	ID        string   `json:"id"`
	Account   string   `json:"account"`
	AmountEUR float64  `json:"amount_eur"`
	Recent    int      `json:"recent"`
	Flags     []string `json:"flags"`
}

// screen adds a payment at event time ts (ms) to an account's state and says why it is
// suspicious (no flags: it is not). A plain function, easy to unit test.
func screen(r Recent, p Payment, ts int64) (Recent, Screened) {
	if r.Home == "" {
		r.Home = p.Country
	}
	kept := make([]int64, 0, len(r.Times)+1)
	for _, t := range r.Times {
		if t > ts-Window {
			kept = append(kept, t)
		}
	}
	r.Times = append(kept, ts)
	out := Screened{TS: p.TS, ID: p.ID, Account: p.Account, AmountEUR: p.AmountEUR, Recent: len(r.Times), Flags: []string{}}
	if p.AmountEUR >= LargeEUR {
		out.Flags = append(out.Flags, flagLarge)
	}
	if len(r.Times) >= BurstCount {
		out.Flags = append(out.Flags, flagBurst)
	}
	if p.Country != r.Home {
		out.Flags = append(out.Flags, flagForeign)
	}
	return r, out
}

// velocity runs after `key_by: account`: the host sends each payment with its account's
// state and stores the state it sets (exactly once, in its checkpoints). A timer forgets an
// account's recent payments once the last one is a Window old (but keeps its home country).
func velocity(ctx *headwater.KeyedContext[Recent], p Payment) error {
	r, _ := ctx.State()
	if at, fired := ctx.Timer(); fired {
		// Every payment set a timer; the one of the latest payment clears the times.
		if n := len(r.Times); n > 0 && at == r.Times[n-1]+Window {
			r.Times = nil
			ctx.SetState(r)
		}
		return nil
	}
	r, out := screen(r, p, ctx.EventTime())
	ctx.SetState(r)
	ctx.SetTimer(ctx.EventTime() + Window)
	ctx.Emit(out)
	return nil
}

func main() {
	headwater.Main(headwater.KeyedProcess("velocity", velocity))
}
