package headwatertest

// The pipeline rewrite and binary discovery: no binary needed.

import (
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	yaml "go.yaml.in/yaml/v3"
)

func write(t *testing.T, path, text string) string {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(strings.TrimLeft(text, "\n")), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// load reads YAML as plain data: every scalar as its text.
func load(t *testing.T, path string) map[string]any {
	t.Helper()
	text, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(text, &doc); err != nil {
		t.Fatal(err)
	}
	return plainData(doc.Content[0]).(map[string]any)
}

func plainData(n *yaml.Node) any {
	switch n.Kind {
	case yaml.MappingNode:
		m := map[string]any{}
		for i := 0; i < len(n.Content); i += 2 {
			m[n.Content[i].Value] = plainData(n.Content[i+1])
		}
		return m
	case yaml.SequenceNode:
		l := []any{}
		for _, c := range n.Content {
			l = append(l, plainData(c))
		}
		return l
	case yaml.AliasNode:
		return plainData(n.Alias)
	}
	return n.Value
}

func equal(t *testing.T, got, want any) {
	t.Helper()
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got  %#v\nwant %#v", got, want)
	}
}

func errorContains(t *testing.T, err error, want string) {
	t.Helper()
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("want an error containing %q, got %v", want, err)
	}
}

// noBuild fails any build: for rewrites that must not build.
func noBuild(t *testing.T) builder {
	return func(dir, pkg, folder string) (string, error) {
		t.Fatalf("unexpected build of %s in %s", pkg, dir)
		return "", nil
	}
}

func TestRewriteOfTheQuickstartRedirectsSourcesSinksStateAndDLQ(t *testing.T) {
	quickstart, _ := filepath.Abs("../../examples/quickstart")
	if _, err := os.Stat(quickstart); err != nil {
		t.Skip("needs the examples of a source checkout")
	}
	work := t.TempDir()
	p, err := prepare(filepath.Join(quickstart, "pipeline.yaml"), work, []string{`{"ts": 1}`, "not json"}, &Options{}, noBuild(t))
	if err != nil {
		t.Fatal(err)
	}
	spec := load(t, p.pipelineFile)
	original := load(t, filepath.Join(quickstart, "pipeline.yaml"))
	equal(t, spec["sources"], map[string]any{"orders": map[string]any{
		"type": "file", "path": filepath.Join(work, "input", "orders.jsonl"),
		"event_time": map[string]any{"field": "ts", "max_out_of_orderness": "5s"},
	}})
	sinks := map[string]any{}
	for _, name := range []string{"results", "console", "late"} {
		sinks[name] = map[string]any{"type": "file", "path": filepath.Join(work, "out", name+".jsonl")}
	}
	equal(t, spec["sinks"], sinks)
	equal(t, spec["state"], map[string]any{"dir": filepath.Join(work, "state")})
	equal(t, spec["dlq"], map[string]any{"path": filepath.Join(work, "dlq.jsonl")})
	for _, key := range []string{"name", "parallelism", "steps", "output", "tuning"} {
		equal(t, spec[key], original[key])
	}
	equal(t, spec["udfs"].(map[string]any)["revenue"].(map[string]any)["path"], quickstart)
	equal(t, p.mainSink, "results")
	equal(t, p.lateSinks, []string{"late"})
	equal(t, p.counts, map[string]int{"orders": 2})
	input, _ := os.ReadFile(filepath.Join(work, "input", "orders.jsonl"))
	equal(t, string(input), "{\"ts\": 1}\nnot json\n")
	if !strings.HasPrefix(p.text, "# Rewritten by headwatertest from "+filepath.Join(quickstart, "pipeline.yaml")) {
		t.Errorf("header: %.100s", p.text)
	}
}

// The host reads scalars as text: YAML typing (dates, `on`, octal, `1:30`) must not change
// them, quoted stays quoted, plain stays plain, an empty value stays null.
func TestRewriteKeepsEveryScalarAsWritten(t *testing.T) {
	dir := t.TempDir()
	pipeline := write(t, filepath.Join(dir, "p.yaml"), `
name: text-kept
sources:
  in: { type: file, path: in.jsonl, event_time: { field: "ts", max_out_of_orderness: 0 } }
steps:
  - filter: "flag == 'yes' && n >= 010"
  - key_by: [on, 0123, 1:30, '42', 2024-01-01T00:00:00Z]
  - map: { compute: { a: "1.50", b: 'null' }, drop: [~, null] }
sinks: { out: { type: stdout } }
output: out
tuning: { batch_size: 0x10, progress_interval: }
`)
	p, err := prepare(pipeline, filepath.Join(dir, "w"), []string{}, &Options{}, noBuild(t))
	if err != nil {
		t.Fatal(err)
	}
	type scalar struct {
		path, value string
		style       yaml.Style
	}
	var scalars func(n *yaml.Node, path string) []scalar
	scalars = func(n *yaml.Node, path string) []scalar {
		switch n.Kind {
		case yaml.ScalarNode:
			return []scalar{{path, n.Value, n.Style}}
		case yaml.DocumentNode:
			return scalars(n.Content[0], path)
		}
		var out []scalar
		for i, c := range n.Content {
			out = append(out, scalars(c, path+"/"+strings.Repeat(" ", i%2))...)
		}
		return out
	}
	section := func(text []byte, key string) []scalar {
		var doc yaml.Node
		if err := yaml.Unmarshal(text, &doc); err != nil {
			t.Fatal(err)
		}
		return scalars(get(doc.Content[0], key), key)
	}
	before, _ := os.ReadFile(pipeline)
	for _, key := range []string{"steps", "tuning", "name", "output"} {
		equal(t, section([]byte(p.text), key), section(before, key))
	}
	for _, text := range []string{"2024-01-01T00:00:00Z", "1:30", "0123", "0x10", `"1.50"`, `'null'`, "010"} {
		if !strings.Contains(p.text, text) {
			t.Errorf("the rewritten pipeline lacks %s:\n%s", text, p.text)
		}
	}
	equal(t, load(t, p.pipelineFile)["sources"].(map[string]any)["in"].(map[string]any)["event_time"],
		map[string]any{"field": "ts", "max_out_of_orderness": "0"})
}

func TestRecordsAreWrittenAsJSONLinesAndStringsAsRawLines(t *testing.T) {
	dir := t.TempDir()
	pipeline := write(t, filepath.Join(dir, "p.yaml"), `
name: p
sources: { in: { type: stdin, event_time: { field: ts } } }
sinks: { out: { type: stdout } }
output: out
`)
	type rec struct {
		TS   int    `json:"ts"`
		Text string `json:"text,omitempty"`
	}
	records := []any{rec{TS: 1, Text: "héllo <b>"}, `{"ts": 2, "broken": `, map[string]int{"ts": 3},
		json.RawMessage("{\n \"ts\": 4\n}"), &rec{TS: 5}}
	p, err := prepare(pipeline, filepath.Join(dir, "w"), records, &Options{}, noBuild(t))
	if err != nil {
		t.Fatal(err)
	}
	text, _ := os.ReadFile(p.inputs["in"])
	equal(t, string(text), `{"ts":1,"text":"héllo <b>"}`+"\n"+`{"ts": 2, "broken": `+"\n"+`{"ts":3}`+"\n"+`{"ts":4}`+"\n"+`{"ts":5}`+"\n")
	equal(t, load(t, p.pipelineFile)["sources"], map[string]any{
		"in": map[string]any{"type": "file", "path": p.inputs["in"], "event_time": map[string]any{"field": "ts"}},
	})
	// A typed slice works as well as []any.
	if _, err := prepare(pipeline, filepath.Join(dir, "w0"), []rec{{TS: 1}}, &Options{}, noBuild(t)); err != nil {
		t.Fatal(err)
	}

	_, err = prepare(pipeline, filepath.Join(dir, "w1"), []string{"{}\n{}"}, &Options{}, noBuild(t))
	errorContains(t, err, "raw line 1 contains a line break")
	_, err = prepare(pipeline, filepath.Join(dir, "w2"), []any{map[string]int{"ts": 1}, 5}, &Options{}, noBuild(t))
	errorContains(t, err, `source "in": record 2 is a int (JSON 5); give structs or maps`)
	_, err = prepare(pipeline, filepath.Join(dir, "w3"), rec{TS: 1}, &Options{}, noBuild(t))
	errorContains(t, err, "must be a slice of records, not a single one")
	_, err = prepare(pipeline, filepath.Join(dir, "w4"), []any{json.RawMessage("{")}, &Options{}, noBuild(t))
	errorContains(t, err, "record 1 is not valid JSON")
	_, err = prepare(pipeline, filepath.Join(dir, "w5"), []any{func() {}}, &Options{}, noBuild(t))
	errorContains(t, err, "record 1 cannot be encoded as JSON")
}

const twoSources = `
name: two
sources:
  orders: { type: file, path: "orders/*.jsonl", event_time: { field: ts, idle_timeout: 1s } }
  bids: { type: nexmark, events: 100, partitions: 4, only: bid, base_time: 2024-01-01T00:00:00Z }
  typed: { type: stdin, event_time: { field: meta.at, max_out_of_orderness: 2s } }
sinks:
  main: { type: blackhole }
  "odd/name": { type: stdout }
output: [main]
`

func TestInputsFeedNamedSourcesAndTheOthersReadNothing(t *testing.T) {
	dir := t.TempDir()
	pipeline := write(t, filepath.Join(dir, "p.yaml"), twoSources)
	work := filepath.Join(dir, "w")
	opts := &Options{Inputs: map[string]any{"bids": []map[string]int{{"date_time": 5, "price": 1}}}}
	p, err := prepare(pipeline, work, nil, opts, noBuild(t))
	if err != nil {
		t.Fatal(err)
	}
	equal(t, load(t, p.pipelineFile)["sources"], map[string]any{
		"orders": map[string]any{"type": "file", "path": filepath.Join(work, "input", "orders.jsonl"),
			"event_time": map[string]any{"field": "ts", "idle_timeout": "1s"}},
		// Nexmark's built-in event time becomes an explicit field; its generator keys go.
		"bids": map[string]any{"type": "file", "path": filepath.Join(work, "input", "bids.jsonl"),
			"event_time": map[string]any{"field": "date_time"}},
		"typed": map[string]any{"type": "file", "path": filepath.Join(work, "input", "typed.jsonl"),
			"event_time": map[string]any{"field": "meta.at", "max_out_of_orderness": "2s"}},
	})
	equal(t, p.counts, map[string]int{"orders": 0, "bids": 1, "typed": 0})
	// Sink names that are not file-name safe still get a file inside the work folder.
	equal(t, p.sinks, map[string]string{
		"main": filepath.Join(work, "out", "main.jsonl"), "odd/name": filepath.Join(work, "out", "sink1.jsonl"),
	})
	equal(t, p.mainSink, "main")

	_, err = prepare(pipeline, filepath.Join(dir, "w2"), []any{}, &Options{}, noBuild(t))
	errorContains(t, err, "has 3 sources (orders, bids, typed); use Options.Inputs")
	_, err = prepare(pipeline, filepath.Join(dir, "w3"), nil, &Options{Inputs: map[string]any{"nope": nil}}, noBuild(t))
	errorContains(t, err, `Options.Inputs names "nope", not a source of`)
	_, err = prepare(pipeline, filepath.Join(dir, "w4"), []any{}, &Options{Inputs: map[string]any{"orders": nil}}, noBuild(t))
	errorContains(t, err, "not both")
	_, err = prepare(filepath.Join(dir, "missing.yaml"), filepath.Join(dir, "w5"), nil, &Options{}, noBuild(t))
	errorContains(t, err, "cannot read the pipeline file")
	bad := write(t, filepath.Join(dir, "bad.yaml"), "name: x\nsources: [a]\nsinks: {}\n")
	_, err = prepare(bad, filepath.Join(dir, "w6"), nil, &Options{}, noBuild(t))
	errorContains(t, err, "`sources` must be a mapping")
	notYAML := write(t, filepath.Join(dir, "bad2.yaml"), "name: [x\n")
	_, err = prepare(notYAML, filepath.Join(dir, "w7"), nil, &Options{}, noBuild(t))
	errorContains(t, err, "is not valid YAML")
}

const udfs = `
name: udfs
sources: { in: { type: stdin, event_time: { field: ts } } }
udfs:
  built: { runtime: go, binary: bin/worker, function: enrich }
  absolute: { runtime: go, binary: /opt/worker, function: enrich, workers: 2, timeout: 5s }
  package: { runtime: go, package: ./udfs, function: enrich, kind: filter }
  same_package: { runtime: go, package: ./udfs, function: big }
  imported: { runtime: go, package: example.com/udfs/cmd/worker, function: f }
  remote: { runtime: go, endpoint: "unix:/tmp/w.sock", function: enrich }
  py: { runtime: python, module: b, function: f, path: lib/udfs, python: venv/bin/python }
  py_default: { runtime: python, module: a, function: f, python: python3.12 }
  native: { runtime: native, function: geohash }
steps: [{ udf: built }, { udf: package }]
sinks: { out: { type: stdout }, late: { type: stdout } }
output: out
checkpoint: { interval: 5s, location: "s3://prod-bucket/checkpoints" }
`

func TestGoUDFsRunTheirWorkersFromThePipelineFolder(t *testing.T) {
	dir := t.TempDir()
	pipeline := write(t, filepath.Join(dir, "project", "p.yaml"), udfs)
	base := filepath.Join(dir, "project")
	work := filepath.Join(dir, "w")
	var builds []string
	build := func(d, pkg, folder string) (string, error) {
		builds = append(builds, d+" "+pkg)
		return filepath.Join(folder, filepath.Base(filepath.Join(d, pkg))), nil
	}
	p, err := prepare(pipeline, work, nil, &Options{}, build)
	if err != nil {
		t.Fatal(err)
	}
	got := load(t, p.pipelineFile)["udfs"].(map[string]any)
	want := map[string]any{
		"built":    map[string]any{"runtime": "go", "binary": filepath.Join(base, "bin", "worker"), "function": "enrich"},
		"absolute": map[string]any{"runtime": "go", "binary": "/opt/worker", "function": "enrich", "workers": "2", "timeout": "5s"},
		// Packages are built with this go command, once per package.
		"package":      map[string]any{"runtime": "go", "binary": filepath.Join(work, "bin", "udfs"), "function": "enrich", "kind": "filter"},
		"same_package": map[string]any{"runtime": "go", "binary": filepath.Join(work, "bin", "udfs"), "function": "big"},
		"imported":     map[string]any{"runtime": "go", "binary": filepath.Join(work, "bin", "worker"), "function": "f"},
		"remote":       map[string]any{"runtime": "go", "endpoint": "unix:/tmp/w.sock", "function": "enrich"},
		"py": map[string]any{"runtime": "python", "module": "b", "function": "f",
			"path": filepath.Join(base, "lib", "udfs"), "python": filepath.Join(base, "venv", "bin", "python")},
		"py_default": map[string]any{"runtime": "python", "module": "a", "function": "f", "python": "python3.12", "path": base},
		"native":     map[string]any{"runtime": "native", "function": "geohash"},
	}
	equal(t, got, want)
	// A folder is built from inside it (its go.mod is the main module), an import path from
	// the pipeline's folder.
	equal(t, builds, []string{filepath.Join(base, "udfs") + " .", base + " example.com/udfs/cmd/worker"})
	equal(t, load(t, p.pipelineFile)["checkpoint"], map[string]any{"interval": "5s", "location": filepath.Join(work, "checkpoints")})

	// Workers replace a UDF's binary, package or endpoint; HostBuilds leaves packages to the host.
	p, err = prepare(pipeline, filepath.Join(dir, "w2"), nil, &Options{
		HostBuilds: true,
		Workers:    map[string]string{"remote": "/built/worker", "built": "/built/other"},
	}, noBuild(t))
	if err != nil {
		t.Fatal(err)
	}
	got = load(t, p.pipelineFile)["udfs"].(map[string]any)
	equal(t, got["remote"], map[string]any{"runtime": "go", "binary": "/built/worker", "function": "enrich"})
	equal(t, got["built"], map[string]any{"runtime": "go", "binary": "/built/other", "function": "enrich"})
	equal(t, got["package"].(map[string]any)["package"], filepath.Join(base, "udfs"))
	equal(t, got["imported"].(map[string]any)["package"], "example.com/udfs/cmd/worker")
}

func TestMainAndLateSinks(t *testing.T) {
	dir := t.TempDir()
	mainOf := func(output string, sinks string) string {
		pipeline := write(t, filepath.Join(dir, "p.yaml"), `
name: m
sources: { in: { type: stdin, event_time: { field: ts } } }
sinks: `+sinks+`
`+output+`
`)
		p, err := prepare(pipeline, filepath.Join(dir, "w"), nil, &Options{}, noBuild(t))
		if err != nil {
			t.Fatal(err)
		}
		return p.mainSink
	}
	equal(t, mainOf("output: b", "{ a: { type: stdout }, b: { type: stdout } }"), "b")
	equal(t, mainOf("output: [b, a]", "{ a: { type: stdout }, b: { type: stdout } }"), "b")
	equal(t, mainOf("", "{ a: { type: stdout } }"), "a") // invalid for the host, which says so
	equal(t, mainOf("# b", "{ a: { type: stdout }, b: { type: stdout } }"), "")

	pipeline := write(t, filepath.Join(dir, "late.yaml"), `
name: late
sources: { in: { type: stdin, event_time: { field: ts } } }
steps:
  - key_by: k
  - window: { type: tumbling, size: 1m, aggregates: { n: count() }, late: { sink: too_late } }
  - window: { type: tumbling, size: 1h, aggregates: { n: count() }, late: dlq }
sinks: { out: { type: stdout }, too_late: { type: stdout } }
output: out
`)
	p, err := prepare(pipeline, filepath.Join(dir, "w2"), nil, &Options{}, noBuild(t))
	if err != nil {
		t.Fatal(err)
	}
	equal(t, p.lateSinks, []string{"too_late"})
}

func TestFindBinaryOrder(t *testing.T) {
	dir := t.TempDir()
	home := filepath.Join(dir, "home")
	t.Setenv("HOME", home)
	t.Setenv("PATH", filepath.Join(dir, "bin"))
	t.Setenv("HEADWATER_BIN", "")
	t.Setenv("CARGO_TARGET_DIR", "")
	executableAt := func(path string) string {
		write(t, path, "#!/bin/sh\nexit 0\n")
		if err := os.Chmod(path, 0o755); err != nil {
			t.Fatal(err)
		}
		return path
	}

	_, err := FindBinary("")
	var notFound *BinaryNotFoundError
	if !asNotFound(err, &notFound) {
		t.Fatalf("got %v", err)
	}
	for _, want := range []string{"`headwater` on PATH", "$CARGO_TARGET_DIR is not set",
		filepath.Join(home, ".cache/headwater/target/release/headwater"), "./dev build", "HEADWATER_BIN"} {
		errorContains(t, err, want)
	}
	cached := executableAt(filepath.Join(home, ".cache/headwater/target/release/headwater"))
	mustFind(t, "", cached)
	t.Setenv("CARGO_TARGET_DIR", filepath.Join(dir, "target"))
	mustFind(t, "", executableAt(filepath.Join(dir, "target/release/headwater")))
	mustFind(t, "", executableAt(filepath.Join(dir, "bin/headwater")))
	fromEnv := executableAt(filepath.Join(dir, "env/headwater"))
	t.Setenv("HEADWATER_BIN", fromEnv)
	mustFind(t, "", fromEnv)
	given := executableAt(filepath.Join(dir, "given/headwater"))
	mustFind(t, given, given)

	// An explicit choice that is wrong is an error, not a silent fallback.
	_, err = FindBinary(filepath.Join(dir, "nope"))
	errorContains(t, err, "given by Options.Binary ("+filepath.Join(dir, "nope")+") does not exist")
	t.Setenv("HEADWATER_BIN", filepath.Join(dir, "nope"))
	_, err = FindBinary("")
	errorContains(t, err, "$HEADWATER_BIN")
	plainFile := write(t, filepath.Join(dir, "plain"), "")
	_, err = FindBinary(plainFile)
	errorContains(t, err, "is not an executable file")
}

func mustFind(t *testing.T, binary, want string) {
	t.Helper()
	got, err := FindBinary(binary)
	if err != nil {
		t.Fatal(err)
	}
	equal(t, got, want)
}

func asNotFound(err error, target **BinaryNotFoundError) bool {
	e, ok := err.(*BinaryNotFoundError)
	*target = e
	return ok
}
