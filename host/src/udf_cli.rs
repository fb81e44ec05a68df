//! `headwater udf ...`: manage the Wasm modules of a running pipeline through its control API.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Subcommand};

use headwater::runtime::control_auth::{self, ControlToken};
use headwater::runtime::control_client::{self, encode_query_value};

use super::{load, EXIT_FAILED, EXIT_INVALID};

const HOW: &str = "Modules are checked when uploaded (ABI version, imports, the UDF's function \
and kind) and kept next to the checkpoints (`udf-modules/<sha256>.wasm`). An activation waits \
for the next checkpoint: every record after that checkpoint's barrier runs on the new version \
and every record before it on the old one, so each checkpoint's output comes from one version; \
the checkpoint records the version, and a restart from it runs that version.\n\n\
The token comes from --control-token-file, else HEADWATER_CONTROL_TOKEN, else the file the run \
wrote beside the pipeline's state folder (`.headwater/<name>/state.control-token`).";

#[derive(Subcommand)]
pub enum UdfCommand {
    /// Upload a new version of a Wasm UDF's module to the running pipeline (checked, stored,
    /// not yet run: see `activate`).
    #[command(after_help = format!("Example:\n  \
headwater udf upload pipeline.yaml enrich target/wasm32-wasip1/release/enrich.wasm --control 127.0.0.1:9464\n  \
headwater udf activate pipeline.yaml enrich 3fa9c2 --control 127.0.0.1:9464\n\n{HOW}"))]
    Upload {
        /// The pipeline file (YAML) of the run.
        pipeline: PathBuf,
        /// The Wasm UDF (its name under `udfs:`).
        udf: String,
        /// The module (`.wasm`).
        module: PathBuf,
        #[command(flatten)]
        control: Control,
    },
    /// List a Wasm UDF's uploaded versions: digest, size, when, who, and which one runs.
    #[command(after_help = format!(
        "Example:\n  headwater udf list pipeline.yaml enrich --control 127.0.0.1:9464\n\n{HOW}"
    ))]
    List {
        /// The pipeline file (YAML) of the run.
        pipeline: PathBuf,
        /// The Wasm UDF (its name under `udfs:`).
        udf: String,
        #[command(flatten)]
        control: Control,
    },
    /// Run an uploaded version from the next checkpoint on (waits for that checkpoint), or
    /// beside the active one without emitting (`--shadow`).
    #[command(after_help = format!(
        "Example:\n  headwater udf activate pipeline.yaml enrich 3fa9c2 --control 127.0.0.1:9464\n\n\
VERSION is a digest from `headwater udf list`, or its first characters.\n\n\
Try a version first with --shadow: it runs on the same records as the active one (map, filter \
and flat_map calls), its results compared and thrown away; GET /status shows how many matched, \
differed (with a few samples) or failed (`wasm_udfs`), /metrics counts them \
(headwater_wasm_shadow_records_total). Stop it with `headwater udf stop-shadow`, or by \
activating the version.\n\n{HOW}"
    ))]
    Activate {
        /// The pipeline file (YAML) of the run.
        pipeline: PathBuf,
        /// The Wasm UDF (its name under `udfs:`).
        udf: String,
        /// The version: its SHA-256 digest or an unambiguous prefix of it.
        version: String,
        /// Run it beside the active version without emitting its results, comparing them.
        #[arg(long)]
        shadow: bool,
        #[command(flatten)]
        control: Control,
    },
    /// Stop a shadow run (`activate --shadow`).
    #[command(
        after_help = "Example:\n  headwater udf stop-shadow pipeline.yaml enrich --control 127.0.0.1:9464"
    )]
    StopShadow {
        /// The pipeline file (YAML) of the run.
        pipeline: PathBuf,
        /// The Wasm UDF (its name under `udfs:`).
        udf: String,
        #[command(flatten)]
        control: Control,
    },
    /// Run the previously active version again, from the next checkpoint on.
    #[command(after_help = format!(
        "Example:\n  headwater udf rollback pipeline.yaml enrich --control 127.0.0.1:9464\n\n{HOW}"
    ))]
    Rollback {
        /// The pipeline file (YAML) of the run.
        pipeline: PathBuf,
        /// The Wasm UDF (its name under `udfs:`).
        udf: String,
        #[command(flatten)]
        control: Control,
    },
}

/// Where the running pipeline's control API is, and who asks.
#[derive(Args)]
pub struct Control {
    /// The address of the run's control API (`headwater run --control ADDR`).
    #[arg(long, value_name = "ADDR")]
    control: SocketAddr,
    /// A file holding the run's control token (default: HEADWATER_CONTROL_TOKEN, else the
    /// token the run wrote beside its state folder).
    #[arg(long, value_name = "PATH")]
    control_token_file: Option<PathBuf>,
    /// Who uploads or activates, for the versions record (default: $USER).
    #[arg(long, value_name = "NAME")]
    user: Option<String>,
}

pub fn run(command: UdfCommand) -> ExitCode {
    let (pipeline, udf, control) = match &command {
        UdfCommand::Upload {
            pipeline,
            udf,
            control,
            ..
        }
        | UdfCommand::List {
            pipeline,
            udf,
            control,
        }
        | UdfCommand::Activate {
            pipeline,
            udf,
            control,
            ..
        }
        | UdfCommand::Rollback {
            pipeline,
            udf,
            control,
        }
        | UdfCommand::StopShadow {
            pipeline,
            udf,
            control,
        } => (pipeline, udf, control),
    };
    let token = match token(pipeline, control.control_token_file.as_deref()) {
        Ok(t) => t,
        Err(code) => return code,
    };
    let user = control
        .user
        .clone()
        .or_else(|| std::env::var("USER").ok())
        .filter(|u| !u.trim().is_empty());
    let headers: Vec<(&str, &str)> = user
        .as_deref()
        .map(|u| vec![("X-Headwater-User", u)])
        .unwrap_or_default();
    let base = format!("/udfs/{}", encode_query_value(udf));
    let body;
    let (method, target) = match &command {
        UdfCommand::Upload { module, .. } => {
            body = match std::fs::read(module) {
                Ok(b) => b,
                Err(e) => {
                    eprintln!("error: cannot read {}: {e}", module.display());
                    return ExitCode::from(EXIT_INVALID);
                }
            };
            ("POST", format!("{base}/versions"))
        }
        UdfCommand::List { .. } => {
            body = Vec::new();
            ("GET", format!("{base}/versions"))
        }
        UdfCommand::Activate {
            version, shadow, ..
        } => {
            body = Vec::new();
            (
                "POST",
                format!(
                    "{base}/activate?version={}{}",
                    encode_query_value(version),
                    if *shadow { "&shadow=true" } else { "" }
                ),
            )
        }
        UdfCommand::StopShadow { .. } => {
            body = Vec::new();
            ("POST", format!("{base}/shadow/stop"))
        }
        UdfCommand::Rollback { .. } => {
            body = Vec::new();
            ("POST", format!("{base}/rollback"))
        }
    };
    let wait = Duration::from_secs(900);
    let answer = match control_client::request_with_body(
        control.control,
        method,
        &target,
        token.as_ref(),
        &headers,
        &body,
        wait,
    ) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(EXIT_FAILED);
        }
    };
    if !(200..300).contains(&answer.status) {
        let hint = match (answer.status, &token) {
            (401, None) => "; set HEADWATER_CONTROL_TOKEN or pass --control-token-file",
            _ => "",
        };
        eprintln!(
            "error: the run refused ({}): {}{hint}",
            answer.status,
            answer.error_message()
        );
        return ExitCode::from(EXIT_FAILED);
    }
    let v: serde_json::Value = serde_json::from_str(&answer.body).unwrap_or_default();
    let s = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_string();
    match command {
        UdfCommand::Upload { .. } => println!(
            "uploaded {} ({} bytes) as a version of `{udf}`{}\nrun it with: headwater udf activate {} {udf} {} --control {}",
            s(&v["digest"]),
            v["size"],
            if v["active"] == true { " (it is the active one)" } else { "" },
            pipeline.display(),
            short(&s(&v["digest"])),
            control.control
        ),
        UdfCommand::List { .. } => {
            println!("{:<3}{:<66}{:>10}  {:<22}uploader", "", "digest", "bytes", "uploaded");
            for version in v["versions"].as_array().into_iter().flatten() {
                println!(
                    "{:<3}{:<66}{:>10}  {:<22}{}",
                    if version["active"] == true { "*" } else { "" },
                    s(&version["digest"]),
                    version["size"],
                    s(&version["uploaded_at"]),
                    s(&version["uploader"])
                );
            }
        }
        UdfCommand::Activate { shadow: true, .. } => println!(
            "`{udf}` runs {} beside {} without emitting: see `wasm_udfs` in GET /status",
            s(&v["shadow"]),
            s(&v["active"])
        ),
        UdfCommand::StopShadow { .. } => println!("the shadow run of `{udf}` stopped"),
        UdfCommand::Activate { .. } | UdfCommand::Rollback { .. } => {
            let when = match v["after_checkpoint"].as_u64() {
                Some(id) => format!("from checkpoint {id}'s barrier on (its output and earlier ones came from the version before)"),
                None => "now (checkpoints are off)".to_string(),
            };
            println!("`{udf}` runs {} {when}", s(&v["active"]));
        }
    }
    ExitCode::SUCCESS
}

fn short(digest: &str) -> &str {
    digest.get(..12).unwrap_or(digest)
}

/// The control token, found like `headwater savepoint` does.
fn token(pipeline: &Path, file: Option<&Path>) -> Result<Option<ControlToken>, ExitCode> {
    match ControlToken::load(file) {
        Ok(Some(token)) => Ok(Some(token)),
        Ok(None) => {
            let spec = load(pipeline)?;
            let path = control_auth::generated_token_path(&spec.state.dir);
            Ok(std::fs::read_to_string(&path)
                .ok()
                .and_then(|text| ControlToken::new(&text, "file").ok()))
        }
        Err(e) => {
            eprintln!("error: {e}");
            Err(ExitCode::from(EXIT_INVALID))
        }
    }
}
