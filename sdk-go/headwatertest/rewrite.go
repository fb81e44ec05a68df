package headwatertest

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"

	yaml "go.yaml.in/yaml/v3"
)

// prepared is the rewritten pipeline and where its inputs and outputs are.
type prepared struct {
	pipelineFile string
	text         string
	sinks        map[string]string // sink name -> file sink path
	sinkOrder    []string
	mainSink     string
	lateSinks    []string
	dlq          string
	inputs       map[string]string
	counts       map[string]int
}

var safeName = regexp.MustCompile(`^[A-Za-z0-9_-]{1,100}$`)

func fileName(name string, index int, prefix string) string {
	if safeName.MatchString(name) {
		return name + ".jsonl"
	}
	return fmt.Sprintf("%s%d.jsonl", prefix, index)
}

// prepare writes the rewritten pipeline, its input files and folders into folder. The YAML
// is edited as a node tree, so every scalar the harness does not replace keeps its text and
// style (the host reads scalars as text: 2024-01-01T00:00:00Z or `on` must stay as written).
func prepare(pipeline, folder string, records any, opts *Options, build builder) (*prepared, error) {
	pipeline, err := filepath.Abs(pipeline)
	if err != nil {
		return nil, err
	}
	base := filepath.Dir(pipeline)
	text, err := os.ReadFile(pipeline)
	if err != nil {
		return nil, fmt.Errorf("cannot read the pipeline file %s: %w", pipeline, err)
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(text, &doc); err != nil {
		return nil, fmt.Errorf("%s is not valid YAML: %w", pipeline, err)
	}
	if doc.Kind != yaml.DocumentNode || len(doc.Content) == 0 || doc.Content[0].Kind != yaml.MappingNode {
		return nil, fmt.Errorf("%s is not a pipeline: expected a mapping at the top level", pipeline)
	}
	spec := doc.Content[0]
	sources := get(spec, "sources")
	if sources == nil || sources.Kind != yaml.MappingNode || len(sources.Content) == 0 {
		return nil, fmt.Errorf("%s: `sources` must be a mapping of at least one source", pipeline)
	}
	sinks := get(spec, "sinks")
	if sinks == nil || sinks.Kind != yaml.MappingNode || len(sinks.Content) == 0 {
		return nil, fmt.Errorf("%s: `sinks` must be a mapping of at least one sink", pipeline)
	}

	feed, err := feeds(pipeline, keys(sources), records, opts.Inputs)
	if err != nil {
		return nil, err
	}
	for _, dir := range []string{"input", "out"} {
		if err := os.MkdirAll(filepath.Join(folder, dir), 0o755); err != nil {
			return nil, err
		}
	}
	p := &prepared{
		sinks:  map[string]string{},
		inputs: map[string]string{},
		counts: map[string]int{},
		dlq:    filepath.Join(folder, "dlq.jsonl"),
	}

	for i := 0; i < len(sources.Content); i += 2 {
		name, source := sources.Content[i].Value, sources.Content[i+1]
		path := filepath.Join(folder, "input", fileName(name, i/2, "source"))
		n, err := writeRecords(path, feed[name], name)
		if err != nil {
			return nil, err
		}
		p.inputs[name], p.counts[name] = path, n
		rewritten := mapping("type", plain("file"), "path", quoted(path))
		if et := get(source, "event_time"); et != nil {
			rewritten.Content = append(rewritten.Content, plain("event_time"), et)
		} else if t := get(source, "type"); t != nil && t.Value == "nexmark" {
			rewritten.Content = append(rewritten.Content, plain("event_time"), mapping("field", plain("date_time")))
		}
		sources.Content[i+1] = rewritten
	}
	for i := 0; i < len(sinks.Content); i += 2 {
		name := sinks.Content[i].Value
		path := filepath.Join(folder, "out", fileName(name, i/2, "sink"))
		p.sinks[name] = path
		p.sinkOrder = append(p.sinkOrder, name)
		sinks.Content[i+1] = mapping("type", plain("file"), "path", quoted(path))
	}
	set(spec, "state", mapping("dir", quoted(filepath.Join(folder, "state"))))
	set(spec, "dlq", mapping("path", quoted(p.dlq)))
	if cp := get(spec, "checkpoint"); cp != nil && cp.Kind == yaml.MappingNode && get(cp, "location") != nil {
		set(cp, "location", quoted(filepath.Join(folder, "checkpoints")))
	}
	built := map[string]string{} // several UDFs of one worker: built once
	buildOnce := func(dir, pkg, folder string) (string, error) {
		key := dir + "\x00" + pkg
		if bin, ok := built[key]; ok {
			return bin, nil
		}
		bin, err := build(dir, pkg, folder)
		if err == nil {
			built[key] = bin
		}
		return bin, err
	}
	if udfs := get(spec, "udfs"); udfs != nil && udfs.Kind == yaml.MappingNode {
		for i := 0; i < len(udfs.Content); i += 2 {
			name, udf := udfs.Content[i].Value, udfs.Content[i+1]
			if udf.Kind != yaml.MappingNode {
				continue
			}
			switch runtime := get(udf, "runtime"); {
			case runtime == nil:
			case runtime.Value == "go":
				if err := rewriteGoUDF(name, udf, base, folder, opts, buildOnce); err != nil {
					return nil, err
				}
			case runtime.Value == "python":
				rewritePythonUDF(udf, base)
			}
		}
	}
	p.mainSink = mainSink(get(spec, "output"), p.sinkOrder)
	p.lateSinks = lateSinks(get(spec, "steps"))

	p.text = fmt.Sprintf("# Rewritten by headwatertest from %s\n", pipeline) + emitYAML(&doc)
	p.pipelineFile = filepath.Join(folder, "pipeline.yaml")
	if err := os.WriteFile(p.pipelineFile, []byte(p.text), 0o644); err != nil {
		return nil, err
	}
	return p, nil
}

// feeds says which records each source reads.
func feeds(pipeline string, names []string, records any, inputs map[string]any) (map[string]any, error) {
	feed := map[string]any{}
	switch {
	case records != nil && inputs != nil:
		return nil, errors.New("give either records (for the only source) or Options.Inputs (per source), not both")
	case records != nil:
		if len(names) != 1 {
			return nil, fmt.Errorf("%s has %d sources (%s); use Options.Inputs "+
				"(map[string]any{source: records}) to say which gets what", pipeline, len(names), strings.Join(names, ", "))
		}
		feed[names[0]] = records
	case inputs != nil:
		var unknown []string
		for name, recs := range inputs {
			if !slices.Contains(names, name) {
				unknown = append(unknown, fmt.Sprintf("%q", name))
			}
			feed[name] = recs
		}
		if len(unknown) > 0 {
			return nil, fmt.Errorf("Options.Inputs names %s, not a source of %s; its sources: %s",
				strings.Join(unknown, ", "), pipeline, strings.Join(names, ", "))
		}
	}
	return feed, nil
}

// writeRecords writes records (a slice, or nil) as JSON lines: a string is one raw line
// (as is: to test how malformed input is dead-lettered), json.RawMessage is compacted, and
// anything else is encoded with encoding/json and must be a JSON object.
func writeRecords(path string, records any, source string) (int, error) {
	var buf bytes.Buffer
	count := 0
	if records != nil {
		v := reflect.ValueOf(records)
		if k := v.Kind(); k != reflect.Slice && k != reflect.Array || v.Type().Elem().Kind() == reflect.Uint8 {
			return 0, fmt.Errorf("source %q: the records must be a slice of records, not a single one (a %T)", source, records)
		}
		for i := range v.Len() {
			line, err := recordLine(v.Index(i).Interface(), source, i+1)
			if err != nil {
				return 0, err
			}
			buf.Write(line)
			buf.WriteByte('\n')
			count++
		}
	}
	return count, os.WriteFile(path, buf.Bytes(), 0o644)
}

func recordLine(record any, source string, n int) ([]byte, error) {
	switch r := record.(type) {
	case string:
		if strings.ContainsAny(r, "\r\n") {
			return nil, fmt.Errorf("source %q: raw line %d contains a line break; give one line per string", source, n)
		}
		return []byte(r), nil
	case json.RawMessage:
		var out bytes.Buffer
		if err := json.Compact(&out, r); err != nil {
			return nil, fmt.Errorf("source %q: record %d is not valid JSON: %w", source, n, err)
		}
		return out.Bytes(), nil
	}
	var out bytes.Buffer
	enc := json.NewEncoder(&out)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(record); err != nil {
		return nil, fmt.Errorf("source %q: record %d cannot be encoded as JSON: %w", source, n, err)
	}
	line := bytes.TrimSuffix(out.Bytes(), []byte("\n"))
	if len(line) == 0 || line[0] != '{' {
		return nil, fmt.Errorf("source %q: record %d is a %T (JSON %.40s); give structs or maps (JSON objects), "+
			"or strings for raw lines", source, n, record, line)
	}
	return line, nil
}

// rewriteGoUDF points a Go UDF at a worker binary: Options.Workers' binary for it if given,
// else its own `binary` (made absolute), else its `package` built with `go build` (or, with
// Options.HostBuilds, left for the host to build, its path made absolute). An `endpoint`
// is left alone.
func rewriteGoUDF(name string, udf *yaml.Node, base, folder string, opts *Options, build builder) error {
	if bin, ok := opts.Workers[name]; ok {
		abs, err := filepath.Abs(bin)
		if err != nil {
			return err
		}
		remove(udf, "package")
		remove(udf, "endpoint")
		set(udf, "binary", quoted(abs))
		return nil
	}
	if bin := get(udf, "binary"); bin != nil {
		set(udf, "binary", quoted(resolve(base, bin.Value)))
		return nil
	}
	pkg := get(udf, "package")
	if pkg == nil {
		return nil
	}
	if opts.HostBuilds {
		if isPathLike(pkg.Value) {
			set(udf, "package", quoted(resolve(base, pkg.Value)))
		}
		return nil
	}
	// A folder is built from inside it, so that its own module (go.mod) is the main module.
	dir, target := base, pkg.Value
	if isPathLike(target) {
		dir, target = resolve(base, target), "."
	}
	bin, err := build(dir, target, filepath.Join(folder, "bin"))
	if err != nil {
		return fmt.Errorf("udf %q: %w", name, err)
	}
	remove(udf, "package")
	set(udf, "binary", quoted(bin))
	return nil
}

// rewritePythonUDF makes a Python UDF's module folder (default: the pipeline's folder) and
// an interpreter given as a path absolute, so they mean what they mean in a normal run.
func rewritePythonUDF(udf *yaml.Node, base string) {
	path := base
	if p := get(udf, "path"); p != nil && p.Kind == yaml.ScalarNode {
		path = resolve(base, p.Value)
	}
	set(udf, "path", quoted(path))
	// Like the host: a value with a `/` is a path, anything else a command looked up on PATH.
	if py := get(udf, "python"); py != nil && strings.Contains(py.Value, "/") {
		set(udf, "python", quoted(resolve(base, py.Value)))
	}
}

func isPathLike(pkg string) bool {
	return pkg == "." || pkg == ".." || strings.HasPrefix(pkg, "./") || strings.HasPrefix(pkg, "../") || filepath.IsAbs(pkg)
}

func resolve(base, path string) string {
	if filepath.IsAbs(path) {
		return path
	}
	return filepath.Join(base, path)
}

// mainSink is the first sink named in `output`, or the only sink.
func mainSink(output *yaml.Node, sinks []string) string {
	switch {
	case output != nil && output.Kind == yaml.ScalarNode:
		return output.Value
	case output != nil && output.Kind == yaml.SequenceNode && len(output.Content) > 0 && output.Content[0].Kind == yaml.ScalarNode:
		return output.Content[0].Value
	case len(sinks) == 1:
		return sinks[0]
	}
	return ""
}

// lateSinks lists the sinks that windows send their late records to (`late: { sink: NAME }`).
func lateSinks(node *yaml.Node) []string {
	var names []string
	var walk func(n *yaml.Node)
	walk = func(n *yaml.Node) {
		if n == nil {
			return
		}
		if n.Kind == yaml.MappingNode {
			for i := 0; i+1 < len(n.Content); i += 2 {
				if n.Content[i].Value == "late" {
					if s := get(n.Content[i+1], "sink"); s != nil && s.Kind == yaml.ScalarNode && !slices.Contains(names, s.Value) {
						names = append(names, s.Value)
					}
				}
			}
		}
		for _, c := range n.Content {
			walk(c)
		}
	}
	walk(node)
	return names
}

// --- YAML node helpers ---------------------------------------------------------------

func get(m *yaml.Node, key string) *yaml.Node {
	if m == nil || m.Kind != yaml.MappingNode {
		return nil
	}
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == key {
			return m.Content[i+1]
		}
	}
	return nil
}

func set(m *yaml.Node, key string, value *yaml.Node) {
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == key {
			m.Content[i+1] = value
			return
		}
	}
	m.Content = append(m.Content, plain(key), value)
}

func remove(m *yaml.Node, key string) {
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == key {
			m.Content = append(m.Content[:i], m.Content[i+2:]...)
			return
		}
	}
}

func keys(m *yaml.Node) []string {
	var names []string
	for i := 0; i+1 < len(m.Content); i += 2 {
		names = append(names, m.Content[i].Value)
	}
	return names
}

func plain(s string) *yaml.Node { return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: s} }

func quoted(s string) *yaml.Node {
	return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: s, Style: yaml.DoubleQuotedStyle}
}

func mapping(kv ...any) *yaml.Node {
	m := &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map"}
	for i := 0; i < len(kv); i += 2 {
		m.Content = append(m.Content, plain(kv[i].(string)), kv[i+1].(*yaml.Node))
	}
	return m
}
