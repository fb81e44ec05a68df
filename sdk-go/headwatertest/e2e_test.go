package headwatertest_test

// End to end, with the real headwater binary and the Go worker in testdata/worker. They run
// when HEADWATER_BIN names a host that has the Go runtime (`runtime: go`); without it they
// are skipped, unless HEADWATER_REQUIRE_BINARY is set (CI), which makes that a failure.
//
//	HEADWATER_BIN=~/.cache/headwater/target/release/headwater HEADWATER_REQUIRE_BINARY=1 \
//	  go test ./headwatertest/ -run E2E -v

import (
	"encoding/json"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/headwater-streaming/headwater/sdk-go/headwatertest"
)

// requireHost skips the test unless HEADWATER_BIN is set (the headwater found on PATH or in
// the Cargo target folder may predate the Go runtime).
func requireHost(t *testing.T) {
	t.Helper()
	if os.Getenv("HEADWATER_BIN") != "" {
		return
	}
	const why = "set HEADWATER_BIN to a headwater binary with the Go runtime (runtime: go)"
	if v := os.Getenv("HEADWATER_REQUIRE_BINARY"); v != "" && v != "0" {
		t.Fatalf("HEADWATER_REQUIRE_BINARY is set but HEADWATER_BIN is not: %s", why)
	}
	t.Skipf("end-to-end test: %s", why)
}

// project writes pipeline.yaml into a fresh folder, with WORKER replaced by the path of
// the test worker's package, and returns the pipeline's path.
func project(t *testing.T, pipeline string) string {
	t.Helper()
	worker, err := filepath.Abs("testdata/worker")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	path := filepath.Join(dir, "pipeline.yaml")
	text := strings.ReplaceAll(strings.TrimLeft(pipeline, "\n"), "WORKER", worker)
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

type Order struct {
	TS       int64   `json:"ts"`
	ID       int64   `json:"id"`
	Shop     string  `json:"shop,omitempty"`
	Price    float64 `json:"price"`
	Quantity float64 `json:"quantity"`
}

var orders = []Order{
	{TS: 1000, ID: 1, Price: 2.5, Quantity: 4},
	{TS: 2000, ID: 2, Price: 1.0, Quantity: 3},
	{TS: 3000, ID: 3, Price: 12.0, Quantity: -1},
	{TS: 4000, ID: 4, Price: 20.0, Quantity: 2},
}

const ordersPipeline = `
name: orders
parallelism: 1
sources:
  orders: { type: stdin, event_time: { field: ts } }
udfs:
  enrich: { runtime: go, package: WORKER, function: enrich, timeout: 10s }
  big: { runtime: go, package: WORKER, function: big, kind: filter }
steps:
  - udf: enrich
  - udf: big
  - map: { select: [id, revenue] }
sinks:
  results: { type: file, path: out/results.jsonl }
  console: { type: stdout }
output: [results, console]
tuning: { progress_interval: 0s }
`

type revenue struct {
	ID      int64   `json:"id"`
	Revenue float64 `json:"revenue"`
}

func TestE2EGoMapAndFilterAndTheDLQ(t *testing.T) {
	requireHost(t)
	pipeline := project(t, ordersPipeline)
	result := headwatertest.Run(t, pipeline, orders, nil)
	got := headwatertest.Decode[revenue](t, result.Output)
	want := []revenue{{1, 10}, {4, 40}}
	if len(got) != 2 || got[0] != want[0] || got[1] != want[1] {
		t.Fatalf("output %v, want %v", got, want)
	}
	if len(result.Outputs["console"]) != 2 {
		t.Errorf("console: %s", result.Outputs["console"])
	}
	if len(result.DeadLetters) != 1 {
		t.Fatalf("dead letters: %+v", result.DeadLetters)
	}
	dead := result.DeadLetters[0]
	if dead.Source != "orders" || dead.Step != "steps[0] udf enrich" || dead.ErrorClass != "permanent" ||
		dead.Error != "negative quantity in order 3" || !strings.Contains(dead.Detail, "error chain: *errors.errorString") ||
		dead.EventTime == nil || *dead.EventTime != 3000 {
		t.Errorf("dead letter: %+v", dead)
	}
	var raw Order
	if err := json.Unmarshal([]byte(dead.Raw), &raw); err != nil || raw != orders[2] {
		t.Errorf("raw %q: %v", dead.Raw, err)
	}
	// The run left nothing in the project: no .headwater/ state or DLQ, no out/.
	entries, _ := os.ReadDir(filepath.Dir(pipeline))
	if len(entries) != 1 {
		t.Errorf("the project folder has %d entries", len(entries))
	}
}

func TestE2EAPanicGoesToTheDLQWithItsStack(t *testing.T) {
	requireHost(t)
	result := headwatertest.Run(t, project(t, ordersPipeline), []Order{{TS: 1, ID: 9, Price: 1, Quantity: 13}, orders[0]}, nil)
	if len(result.Output) != 1 || len(result.DeadLetters) != 1 {
		t.Fatalf("output %s, dead letters %+v", result.Output, result.DeadLetters)
	}
	dead := result.DeadLetters[0]
	if dead.Error != "panic: unlucky quantity" || !strings.Contains(dead.Detail, "goroutine ") ||
		!strings.Contains(dead.Detail, "main.enrich") {
		t.Errorf("dead letter: %+v", dead)
	}
}

func TestE2ETransientErrorsAreRetriedThenDeadLettered(t *testing.T) {
	requireHost(t)
	pipeline := project(t, `
name: flaky
sources: { in: { type: stdin, event_time: { field: ts } } }
udfs: { flaky: { runtime: go, package: WORKER, function: flaky } }
steps: [{ udf: flaky }]
sinks: { out: { type: blackhole } }
output: out
`)
	result := headwatertest.Run(t, pipeline, orders[:1], nil)
	if len(result.Output) != 0 || len(result.DeadLetters) != 1 {
		t.Fatalf("output %s, dead letters %+v", result.Output, result.DeadLetters)
	}
	if d := result.DeadLetters[0]; d.ErrorClass != "transient" || d.Attempts < 2 || d.Error != "pricing service unavailable" {
		t.Errorf("dead letter: %+v", d)
	}
}

func TestE2EAPrebuiltWorkerAndAHostBuiltPackage(t *testing.T) {
	requireHost(t)
	pipeline := project(t, ordersPipeline)
	worker := headwatertest.BuildWorker(t, "./testdata/worker")
	for name, opts := range map[string]*headwatertest.Options{
		"prebuilt":    {Workers: map[string]string{"enrich": worker, "big": worker}},
		"host builds": {HostBuilds: true, Timeout: 5 * time.Minute},
	} {
		result := headwatertest.Run(t, pipeline, orders, opts)
		if len(result.Output) != 2 || len(result.DeadLetters) != 1 {
			t.Errorf("%s: output %s, dead letters %+v", name, result.Output, result.DeadLetters)
		}
	}
}

func TestE2EWorkersSeeTheEnvironment(t *testing.T) {
	requireHost(t)
	pipeline := project(t, `
name: where
sources: { in: { type: file, path: "does/not/exist/*.jsonl", event_time: { field: ts } } }
udfs: { where: { runtime: go, package: WORKER, function: where } }
steps: [{ udf: where }]
sinks: { out: { type: blackhole } }
output: out
`)
	result := headwatertest.Run(t, pipeline, []Order{{TS: 1, ID: 7}}, &headwatertest.Options{Env: map[string]string{"GREETING": "hello"}})
	if len(result.Output) != 1 || string(result.Output[0]) != `{"greeting":"hello","id":7}` {
		t.Fatalf("output %s", result.Output)
	}
}

func TestE2EKeyedProcessStateAndTimers(t *testing.T) {
	requireHost(t)
	pipeline := project(t, `
name: totals
parallelism: 1
sources: { in: { type: stdin, event_time: { field: ts } } }
udfs:
  enrich: { runtime: go, package: WORKER, function: enrich }
  shop_totals: { runtime: go, package: WORKER, function: shop_totals, kind: keyed_process }
steps:
  - udf: enrich
  - key_by: shop
  - udf: shop_totals
sinks: { out: { type: stdout } }
output: out
`)
	var records []Order
	for i := range 5 {
		records = append(records, Order{TS: int64(1000 * (i + 1)), ID: int64(i), Shop: "web", Price: 1.5, Quantity: float64(i)})
	}
	records = append(records, Order{TS: 500, ID: 100, Shop: "east", Price: 4, Quantity: 2})
	result := headwatertest.Run(t, pipeline, records, nil)
	type total struct {
		Shop    string  `json:"shop"`
		Orders  int     `json:"orders"`
		Revenue float64 `json:"revenue"`
		At      int64   `json:"at"`
	}
	got := headwatertest.Decode[total](t, result.Output)
	sort.Slice(got, func(i, j int) bool { return got[i].Shop < got[j].Shop })
	want := []total{{"east", 1, 8, 10500}, {"web", 5, 15, 11000}}
	if len(got) != 2 || got[0] != want[0] || got[1] != want[1] {
		t.Fatalf("totals %+v, want %+v (dead letters %+v)", got, want, result.DeadLetters)
	}
}

func TestE2EWindowAggregate(t *testing.T) {
	requireHost(t)
	pipeline := project(t, `
name: spread
parallelism: 1
sources: { in: { type: stdin, event_time: { field: ts } } }
udfs: { spread: { runtime: go, package: WORKER, function: spread, kind: window_aggregate } }
steps:
  - key_by: shop
  - window: { type: tumbling, size: 10s, aggregates: { n: count(), spread: "udf(spread)" } }
sinks: { out: { type: stdout } }
output: out
`)
	records := []Order{
		{TS: 1000, Shop: "web", Price: 3}, {TS: 2000, Shop: "web", Price: 10}, {TS: 3000, Shop: "web", Price: 5},
		{TS: 12000, Shop: "web", Price: 7}, {TS: 1500, Shop: "east", Price: 2},
	}
	result := headwatertest.Run(t, pipeline, records, nil)
	type window struct {
		Shop        string  `json:"shop"`
		WindowStart int64   `json:"window_start"`
		N           int     `json:"n"`
		Spread      float64 `json:"spread"`
	}
	got := headwatertest.Decode[window](t, result.Output)
	sort.Slice(got, func(i, j int) bool {
		return got[i].Shop < got[j].Shop || got[i].Shop == got[j].Shop && got[i].WindowStart < got[j].WindowStart
	})
	want := []window{{"east", 0, 1, 0}, {"web", 0, 3, 7}, {"web", 10000, 1, 0}}
	if len(got) != 3 || got[0] != want[0] || got[1] != want[1] || got[2] != want[2] {
		t.Fatalf("windows %+v, want %+v (dead letters %+v)", got, want, result.DeadLetters)
	}
}

func TestE2EAWorkerThatCannotServeStopsThePipeline(t *testing.T) {
	requireHost(t)
	pipeline := project(t, ordersPipeline)
	_, err := headwatertest.RunPipeline(t.Context(), pipeline, orders, &headwatertest.Options{
		Env: map[string]string{"BROKEN_WORKER": "1"}, WorkDir: t.TempDir(),
	})
	perr, ok := err.(*headwatertest.PipelineError)
	if !ok || perr.ExitCode != 2 || !strings.Contains(perr.Stderr, `two functions are named "enrich"`) {
		t.Fatalf("got %v", err)
	}
}
