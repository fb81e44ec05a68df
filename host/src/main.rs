//! The `headwater` command line.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};

use clap::{Parser, Subcommand};

use headwater::config;

/// mimalloc: records are allocated on source threads and freed on sink threads, a pattern
/// glibc's per-thread arenas handle poorly.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
use headwater::runtime::{self, RunControl, RunError, RunOptions};

/// Exit code for a pipeline file or plan that is not valid.
const EXIT_INVALID: u8 = 2;
/// Exit code for a run that failed while processing.
const EXIT_FAILED: u8 = 1;

#[derive(Parser)]
#[command(
    name = "headwater",
    version,
    about = "Stateful stream processing with exactly-once state, event time and polyglot UDFs",
    long_about = "Headwater runs streaming pipelines described in a YAML file: sources, steps \
(filter, map, key_by, windows, UDFs) and sinks, with event-time watermarks and keyed state \
in RocksDB.\n\nStart with the quickstart:\n  headwater run examples/quickstart/pipeline.yaml\n\n\
The pipeline file format is documented in docs/pipeline.md.",
    after_help = "Exit codes: 0 success, 1 the run failed, 2 the pipeline file is invalid, \
130 interrupted.\nLogs: set HEADWATER_LOG=info (or debug) for more detail on stderr."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a pipeline until its input is exhausted (or Ctrl-C, which drains and stops).
    #[command(
        after_help = "Example:\n  headwater run examples/quickstart/pipeline.yaml\n\n\
Bounded sources (files, stdin, a Nexmark source with `events`) end the run when exhausted: \
every open window then fires as if the watermark reached +infinity. Results go to the sinks \
named in `output`; bad records go to the dead-letter queue (`dlq.path`). A summary is printed \
to stderr at the end."
    )]
    Run {
        /// The pipeline file (YAML).
        pipeline: PathBuf,
        /// Override `parallelism` from the file (number of parallel tasks).
        #[arg(long, short = 'p')]
        parallelism: Option<usize>,
        /// Do not print the progress line and summary.
        #[arg(long, short = 'q')]
        quiet: bool,
        /// Serve the control API on this address while running: GET /status (JSON) and
        /// /metrics (Prometheus text), e.g. `--control 127.0.0.1:9464`.
        #[arg(long, value_name = "ADDR")]
        control: Option<std::net::SocketAddr>,
    },
    /// Check a pipeline file without running it: every problem is reported with its line.
    #[command(
        after_help = "Example:\n  headwater validate examples/quickstart/pipeline.yaml\n\n\
Checks the YAML structure and types, expressions, references between steps, sinks and UDFs, \
that each UDF exists in its runtime, and that every source can be opened. Exit code 2 when \
anything is wrong."
    )]
    Validate {
        /// The pipeline file (YAML).
        pipeline: PathBuf,
    },
}

fn main() -> ExitCode {
    init_logging();
    let cli = Cli::parse();
    match cli.command {
        Command::Validate { pipeline } => validate(&pipeline),
        Command::Run {
            pipeline,
            parallelism,
            quiet,
            control,
        } => run(&pipeline, parallelism, quiet, control),
    }
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("HEADWATER_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
}

fn load(pipeline: &std::path::Path) -> Result<config::spec::PipelineSpec, ExitCode> {
    config::load(pipeline).map_err(|errors| {
        eprintln!("{errors}");
        ExitCode::from(EXIT_INVALID)
    })
}

fn validate(pipeline: &std::path::Path) -> ExitCode {
    let spec = match load(pipeline) {
        Ok(spec) => spec,
        Err(code) => return code,
    };
    match runtime::check(&spec) {
        Ok(()) => {
            println!(
                "{}: ok — pipeline `{}`: {} source(s), {} step(s), {} sink(s), parallelism {}",
                pipeline.display(),
                spec.name,
                spec.sources.len(),
                spec.steps.len(),
                spec.sinks.len(),
                spec.parallelism
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{}: {e}", pipeline.display());
            ExitCode::from(EXIT_INVALID)
        }
    }
}

fn run(
    pipeline: &std::path::Path,
    parallelism: Option<usize>,
    quiet: bool,
    control_api: Option<std::net::SocketAddr>,
) -> ExitCode {
    let mut spec = match load(pipeline) {
        Ok(spec) => spec,
        Err(code) => return code,
    };
    if let Some(p) = parallelism {
        spec.parallelism = p.max(1);
    }
    if spec.checkpoint.is_some() {
        tracing::warn!(
            "the `checkpoint` section is accepted but checkpointing is not implemented yet: \
             this run keeps no checkpoints and a crash starts it over"
        );
    }
    let control = RunControl::new();
    install_interrupt_handler(control.clone(), quiet);
    let opts = RunOptions {
        progress: !quiet,
        control: control_api,
    };
    match runtime::run(&spec, control, opts) {
        Ok(summary) => {
            if !quiet {
                eprintln!("{}", summary.render());
            }
            ExitCode::SUCCESS
        }
        Err(e @ RunError::Plan(_)) => {
            eprintln!("{}: {e}", pipeline.display());
            ExitCode::from(EXIT_INVALID)
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(EXIT_FAILED)
        }
    }
}

/// First Ctrl-C: stop reading, fire open windows, flush and print the summary. Second: quit.
fn install_interrupt_handler(control: std::sync::Arc<RunControl>, quiet: bool) {
    static PRESSES: AtomicUsize = AtomicUsize::new(0);
    let result = ctrlc::set_handler(move || {
        if PRESSES.fetch_add(1, Ordering::SeqCst) == 0 {
            if !quiet {
                eprintln!("\nstopping: draining in-flight records and firing open windows (Ctrl-C again to quit now)");
            }
            control.request_stop();
        } else {
            std::process::exit(130);
        }
    });
    if let Err(e) = result {
        tracing::warn!(error = %e, "cannot install the Ctrl-C handler");
    }
}
