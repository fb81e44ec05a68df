// Package headwater writes Headwater user-defined functions (UDFs) in Go.
//
// A Go UDF worker is a small program: it makes its functions with the typed helpers
// ([Map], [Filter], [FlatMap], [KeyedProcess], [WindowAggregate], and [MapBytes],
// [FilterBytes], [FlatMapBytes] for raw bytes) and hands them to [Main]. The Headwater host
// starts the built binary as a sidecar process and sends it batches of records over gRPC
// (on a Unix socket); every record gets its own result.
//
//	package main
//
//	import "github.com/headwater-streaming/headwater/sdk-go/headwater"
//
//	type Order struct {
//		ID       int64   `json:"id"`
//		Price    float64 `json:"price"`
//		Quantity float64 `json:"quantity"`
//	}
//
//	type Enriched struct {
//		Order
//		Revenue float64 `json:"revenue"`
//	}
//
//	func enrich(o Order) (Enriched, error) {
//		return Enriched{Order: o, Revenue: o.Price * o.Quantity}, nil
//	}
//
//	func main() {
//		headwater.Main(headwater.Map("enrich", enrich))
//	}
//
// and in the pipeline:
//
//	udfs:
//	  enrich: { runtime: go, package: ./udfs, function: enrich }
//
// Records are JSON documents, decoded into the function's input type and encoded from its
// output type with encoding/json (decoding into map[string]any turns numbers into float64,
// which cannot hold integers above 2^53 exactly: prefer structs, int64 fields or
// json.RawMessage for records that carry such ids).
//
// # Failures
//
// A record whose function returns an error, panics, or whose input does not decode into the
// input type fails alone, never its batch: it goes to the pipeline's dead-letter queue with
// the error message and a traceback (for a panic: the panic value and the goroutine's
// stack). Errors are permanent unless marked with [Transient], which makes the host retry
// the record with backoff first. A function must not call os.Exit (log.Fatal): that ends
// the worker, which the host then restarts, sending the batch again.
//
// # Concurrency
//
// The worker computes several batches at once, each on its own goroutine, so functions
// must be safe for concurrent use. The records of one batch are computed one after another,
// in order; keyed process functions see a key's records in order.
package headwater
