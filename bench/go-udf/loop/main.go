// Command loop is the baseline of `./dev bench go`: the loop a user would write to run a
// function over a file of JSON lines in one process, without Headwater. It reads the input
// with a buffered scanner, decodes each line with encoding/json into the function's input
// type, calls the function, and encodes the result (compact, no HTML escaping, as the SDK
// does) to a buffered output file.
//
//	loop INPUT FUNCTION OUTPUT
//
// Prints {"records": N, "seconds": S} (S: the loop alone, from opening the input to the
// output flushed).
package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"time"

	"github.com/headwater-streaming/headwater/bench/go-udf/udfs"
)

func main() {
	if len(os.Args) != 4 {
		fmt.Fprintln(os.Stderr, "usage: loop INPUT FUNCTION OUTPUT")
		os.Exit(2)
	}
	started := time.Now()
	n, err := run(os.Args[1], os.Args[2], os.Args[3])
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Printf("{\"records\": %d, \"seconds\": %f}\n", n, time.Since(started).Seconds())
}

func run(input, function, output string) (int, error) {
	in, err := os.Open(input)
	if err != nil {
		return 0, err
	}
	defer in.Close()
	out, err := os.Create(output)
	if err != nil {
		return 0, err
	}
	w := bufio.NewWriterSize(out, 1<<16)
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	sc := bufio.NewScanner(in)
	sc.Buffer(make([]byte, 1<<16), 1<<20)
	var n int
	switch function {
	case "trivial":
		n, err = each(sc, enc, udfs.Trivial)
	case "enrich":
		n, err = each(sc, enc, udfs.Enrich)
	default:
		err = fmt.Errorf("unknown function %q", function)
	}
	if err == nil {
		err = w.Flush()
	}
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	return n, err
}

// each decodes every line into In, calls f and writes its result as a line of JSON.
func each[In, Out any](sc *bufio.Scanner, enc *json.Encoder, f func(In) (Out, error)) (int, error) {
	n := 0
	for sc.Scan() {
		var in In
		if err := json.Unmarshal(sc.Bytes(), &in); err != nil {
			return n, fmt.Errorf("line %d: %w", n+1, err)
		}
		out, err := f(in)
		if err != nil {
			return n, fmt.Errorf("line %d: %w", n+1, err)
		}
		if err := enc.Encode(out); err != nil {
			return n, err
		}
		n++
	}
	return n, sc.Err()
}
