// Package udfs holds the functions of `./dev bench go` (bench/src/go_udf.rs): the same maps,
// over the same records, as the Python UDF benchmark. The sidecar worker (../worker) and the
// plain loop (../loop) both call them, so the two measure the same work.
package udfs

import (
	"math"
	"strings"
)

// Record is a benchmark input record (about 100 bytes of JSON).
type Record struct {
	TS    int64   `json:"ts"`
	Item  int64   `json:"item"`
	Price float64 `json:"price"`
	Name  string  `json:"name"`
	User  string  `json:"user"`
}

// Trivial returns the record as it came: what decoding and encoding cost.
func Trivial(r Record) (Record, error) { return r, nil }

// Enriched is a record with the fields Enrich adds.
type Enriched struct {
	Record
	Category  string   `json:"category"`
	PriceEUR  float64  `json:"price_eur"`
	Tags      []string `json:"tags"`
	Expensive bool     `json:"expensive"`
}

var categories = [...]string{"books", "garden", "games", "music", "sports", "tools", "toys", "video"}

// Enrich adds a category, the price in euros, the name's parts and a flag.
func Enrich(r Record) (Enriched, error) {
	return Enriched{
		Record:    r,
		Category:  categories[uint64(r.Item)%uint64(len(categories))],
		PriceEUR:  math.Round(r.Price*0.908*100) / 100,
		Tags:      strings.Split(r.Name, "-"),
		Expensive: r.Price > 50,
	}, nil
}
