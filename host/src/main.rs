//! The `headwater` command line.

mod dlq_cli;
mod udf_cli;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};

use clap::{Parser, Subcommand};

use headwater::checkpoint::inspect;
use headwater::checkpoint::manifest::manifest_key;
use headwater::checkpoint::recovery::StartMode;
use headwater::checkpoint::storage::CheckpointStorage;
use headwater::checkpoint::CheckpointError;
use headwater::config;
use headwater::runtime::control_auth::{self, ControlToken};
use headwater::runtime::control_client;

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
    /// Run a pipeline until its input is exhausted, or until Ctrl-C (which stops at a
    /// checkpoint; the next run resumes there).
    #[command(
        after_help = "Examples:\n  headwater run examples/quickstart/pipeline.yaml\n  \
headwater run pipeline.yaml --fresh          # start over: delete checkpoints, state, output\n  \
headwater run pipeline.yaml --from sp/       # start from a savepoint (any parallelism)\n\n\
Checkpoints are on by default (`checkpoint:` in the file; every 10s into \
.headwater/<name>/checkpoints). A run resumes from the newest complete checkpoint: state, \
source positions and watermarks are restored, and output is exactly-once: file sinks write \
part files (`results-<checkpoint>.jsonl`) made visible when their checkpoint completes.\n\n\
Bounded sources (files, stdin, a Nexmark source with `events`) end the run when exhausted: \
every open window then fires as if the watermark reached +infinity. Results go to the sinks \
named in `output`; bad records go to the dead-letter queue (`dlq.path`). A summary is printed \
to stderr at the end."
    )]
    Run {
        /// The pipeline file (YAML).
        pipeline: PathBuf,
        /// Start over: delete this pipeline's checkpoints, local state and file-sink output.
        #[arg(long, conflicts_with = "from")]
        fresh: bool,
        /// Start from this savepoint folder or checkpoint manifest
        /// (`.../manifests/0000000042.json`) instead of the newest checkpoint.
        #[arg(long, value_name = "PATH")]
        from: Option<String>,
        /// Override `parallelism` from the file (number of parallel tasks).
        #[arg(long, short = 'p')]
        parallelism: Option<usize>,
        /// Do not print the progress line and summary.
        #[arg(long, short = 'q')]
        quiet: bool,
        /// Serve the control API on this address while running: GET /status (JSON),
        /// GET /metrics (Prometheus text) and POST /savepoint?to=PATH (a savepoint without
        /// stopping), e.g. `--control 127.0.0.1:9464`.
        #[arg(long, value_name = "ADDR")]
        control: Option<std::net::SocketAddr>,
        /// A file holding the control API's bearer token: POST requests must send
        /// `Authorization: Bearer <token>` (default: the HEADWATER_CONTROL_TOKEN variable;
        /// without either, the run makes a random token and writes it, readable by you only,
        /// beside the pipeline's state folder (`.headwater/<name>/state.control-token`), where
        /// `headwater savepoint` finds it).
        #[arg(long, value_name = "PATH", requires = "control")]
        control_token_file: Option<PathBuf>,
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
    /// List or inspect a pipeline's checkpoints.
    #[command(subcommand)]
    Checkpoints(CheckpointsCommand),
    /// Upload, list, activate and roll back the Wasm modules of a running pipeline (through
    /// its control API; a new version runs from a checkpoint boundary on).
    #[command(subcommand)]
    Udf(udf_cli::UdfCommand),
    /// Look into the dead-letter queue: failed records grouped by cause.
    #[command(subcommand)]
    Dlq(dlq_cli::DlqCommand),
    /// Copy a checkpoint (default: the newest) into a self-contained savepoint folder, to
    /// restore elsewhere or with another parallelism.
    #[command(after_help = "Example (upgrade or rescale):\n  \
headwater run pipeline.yaml          # Ctrl-C: stops at a checkpoint\n  \
headwater savepoint pipeline.yaml --to savepoints/before-upgrade\n  \
headwater run pipeline.yaml -p 4 --from savepoints/before-upgrade\n\n\
The savepoint holds its manifest (`manifest.json`) and every state file it needs; `--to` \
may be a folder or an `s3://bucket/prefix` URL.\n\n\
Of a run that is going on, without stopping it (it takes a checkpoint at once):\n  \
headwater savepoint pipeline.yaml --to savepoints/now --control 127.0.0.1:9464\n\
The token comes from --control-token-file, else HEADWATER_CONTROL_TOKEN, else the file the run \
wrote beside the pipeline's state folder (`.headwater/<name>/state.control-token` by default).")]
    Savepoint {
        /// The pipeline file (YAML).
        pipeline: PathBuf,
        /// Where to write the savepoint (a new folder or `s3://` prefix).
        #[arg(long, value_name = "PATH")]
        to: String,
        /// The checkpoint to copy (default: the newest).
        #[arg(long, value_name = "ID", conflicts_with = "control")]
        checkpoint: Option<u64>,
        /// Ask the run serving the control API on this address for a savepoint now, instead
        /// of copying a stored checkpoint.
        #[arg(long, value_name = "ADDR")]
        control: Option<std::net::SocketAddr>,
        /// A file holding the run's control token (default: HEADWATER_CONTROL_TOKEN, else the
        /// token the run wrote beside its state folder).
        #[arg(long, value_name = "PATH", requires = "control")]
        control_token_file: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum CheckpointsCommand {
    /// One line per complete checkpoint: id, time, duration, state size, uploaded bytes, files.
    #[command(
        after_help = "Example:\n  headwater checkpoints list examples/quickstart/pipeline.yaml"
    )]
    List {
        /// The pipeline file (YAML); its `checkpoint.location` is read.
        pipeline: PathBuf,
    },
    /// Everything a checkpoint holds: source positions, task state and watermarks, output.
    #[command(
        after_help = "Example:\n  headwater checkpoints show examples/quickstart/pipeline.yaml 3"
    )]
    Show {
        /// The pipeline file (YAML).
        pipeline: PathBuf,
        /// The checkpoint id (see `checkpoints list`); default: the newest.
        id: Option<u64>,
    },
}

fn main() -> ExitCode {
    init_logging();
    let cli = Cli::parse();
    match cli.command {
        Command::Validate { pipeline } => validate(&pipeline),
        Command::Udf(command) => udf_cli::run(command),
        Command::Dlq(command) => dlq_cli::run(command),
        Command::Run {
            pipeline,
            parallelism,
            quiet,
            control,
            control_token_file,
            fresh,
            from,
        } => {
            let start = match (fresh, from) {
                (true, _) => StartMode::Fresh,
                (false, Some(path)) => StartMode::From(path),
                (false, None) => StartMode::Resume,
            };
            let token = match control.map(|_| ControlToken::load(control_token_file.as_deref())) {
                Some(Err(e)) => {
                    eprintln!("error: {e}");
                    return ExitCode::from(EXIT_INVALID);
                }
                Some(Ok(token)) => token,
                None => None,
            };
            run(&pipeline, parallelism, quiet, control, token, start)
        }
        Command::Checkpoints(CheckpointsCommand::List { pipeline }) => {
            with_storage(&pipeline, |storage, _| {
                println!("{}", inspect::list(storage)?);
                Ok(())
            })
        }
        Command::Checkpoints(CheckpointsCommand::Show { pipeline, id }) => {
            with_storage(&pipeline, |storage, _| {
                let id = match id {
                    Some(id) => id,
                    None => *storage.list_checkpoints()?.last().ok_or_else(|| {
                        CheckpointError::Incompatible(format!(
                            "no checkpoints in {} yet",
                            storage.url()
                        ))
                    })?,
                };
                let m = storage.read_manifest(id)?;
                print!("{}", inspect::show(&m, &storage.display(&manifest_key(id))));
                Ok(())
            })
        }
        Command::Savepoint {
            pipeline,
            to,
            control: Some(address),
            control_token_file,
            ..
        } => live_savepoint(&pipeline, &to, address, control_token_file.as_deref()),
        Command::Savepoint {
            pipeline,
            to,
            checkpoint,
            control: None,
            ..
        } => with_storage(&pipeline, |storage, spec| {
            let participants = runtime::recovery_participants(spec);
            let info = inspect::savepoint(storage, checkpoint, &to, &participants)?;
            println!(
                "savepoint of checkpoint {} written to {} ({} file(s), {} copied)\nrestore it with: headwater run {} --from {}",
                info.from,
                info.location,
                info.files,
                headwater::metrics::bytes(info.bytes),
                pipeline.display(),
                to
            );
            Ok(())
        }),
    }
}

/// Asks a running pipeline for a savepoint through its control API.
fn live_savepoint(
    pipeline: &std::path::Path,
    to: &str,
    address: std::net::SocketAddr,
    token_file: Option<&std::path::Path>,
) -> ExitCode {
    let token = match ControlToken::load(token_file) {
        Ok(Some(token)) => Some(token),
        // Neither given: the token the run made for itself, if this user can read it.
        Ok(None) => match load(pipeline) {
            Ok(spec) => {
                let path = control_auth::generated_token_path(&spec.state.dir);
                std::fs::read_to_string(&path)
                    .ok()
                    .and_then(|text| ControlToken::new(&text, "file").ok())
            }
            Err(code) => return code,
        },
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(EXIT_INVALID);
        }
    };
    // The run resolves relative paths against its own folder: send this one's.
    let to = if to.contains("://") {
        to.to_string()
    } else {
        std::path::absolute(to)
            .map(|p| p.display().to_string())
            .unwrap_or_else(|_| to.to_string())
    };
    let target = format!("/savepoint?to={}", control_client::encode_query_value(&to));
    let wait = std::time::Duration::from_secs(3600);
    match control_client::request(address, "POST", &target, token.as_ref(), wait) {
        Ok(answer) if answer.status == 200 => {
            let v: serde_json::Value = serde_json::from_str(&answer.body).unwrap_or_default();
            println!(
                "savepoint of checkpoint {} written to {} ({} file(s), {} copied)\nrestore it with: headwater run {} --from {}",
                v["checkpoint"],
                v["location"].as_str().unwrap_or(&to),
                v["files"],
                headwater::metrics::bytes(v["bytes"].as_u64().unwrap_or(0)),
                pipeline.display(),
                to
            );
            ExitCode::SUCCESS
        }
        Ok(answer) => {
            let hint = match (answer.status, &token) {
                (401, None) => "; set HEADWATER_CONTROL_TOKEN or pass --control-token-file",
                _ => "",
            };
            eprintln!(
                "error: the run refused the savepoint ({}): {}{hint}",
                answer.status,
                answer.error_message()
            );
            ExitCode::from(EXIT_FAILED)
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(EXIT_FAILED)
        }
    }
}

/// Opens the checkpoint storage named by a pipeline file and runs `f` on it.
fn with_storage(
    pipeline: &std::path::Path,
    f: impl FnOnce(&CheckpointStorage, &config::spec::PipelineSpec) -> Result<(), CheckpointError>,
) -> ExitCode {
    let spec = match load(pipeline) {
        Ok(spec) => spec,
        Err(code) => return code,
    };
    let result = CheckpointStorage::open(&spec.checkpoint.location).and_then(|s| f(&s, &spec));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(EXIT_FAILED)
        }
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
    config::load(pipeline, headwater::udf::runtimes()).map_err(|errors| {
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
    control_token: Option<ControlToken>,
    start: StartMode,
) -> ExitCode {
    let mut spec = match load(pipeline) {
        Ok(spec) => spec,
        Err(code) => return code,
    };
    if let Some(p) = parallelism {
        spec.parallelism = p.max(1);
    }
    if !spec.checkpoint.enabled && start != StartMode::Resume {
        eprintln!(
            "{}: `--fresh` and `--from` need checkpoints, which this pipeline turns off (`checkpoint: {{ enabled: false }}`)",
            pipeline.display()
        );
        return ExitCode::from(EXIT_INVALID);
    }
    // Every request that changes the run needs a token: without one given, make one that only
    // this user can read (and `headwater savepoint` finds).
    let control_token = match (control_api, control_token) {
        (Some(_), None) => {
            let path = control_auth::generated_token_path(&spec.state.dir);
            match ControlToken::generate().and_then(|t| t.write_private(&path).map(|()| t)) {
                Ok(token) => {
                    if !quiet {
                        eprintln!(
                            "control API token written to {} (send it as `Authorization: Bearer <token>`)",
                            path.display()
                        );
                    }
                    Some(token)
                }
                Err(e) => {
                    eprintln!(
                        "error: cannot write the control API token to {}: {e}; pass --control-token-file or set HEADWATER_CONTROL_TOKEN",
                        path.display()
                    );
                    return ExitCode::from(EXIT_FAILED);
                }
            }
        }
        (_, token) => token,
    };
    let control = RunControl::new();
    install_interrupt_handler(control.clone(), quiet, spec.checkpoint.enabled);
    let opts = RunOptions {
        progress: !quiet,
        control: control_api,
        control_token,
        start,
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

/// First Ctrl-C: stop (at a checkpoint when checkpoints are on; else drain, fire open windows and
/// flush) and print the summary. Second: quit at once.
fn install_interrupt_handler(
    control: std::sync::Arc<RunControl>,
    quiet: bool,
    checkpointing: bool,
) {
    static PRESSES: AtomicUsize = AtomicUsize::new(0);
    let result = ctrlc::set_handler(move || {
        if PRESSES.fetch_add(1, Ordering::SeqCst) == 0 {
            if !quiet {
                if checkpointing {
                    eprintln!("\nstopping: taking a checkpoint to resume from (Ctrl-C again to quit now; the next run resumes from the last checkpoint either way)");
                } else {
                    eprintln!("\nstopping: draining in-flight records and firing open windows (Ctrl-C again to quit now)");
                }
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
