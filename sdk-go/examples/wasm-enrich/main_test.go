package main

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/headwater-streaming/headwater/sdk-go/wasm"
)

func TestEnrichConvertsToDollarsAndRefusesBadOrders(t *testing.T) {
	e, err := enrich(Order{OrderID: 7, Price: 50, Quantity: 2, Currency: "EUR"})
	if err != nil || e.RevenueUSD != 108 {
		t.Fatalf("%+v %v", e, err)
	}
	if _, err := enrich(Order{Price: 1, Quantity: 1, Currency: "XYZ"}); err == nil || !strings.Contains(err.Error(), "unknown currency XYZ") {
		t.Errorf("%v", err)
	}
}

func TestTheModuleEncodingGivesTheSameResults(t *testing.T) {
	out, err := wasm.Call("enrich", json.RawMessage(`{"order_id":1,"customer":"ada","price":10,"quantity":3,"currency":"USD","ts":5}`))
	if err != nil || len(out) != 1 || out[0].Err != "" {
		t.Fatalf("%+v %v", out, err)
	}
	if !strings.Contains(string(out[0].Outputs[0]), `"revenue_usd":30`) {
		t.Errorf("%s", out[0].Outputs[0])
	}
}

func TestPerMinuteEmitsWhenTheTimerFires(t *testing.T) {
	ctx := wasm.NewKeyedContext[Minute](json.RawMessage(`"ada"`), 61_000, nil)
	if err := perMinute(ctx, Enriched{RevenueUSD: 100, TS: 61_000}); err != nil {
		t.Fatal(err)
	}
	if ts := ctx.Timers(); len(ts) != 1 || ts[0] != 119_999 {
		t.Fatalf("timers %v", ts)
	}
	state, _ := ctx.State()
	fired := wasm.NewKeyedContext(json.RawMessage(`"ada"`), 0, &state).Fire(119_999)
	if err := perMinute(fired, Enriched{}); err != nil {
		t.Fatal(err)
	}
	if got := string(fired.Emitted()[0]); got != `{"customer":"ada","minute_end":119999,"revenue_usd":100,"orders":1}` {
		t.Errorf("%s", got)
	}
}
