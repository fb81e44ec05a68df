// Command worker is the Go UDF worker of `./dev bench go`: the benchmark functions served to
// the host over gRPC, as a user's worker would serve them.
package main

import (
	"github.com/headwater-streaming/headwater/bench/go-udf/udfs"
	"github.com/headwater-streaming/headwater/sdk-go/headwater"
)

func main() {
	headwater.Main(
		headwater.Map("trivial", udfs.Trivial),
		headwater.Map("enrich", udfs.Enrich),
	)
}
