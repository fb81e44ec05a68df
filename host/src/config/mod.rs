//! The pipeline file: strict YAML decoding into [`spec::PipelineSpec`], reporting every
//! problem at once with file, line, column and a hint. The format is documented key by key in
//! `docs/pipeline.md`.
//!
//! One module per part of the file: `pipeline.rs` the top level, `sources.rs`, `kafka.rs`,
//! `sinks.rs`, `steps.rs`, `windows.rs`, `checkpoint.rs`, `udfs.rs` and `retry.rs`; `decode.rs` and
//! `yaml.rs` the typed, error-collecting reading they share. UDF runtimes read their own
//! options (see [`RuntimeCatalog`]).

mod checkpoint;
mod decode;
mod kafka;
mod pipeline;
mod retry;
mod sinks;
mod sources;
pub mod spec;
mod steps;
mod udfs;
mod windows;
mod yaml;

pub use decode::parse_byte_size;
pub use udfs::{OptionsReader, RuntimeCatalog};

use std::fmt;
use std::path::Path;

use spec::PipelineSpec;

/// One problem in a pipeline file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub col: usize,
    pub message: String,
    pub hint: Option<String>,
}

/// Every problem found in a pipeline file.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct ConfigErrors {
    pub file: String,
    pub errors: Vec<ConfigError>,
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for e in &self.errors {
            if e.line > 0 {
                writeln!(
                    f,
                    "{}:{}:{}: error: {}",
                    self.file, e.line, e.col, e.message
                )?;
            } else {
                writeln!(f, "{}: error: {}", self.file, e.message)?;
            }
            if let Some(hint) = &e.hint {
                writeln!(f, "  hint: {hint}")?;
            }
        }
        let n = self.errors.len();
        write!(
            f,
            "{n} problem{} found in {}",
            if n == 1 { "" } else { "s" },
            self.file
        )
    }
}

/// Reads and validates a pipeline file. Relative paths in it are relative to its folder; its
/// UDFs may name the runtimes of `runtimes` (`headwater::udf::runtimes()`).
pub fn load(path: &Path, runtimes: &dyn RuntimeCatalog) -> Result<PipelineSpec, ConfigErrors> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| ConfigErrors {
        file: file.clone(),
        errors: vec![ConfigError {
            line: 0,
            col: 0,
            message: format!("cannot read the pipeline file: {e}"),
            hint: Some("check the path; `headwater run --help` shows an example".into()),
        }],
    })?;
    load_str(&text, &file, runtimes)
}

/// Validates pipeline text; `file` names it in messages and its folder anchors relative paths.
pub fn load_str(
    text: &str,
    file: &str,
    runtimes: &dyn RuntimeCatalog,
) -> Result<PipelineSpec, ConfigErrors> {
    let base = Path::new(file)
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let fail = |errors| ConfigErrors {
        file: file.to_string(),
        errors,
    };
    let root = match yaml::parse(text) {
        Ok(Some(root)) => root,
        Ok(None) => {
            return Err(fail(vec![ConfigError {
            line: 1,
            col: 1,
            message: "the pipeline file is empty".into(),
            hint: Some(
                "start from examples/quickstart/pipeline.yaml; docs/pipeline.md lists every key"
                    .into(),
            ),
        }]))
        }
        Err(e) => {
            return Err(fail(vec![ConfigError {
                line: e.line,
                col: e.col,
                message: format!("invalid YAML: {}", e.message),
                hint: Some(
                    "check indentation (spaces, not tabs) and matching brackets and quotes".into(),
                ),
            }]))
        }
    };
    let mut errs = decode::Errors::default();
    let spec = pipeline::pipeline(&root, &base, runtimes, &mut errs);
    match spec {
        Some(spec) if errs.list.is_empty() => Ok(spec),
        _ => {
            let mut errors = errs.list;
            errors.sort_by_key(|e| (e.line, e.col));
            Err(fail(errors))
        }
    }
}

#[cfg(test)]
mod tests;
