package main

import (
	"slices"
	"testing"
)

func TestScreenFlagsLargeBurstAndForeignPayments(t *testing.T) {
	const minute = 60 * 1000
	var r Recent
	steps := []struct {
		p     Payment
		ts    int64
		flags []string
	}{
		{Payment{ID: "1", Country: "FR", AmountEUR: 20}, 0, []string{}},
		{Payment{ID: "2", Country: "FR", AmountEUR: 1500}, 2 * minute, []string{flagLarge}},
		{Payment{ID: "3", Country: "US", AmountEUR: 5}, 3 * minute, []string{flagBurst, flagForeign}},
		// The first two are more than 10 minutes old by now: no longer a burst.
		{Payment{ID: "4", Country: "FR", AmountEUR: 5}, 12*minute + 1, []string{}},
	}
	for _, s := range steps {
		var out Screened
		r, out = screen(r, s.p, s.ts)
		if !slices.Equal(out.Flags, s.flags) {
			t.Errorf("payment %s: flags %v, want %v", s.p.ID, out.Flags, s.flags)
		}
	}
	if r.Home != "FR" || !slices.Equal(r.Times, []int64{3 * minute, 12*minute + 1}) {
		t.Errorf("state %+v", r)
	}
}
