package main

import (
	"os"
	"testing"

	"github.com/headwater-streaming/headwater/sdk-go/headwatertest"
)

// The functions are plain Go: test them directly.
func TestEnrich(t *testing.T) {
	e, err := enrich(Order{ID: 1, Price: 2.5, Quantity: 4})
	if err != nil || e.Revenue != 10 {
		t.Fatalf("enrich: %+v, %v", e, err)
	}
	if _, err := enrich(Order{ID: 2, Quantity: -1}); err == nil {
		t.Fatal("a negative quantity must fail")
	}
}

func TestSessionAdd(t *testing.T) {
	s := Session{}.add(Enriched{Order: Order{TS: 10, Customer: "ada"}, Revenue: 2})
	s = s.add(Enriched{Order: Order{TS: 30, Customer: "ada"}, Revenue: 3})
	if s != (Session{Customer: "ada", Start: 10, Last: 30, Orders: 2, Revenue: 5}) {
		t.Fatalf("%+v", s)
	}
}

// The whole pipeline, through the real host: headwatertest builds this package, runs
// `headwater run` on the records and returns what the sinks committed.
func TestPipeline(t *testing.T) {
	if os.Getenv("HEADWATER_BIN") == "" {
		// In your project, leave this out: Run finds the binary on PATH, and skips the test
		// when there is none (unless HEADWATER_REQUIRE_BINARY is set).
		t.Skip("set HEADWATER_BIN to a headwater binary with the Go runtime")
	}
	const minute = 60_000
	result := headwatertest.Run(t, "pipeline.yaml", []Order{
		{TS: 0, ID: 1, Customer: "ada", Price: 2.5, Quantity: 4},
		{TS: 5 * minute, ID: 2, Customer: "ada", Price: 1, Quantity: 3},
		{TS: 6 * minute, ID: 3, Customer: "bob", Price: 5, Quantity: -2},
		{TS: 90 * minute, ID: 4, Customer: "ada", Price: 4, Quantity: 1},
	}, nil)

	got := headwatertest.Decode[Session](t, result.Output)
	want := []Session{
		{Customer: "ada", Start: 0, Last: 5 * minute, Orders: 2, Revenue: 13},
		{Customer: "ada", Start: 90 * minute, Last: 90 * minute, Orders: 1, Revenue: 4},
	}
	if len(got) != len(want) || got[0] != want[0] || got[1] != want[1] {
		t.Fatalf("sessions %+v, want %+v", got, want)
	}
	if len(result.DeadLetters) != 1 || result.DeadLetters[0].Error != "order 3: negative quantity -2" {
		t.Fatalf("dead letters: %+v", result.DeadLetters)
	}
}
