//! The `udfs` section. This module reads the keys every UDF has (`runtime`, `function`,
//! `kind`) and hands the rest of an entry to the runtime it names: the runtimes are plug-ins
//! (`udf::registry`), passed in as a [`RuntimeCatalog`], each reading its own options through
//! an [`OptionsReader`]. The configuration itself knows no runtime by name.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::decode::{
    byte_size, choice, duration, entries, loc, positive_count, positive_duration, resolve, string,
    string_list, Errors, MapReader,
};
use super::spec::{RetrySpec, UdfKind, UdfRuntimeSpec, UdfSpec};
use super::yaml::Node;

/// The UDF runtimes a pipeline may name (implemented by `udf::registry::Registry`).
pub trait RuntimeCatalog {
    /// Every name `runtime:` accepts, in the order messages list them.
    fn names(&self) -> Vec<&'static str>;
    /// Reads the options of the runtime called `name` (one of [`RuntimeCatalog::names`]) from
    /// a UDF's entry; `None` when they are invalid (each problem reported through `options`).
    fn read_options(
        &self,
        name: &str,
        options: &mut OptionsReader<'_, '_>,
    ) -> Option<UdfRuntimeSpec>;
}

/// A runtime's view of one `udfs` entry: it reads its own keys (every other key is refused as
/// unknown), reporting problems with the entry's line and column like the rest of the file.
pub struct OptionsReader<'a, 'r> {
    map: &'r mut MapReader<'a>,
    errs: &'r mut Errors,
    ctx: &'r str,
    base: &'r Path,
}

impl<'a, 'r> OptionsReader<'a, 'r> {
    /// The entry's name in messages (``udf `name` ``).
    pub fn context(&self) -> &str {
        self.ctx
    }

    /// `p` relative to the pipeline file's folder (absolute paths as they are).
    pub fn resolve(&self, p: &str) -> PathBuf {
        resolve(self.base, p)
    }

    /// The pipeline file's folder.
    pub fn base(&self) -> &Path {
        self.base
    }

    /// Whether `key` is given (a null value counts as absent).
    pub fn has(&mut self, key: &'static str) -> bool {
        self.map.get(key).is_some()
    }

    /// A string key that must be given; `hint` says what to write when it is missing.
    pub fn required_string(&mut self, key: &'static str, hint: &str) -> Option<String> {
        let node = self.map.required(key, self.errs, hint)?;
        string(node, &format!("{} {key}", self.ctx), self.errs)
    }

    pub fn string(&mut self, key: &'static str) -> Option<String> {
        let node = self.map.get(key)?;
        string(node, &format!("{} {key}", self.ctx), self.errs)
    }

    pub fn duration(&mut self, key: &'static str) -> Option<Duration> {
        let node = self.map.get(key)?;
        duration(node, &format!("{} {key}", self.ctx), self.errs)
    }

    /// A duration longer than zero.
    pub fn positive_duration(&mut self, key: &'static str) -> Option<Duration> {
        let node = self.map.get(key)?;
        positive_duration(node, &format!("{} {key}", self.ctx), self.errs)
    }

    /// A size in bytes (`16MiB`).
    pub fn byte_size(&mut self, key: &'static str) -> Option<usize> {
        let node = self.map.get(key)?;
        byte_size(node, &format!("{} {key}", self.ctx), self.errs)
    }

    /// A whole number of at least 1 (workers, batch sizes); `default` when absent or invalid.
    pub fn count(&mut self, key: &'static str, default: usize) -> usize {
        let node = self.map.get(key);
        positive_count(node, &format!("{} {key}", self.ctx), default, self.errs)
    }

    /// A name or a list of names, each one of `choices` (the valid ones, in order).
    pub fn choices<'c>(&mut self, key: &'static str, choices: &[&'c str]) -> Vec<&'c str> {
        let Some(node) = self.map.get(key) else {
            return Vec::new();
        };
        let context = format!("{} {key}", self.ctx);
        string_list(node, &context, self.errs)
            .into_iter()
            .filter_map(|(_, item)| choice(item, choices, &context, self.errs))
            .collect()
    }

    /// Reports a problem at `key`'s value (at the entry when `key` is absent).
    pub fn error_at(&mut self, key: &'static str, message: String, hint: Option<String>) {
        let node = self.map.get(key).unwrap_or(self.map.node());
        self.errs.at(node, message, hint);
    }

    /// Reports a problem with the entry as a whole.
    pub fn error(&mut self, message: String, hint: Option<String>) {
        self.errs.at(self.map.node(), message, hint);
    }
}

const KINDS: [&str; 5] = [
    "map",
    "filter",
    "flat_map",
    "keyed_process",
    "window_aggregate",
];

pub(super) fn udfs(
    node: &Node,
    base: &Path,
    runtimes: &dyn RuntimeCatalog,
    retry: RetrySpec,
    errs: &mut Errors,
) -> Vec<UdfSpec> {
    let names = runtimes.names();
    let missing_runtime = match names.split_last() {
        Some((last, [])) => format!("set `runtime: {last}`"),
        Some((last, rest)) => format!(
            "set {} or `runtime: {last}`",
            rest.iter()
                .map(|n| format!("`runtime: {n}`"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        None => "no UDF runtime is available".to_string(),
    };
    let mut out = Vec::new();
    for (k, v) in entries(node, "udfs", errs) {
        let name = k.scalar().unwrap_or("").to_string();
        let ctx = format!("udf `{name}`");
        let Some(mut m) = MapReader::new(v, &ctx, errs) else {
            continue;
        };
        let runtime = m
            .required("runtime", errs, &missing_runtime)
            .and_then(|n| choice(n, &names, &format!("{ctx} runtime"), errs));
        let runtime = runtime.and_then(|runtime| {
            let mut options = OptionsReader {
                map: &mut m,
                errs: &mut *errs,
                ctx: &ctx,
                base,
            };
            runtimes.read_options(runtime, &mut options)
        });
        let function = m
            .required(
                "function",
                errs,
                "name the function to call, e.g. `function: geohash`",
            )
            .and_then(|n| string(n, &format!("{ctx} function"), errs));
        let kind = match m.get("kind") {
            Some(n) => match choice(n, &KINDS, &format!("{ctx} kind"), errs) {
                Some("filter") => UdfKind::Filter,
                Some("flat_map") => UdfKind::FlatMap,
                Some("keyed_process") => UdfKind::KeyedProcess,
                Some("window_aggregate") => UdfKind::WindowAggregate,
                _ => UdfKind::Map,
            },
            None => UdfKind::Map,
        };
        let retry = m
            .get("retry")
            .map(|n| super::retry::retry(n, &format!("{ctx} retry"), retry, errs))
            .unwrap_or(retry);
        m.finish(errs);
        if let (Some(runtime), Some(function)) = (runtime, function) {
            out.push(UdfSpec {
                name,
                runtime,
                function,
                kind,
                retry,
                location: loc(v),
            });
        }
    }
    out
}
