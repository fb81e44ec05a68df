//! `headwater dlq ...`: look into a pipeline's dead-letter queue.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Subcommand;

use headwater::config::spec::{PipelineSpec, SinkKind};
use headwater::connectors::files::read_committed;
use headwater::connectors::kafka::read_topic;
use headwater::dlq::{inspect, replay};
use headwater::runtime::dry_run::{self, DryRun};

use super::{load, EXIT_FAILED, EXIT_INVALID};

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
    /// Runs one group's dead letters through the current code of the udf step that gave up
    /// on them and tells how many would now succeed, writing nothing (`--dry-run`).
    #[command(after_help = "Examples:\n  \
headwater dlq inspect pipeline.yaml                     # find the group's fingerprint\n  \
headwater dlq replay pipeline.yaml --group 3f0c9d2a71b6e4c8 --dry-run\n  \
headwater dlq replay pipeline.yaml --group 3f0c9d2a71b6e4c8 --dry-run --json\n\n\
Starts the pipeline's UDFs as `headwater run` would (the code as it is now), rebuilds each \
record of the group from its envelope (`raw`, `event_time`) and calls the step on them with \
the pipeline's retries and remediation. The report names the code the records failed with \
and the code now (`udf_version`), so a replay of unchanged code shows before it happens. \
Sending the records on to the pipeline's sinks exactly once is not available yet: \
docs/dlq.md shows how to send them through by hand.")]
    Replay {
        /// The pipeline file (YAML).
        pipeline: PathBuf,
        /// The group's fingerprint (`headwater dlq inspect` lists them).
        #[arg(long, value_name = "FINGERPRINT")]
        group: String,
        /// Run the records through the current code and report; write nothing.
        #[arg(long)]
        dry_run: bool,
        /// Print the report as one JSON document.
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
            json,
        } => replay(&pipeline, &group, dry_run, json),
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

fn replay(pipeline: &Path, fingerprint: &str, dry_run: bool, json: bool) -> ExitCode {
    let spec = match load(pipeline) {
        Ok(spec) => spec,
        Err(code) => return code,
    };
    if !dry_run {
        eprintln!(
            "error: sending dead letters back into the pipeline's sinks is not available yet; \
             `--dry-run` runs them through the current code and reports how many would now \
             succeed, writing nothing (docs/dlq.md shows how to send them through by hand)"
        );
        return ExitCode::from(EXIT_INVALID);
    }
    let sources: Vec<String> = spec.sources.iter().map(|s| s.name.clone()).collect();
    let (place, text) = match read_dlq(&spec) {
        Ok(Some(found)) => found,
        Ok(None) => (spec.dlq.path.clone(), String::new()),
        Err(code) => return code,
    };
    let selected = match replay::select_in(&text, &place, fingerprint, &sources) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(EXIT_FAILED);
        }
    };
    let records = selected.members.iter().map(|m| m.record.clone()).collect();
    let run = match dry_run::dry_run(&spec, &selected.step, records) {
        Ok(run) => run,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(EXIT_FAILED);
        }
    };
    let versions = selected.versions();
    let unchanged = versions.len() == 1 && versions[0].0 == run.code;
    if json {
        println!("{}", report_json(&selected, &run, unchanged));
    } else {
        print!("{}", render(&selected, &run, unchanged));
    }
    ExitCode::SUCCESS
}

fn render(s: &replay::Selected, run: &DryRun, unchanged: bool) -> String {
    let mut out = format!(
        "group {}: {} dead letter(s) at `{}` ({})\n",
        s.fingerprint,
        s.members.len() + s.unusable.len(),
        s.step,
        s.error
    );
    for (version, n) in s.versions() {
        out += &format!("  failed with  {version} ({n})\n");
    }
    out += &format!(
        "  code now     {}{}\n",
        run.code,
        if unchanged {
            "  (unchanged since they failed: fix the code first)"
        } else {
            ""
        }
    );
    out += &format!(
        "dry run: {} of {} would now succeed ({} output record(s))",
        run.succeeded, run.records, run.outputs
    );
    if run.dropped > 0 {
        out += &format!(", {} dropped by the remediation", run.dropped);
    }
    let again: usize = run.failed.iter().map(|f| f.count).sum();
    if again > 0 {
        out += &format!(", {again} would fail again:");
        for f in &run.failed {
            out += &format!("\n  {:>10}  {}  ({})", f.count, f.fingerprint, f.error);
        }
    }
    out.push('\n');
    for (line, why) in &s.unusable {
        out += &format!("  line {line} of the DLQ cannot be run again: {why}\n");
    }
    out += "nothing was written\n";
    out
}

fn report_json(s: &replay::Selected, run: &DryRun, unchanged: bool) -> serde_json::Value {
    serde_json::json!({
        "fingerprint": s.fingerprint,
        "step": s.step,
        "error_type": s.error_type,
        "dead_letters": s.members.len() + s.unusable.len(),
        "failed_with": s.versions().iter().map(|(v, n)| serde_json::json!({"udf_version": v, "count": n})).collect::<Vec<_>>(),
        "code_now": run.code,
        "code_unchanged": unchanged,
        "records": run.records,
        "would_succeed": run.succeeded,
        "outputs": run.outputs,
        "dropped": run.dropped,
        "would_fail": run.failed.iter().map(|f| serde_json::json!({"fingerprint": f.fingerprint, "error": f.error, "count": f.count})).collect::<Vec<_>>(),
        "unusable": s.unusable.iter().map(|(l, w)| serde_json::json!({"line": l, "why": w})).collect::<Vec<_>>(),
    })
}
