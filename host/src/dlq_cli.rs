//! `headwater dlq ...`: look into a pipeline's dead-letter queue.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;

use headwater::dlq::inspect;

use super::{load, EXIT_FAILED};

#[derive(Subcommand)]
pub enum DlqCommand {
    /// The committed dead letters grouped by cause: one group per fingerprint (step, error
    /// type and the error message with its data taken out), most dead letters first, with
    /// when each cause first and last failed and sample records.
    #[command(after_help = "Examples:\n  \
headwater dlq inspect examples/quickstart/pipeline.yaml\n  \
headwater dlq inspect pipeline.yaml --samples 10\n  \
headwater dlq inspect pipeline.yaml --json | jq '.groups[0]'\n\n\
Reads the pipeline's dead-letter file (`dlq.path`, default `.headwater/<name>/dlq.jsonl`): \
what completed checkpoints committed, so it can run beside a live pipeline. Each envelope \
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
}

pub fn run(command: DlqCommand) -> ExitCode {
    match command {
        DlqCommand::Inspect {
            pipeline,
            samples,
            json,
        } => {
            let spec = match load(&pipeline) {
                Ok(spec) => spec,
                Err(code) => return code,
            };
            if let Some(sink) = &spec.dlq.sink {
                eprintln!(
                    "error: pipeline `{}` sends its dead letters to the sink `{sink}` (`dlq: {{ sink: {sink} }}`), not to a file; `dlq inspect` reads the dead-letter file: read the sink's output (each record is one envelope) instead",
                    spec.name
                );
                return ExitCode::from(EXIT_FAILED);
            }
            let path = &spec.dlq.path;
            if !path.exists() {
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
            match inspect::inspect(path, samples) {
                Ok(report) if json => {
                    println!("{}", report.to_json(path));
                    ExitCode::SUCCESS
                }
                Ok(report) => {
                    print!("{}", report.render(path));
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::from(EXIT_FAILED)
                }
            }
        }
    }
}
