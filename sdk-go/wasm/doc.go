// Package wasm writes Headwater user-defined functions in Go that run inside the host's Wasm
// runtime (runtime: wasm in a pipeline), sandboxed, instead of in worker processes.
//
// A module is a main package that registers its functions in init and is built as a WASI
// reactor:
//
//	package main
//
//	import "github.com/headwater-streaming/headwater/sdk-go/wasm"
//
//	type Order struct {
//		Price    float64 `json:"price"`
//		Quantity int     `json:"quantity"`
//	}
//
//	type Priced struct {
//		Revenue float64 `json:"revenue"`
//	}
//
//	func revenue(o Order) (Priced, error) {
//		return Priced{Revenue: o.Price * float64(o.Quantity)}, nil
//	}
//
//	func init() { wasm.Register(wasm.Map("revenue", revenue)) }
//
//	func main() {}
//
//	GOOS=wasip1 GOARCH=wasm go build -buildmode=c-shared -o udfs.wasm .
//
// The functions are the same shapes as in the worker SDK (package headwater): [Map],
// [Filter], [FlatMap], [KeyedProcess] and the Bytes variants, with [Transient] to mark
// failures worth retrying. A returned error or a panic fails only its record. The same
// functions run natively too, so they are tested with go test like any Go code (call them
// directly, or through the module's encoding with [Call] and [CallKeyed]).
//
// The module needs Go 1.24 or newer (go:wasmexport). It gets no files, network or
// environment variables; what it writes to stdout and stderr goes to the host's log; its
// clock and random source are deterministic unless the pipeline allows the real ones.
// docs/wasm-abi.md in the Headwater repository describes the ABI this package implements.
package wasm
