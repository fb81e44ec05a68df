//! `headwater dlq ...`: look into a pipeline's dead-letter queue.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;

use headwater::config::spec::{PipelineSpec, SinkKind};
use headwater::connectors::files::read_committed;
use headwater::connectors::kafka::read_topic;
use headwater::dlq::inspect;

use super::{load, EXIT_FAILED};

mod replay;
mod replay_list;

use replay::{replay, Mode};

#[derive(Subcommand)]
pub enum DlqCommand {
    /// The committed dead letters grouped by cause: one group per fingerprint (step, error
    /// type and the error message with its data taken out), most dead letters first, with
    /// when each cause first and last failed and sample records.
    #[command(after_help = "Examples:\n  \
headwater dlq inspect examples/quickstart/pipeline.yaml\n  \
headwater dlq inspect pipeline.yaml --samples 10\n  \
headwater dlq inspect pipeline.yaml --json | jq '.groups[0]'\n\n\
Reads the pipeline's dead-letter file (`dlq.path`, default `.headwater/<name>/dlq.jsonl`), or \
the sink `dlq: { sink: NAME }` names: a file sink's committed parts, or a Kafka topic read to \
its end (committed messages only): what completed checkpoints committed, so it can run beside a live pipeline. Each envelope \
carries its `fingerprint`; envelopes written before fingerprints existed are grouped the same \
way.")]
    Inspect {
        /// The pipeline file (YAML).
        pipeline: PathBuf,
        /// Sample records shown per group.
        #[arg(long, default_value_t = 3, value_name = "N")]
        samples: usize,
        /// Print the report as one JSON document.
        #[arg(long)]
        json: bool,
    },
    /// Sends one group's dead letters back into the pipeline at the udf step that gave up on
    /// them, exactly once, after running them through the step's current code to show how
    /// many would now succeed (`--dry-run`: only that, writing nothing).
    #[command(after_help = "Examples:\n  \
headwater dlq inspect pipeline.yaml                     # find the group's fingerprint\n  \
headwater dlq replay pipeline.yaml --group 3f0c9d2a71b6e4c8 --dry-run\n  \
headwater dlq replay pipeline.yaml --group 3f0c9d2a71b6e4c8\n  \
headwater dlq replays pipeline.yaml                     # has the pipeline read it yet?\n\n\
Starts the pipeline's UDFs as `headwater run` would (the code as it is now), rebuilds each \
record of the group from its envelope (`raw`, `event_time`, `key`) and calls the step on them \
with the pipeline's retries and remediation, and reports what happened, naming the code the \
records failed with and the code now (`udf_version`).\n\n\
Without --dry-run it then writes a replay request into the pipeline's checkpoint storage \
(`replays/`). The running pipeline reads it within a second (a stopped one when it next \
runs) and sends each record into the step it failed at, with the event time and key it had: \
the steps after it, windows included, see it as any other record (a window that has closed \
meanwhile treats it as late data). The request's position is part of every checkpoint, so \
its records enter once, even across crashes. The requests are the ledger: a dead letter \
that was replayed once is never sent again (records that fail again get new envelopes, \
which a later replay may send). A replay is refused when the step's code is unchanged since \
the records failed (they would fail again) unless --force.")]
    Replay {
        /// The pipeline file (YAML).
        pipeline: PathBuf,
        /// The group's fingerprint (`headwater dlq inspect` lists them).
        #[arg(long, value_name = "FINGERPRINT")]
        group: String,
        /// Run the records through the current code and report; write nothing.
        #[arg(long)]
        dry_run: bool,
        /// Also send records that failed with the code the step runs now.
        #[arg(long)]
        force: bool,
        /// Print the report as one JSON document.
        #[arg(long)]
        json: bool,
    },
    /// The replays asked of the pipeline, and how far it has read each (as of its newest
    /// checkpoint).
    #[command(after_help = "Example:\n  headwater dlq replays pipeline.yaml\n\n\
A replay is `done` once a completed checkpoint covers all of its records (their results are \
committed with it), `reading` while the newest checkpoint covers some, `waiting` before.")]
    Replays {
        /// The pipeline file (YAML).
        pipeline: PathBuf,
        /// Print the list as one JSON document.
        #[arg(long)]
        json: bool,
    },
}

pub fn run(command: DlqCommand) -> ExitCode {
    match command {
        DlqCommand::Replay {
            pipeline,
            group,
            dry_run,
            force,
            json,
        } => replay(&pipeline, &group, Mode { dry_run, force }, json),
        DlqCommand::Replays { pipeline, json } => replay_list::list(&pipeline, json),
        DlqCommand::Inspect {
            pipeline,
            samples,
            json,
        } => {
            let spec = match load(&pipeline) {
                Ok(spec) => spec,
                Err(code) => return code,
            };
            let (place, text) = match read_dlq(&spec) {
                Ok(Some(found)) => found,
                Ok(None) => {
                    let path = &spec.dlq.path;
                    if json {
                        println!("{}", inspect::Report::default().to_json(path));
                    } else {
                        println!(
                            "no dead letters: {} does not exist (nothing was dead-lettered yet, or the last run started with --fresh)",
                            path.display()
                        );
                    }
                    return ExitCode::SUCCESS;
                }
                Err(code) => return code,
            };
            let report = inspect::group(&text, samples);
            if json {
                println!("{}", report.to_json(&place));
            } else {
                print!("{}", report.render(&place));
            }
            ExitCode::SUCCESS
        }
    }
}

/// The pipeline's committed dead letters as text, one envelope per line, and where they are
/// (the file, or `kafka:TOPIC` for a DLQ sent to a Kafka sink); None when the file does not
/// exist yet.
fn read_dlq(spec: &PipelineSpec) -> Result<Option<(PathBuf, String)>, ExitCode> {
    let fail = |message: String| {
        eprintln!("error: {message}");
        ExitCode::from(EXIT_FAILED)
    };
    let Some(name) = &spec.dlq.sink else {
        let path = &spec.dlq.path;
        return match std::fs::read_to_string(path) {
            Ok(text) => Ok(Some((path.clone(), text))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(fail(format!(
                "cannot read the dead-letter file `{}`: {e}",
                path.display()
            ))),
        };
    };
    let kafka = match spec.sinks.iter().find(|s| &s.name == name).map(|s| &s.kind) {
        Some(SinkKind::Kafka(kafka)) => kafka,
        // A file sink's committed parts (or its plain file, without checkpoints).
        Some(SinkKind::File { path }) => {
            return match read_committed(path) {
                Ok(text) => Ok(Some((path.clone(), text))),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(fail(format!(
                    "cannot read the dead-letter sink `{name}` ({}): {e}",
                    path.display()
                ))),
            };
        }
        _ => {
            return Err(fail(format!(
                "pipeline `{}` sends its dead letters to the sink `{name}`, which is neither a file nor a Kafka topic: read its output (each record is one envelope) instead",
                spec.name
            )))
        }
    };
    match read_topic::read_texts(kafka, &spec.name) {
        Ok(texts) => Ok(Some((
            PathBuf::from(format!("kafka:{}", kafka.topic)),
            texts.join("\n"),
        ))),
        Err(e) => Err(fail(format!(
            "cannot read the dead-letter topic `{}`: {e}",
            kafka.topic
        ))),
    }
}
