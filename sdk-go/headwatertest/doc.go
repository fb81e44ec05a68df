// Package headwatertest runs a pipeline on a few records through the real headwater binary,
// from a go test, and returns what it produced.
//
// [Run] copies the pipeline into a temporary folder and rewrites it so that it reads the
// records given and writes everything it produces into that folder:
//
//   - every source becomes a file source reading a JSON-lines file of the records (its
//     event_time settings are kept; a source given no records reads an empty file);
//   - every sink becomes a file sink, so stdout and blackhole sinks are captured too;
//   - state, the dead-letter queue and checkpoints go into the temporary folder, never next
//     to the pipeline;
//   - each Go UDF declared with `package:` is built with the go command running the tests
//     (so it links this module's code as it is now) and run as `binary:`; a `binary:` is
//     made absolute (relative to the pipeline's folder), an `endpoint:` is left alone, and
//     Options.Workers replaces any of them with a binary you built (see [BuildWorker]);
//   - each Python UDF's `path` (and a `python:` given as a path) is made absolute.
//
// It then runs `headwater run pipeline.yaml --fresh` (in a process group of its own, killed
// with its workers on timeout) and reads back the committed part files of every sink
// (`<sink>-<checkpoint>.jsonl`), the records of the windows' late sinks, and the dead
// letters.
//
//	func TestEnrich(t *testing.T) {
//		result := headwatertest.Run(t, "pipeline.yaml", []Order{
//			{TS: 1, ID: 1, Price: 2.5, Quantity: 4},
//			{TS: 2, ID: 2, Price: 1, Quantity: -1},
//		}, nil)
//		got := headwatertest.Decode[Enriched](t, result.Output)
//		if len(got) != 1 || got[0].Revenue != 10 {
//			t.Fatalf("output: %+v", got)
//		}
//		if len(result.DeadLetters) != 1 || result.DeadLetters[0].Error != "negative quantity in order 2" {
//			t.Fatalf("dead letters: %+v", result.DeadLetters)
//		}
//	}
//
// The binary is found through Options.Binary, then $HEADWATER_BIN, then `headwater` on
// PATH, then $CARGO_TARGET_DIR/release/headwater, then
// ~/.cache/headwater/target/release/headwater (where `./dev build` puts it). Without one,
// Run skips the test, unless HEADWATER_REQUIRE_BINARY is set (CI), which makes it a failure.
package headwatertest
