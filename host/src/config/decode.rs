//! Typed reading of a spanned YAML tree that collects every problem instead of stopping at
//! the first one.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::spec::Location;
use super::yaml::{Kind, Node};
use super::ConfigError;

/// Problems found so far.
#[derive(Default, Debug)]
pub struct Errors {
    pub list: Vec<ConfigError>,
}

impl Errors {
    pub fn at(&mut self, node: &Node, message: impl Into<String>, hint: Option<String>) {
        self.list.push(ConfigError {
            line: node.line,
            col: node.col,
            message: message.into(),
            hint,
        });
    }

    pub fn expected(&mut self, node: &Node, what: &str, context: &str) {
        self.at(
            node,
            format!("{context}: expected {what}, found {}", node.describe()),
            None,
        );
    }
}

/// Suggests the closest of `valid` to `given`, if any is close.
pub fn suggest<'a>(given: &str, valid: &[&'a str]) -> Option<&'a str> {
    valid
        .iter()
        .copied()
        .map(|v| (v, strsim::jaro_winkler(given, v)))
        .filter(|(_, score)| *score > 0.75)
        .max_by(|a, b| a.1.total_cmp(&b.1))
        .map(|(v, _)| v)
}

/// Reads the keys of one mapping; reports unknown and duplicate keys on [`MapReader::finish`].
pub struct MapReader<'a> {
    node: &'a Node,
    entries: &'a [(Node, Node)],
    used: Vec<bool>,
    asked: Vec<&'static str>,
    context: String,
}

impl<'a> MapReader<'a> {
    /// None (with an error) when `node` is not a mapping.
    pub fn new(node: &'a Node, context: &str, errs: &mut Errors) -> Option<MapReader<'a>> {
        match &node.kind {
            Kind::Map(entries) => {
                let mut seen: Vec<&str> = Vec::new();
                for (k, _) in entries {
                    let name = k.scalar().unwrap_or("");
                    if seen.contains(&name) {
                        errs.at(
                            k,
                            format!("duplicate key `{name}` in {context}"),
                            Some("each key may appear once; remove one".into()),
                        );
                    }
                    seen.push(name);
                }
                Some(MapReader {
                    node,
                    entries,
                    used: vec![false; entries.len()],
                    asked: Vec::new(),
                    context: context.to_string(),
                })
            }
            _ => {
                errs.expected(node, "a mapping of `key: value`", context);
                None
            }
        }
    }

    /// The value of `key`, if present (a null value counts as absent).
    pub fn get(&mut self, key: &'static str) -> Option<&'a Node> {
        self.asked.push(key);
        let idx = self
            .entries
            .iter()
            .position(|(k, _)| k.scalar() == Some(key))?;
        self.used[idx] = true;
        let value = &self.entries[idx].1;
        (!value.is_null()).then_some(value)
    }

    /// The value of a required key; reports it missing otherwise.
    pub fn required(
        &mut self,
        key: &'static str,
        errs: &mut Errors,
        hint: &str,
    ) -> Option<&'a Node> {
        let v = self.get(key);
        if v.is_none() {
            errs.at(
                self.node,
                format!("{}: missing required key `{key}`", self.context),
                Some(hint.to_string()),
            );
        }
        v
    }

    /// Reports every key that was never asked for.
    /// The mapping itself (for errors about a missing key).
    pub fn node(&self) -> &'a Node {
        self.node
    }

    pub fn finish(self, errs: &mut Errors) {
        for ((k, _), used) in self.entries.iter().zip(&self.used) {
            if *used {
                continue;
            }
            let name = k.scalar().unwrap_or("?");
            let mut valid = self.asked.clone();
            valid.sort_unstable();
            valid.dedup();
            let hint = match suggest(name, &valid) {
                Some(s) => format!("did you mean `{s}`? valid keys here: {}", valid.join(", ")),
                None => format!("valid keys here: {}", valid.join(", ")),
            };
            errs.at(
                k,
                format!("unknown key `{name}` in {}", self.context),
                Some(hint),
            );
        }
    }
}

pub fn string(node: &Node, context: &str, errs: &mut Errors) -> Option<String> {
    match &node.kind {
        Kind::Scalar { text, .. } => Some(text.clone()),
        _ => {
            errs.expected(node, "a string", context);
            None
        }
    }
}

pub fn uint(node: &Node, context: &str, errs: &mut Errors) -> Option<u64> {
    match node.scalar().map(|s| s.replace('_', "").parse::<u64>()) {
        Some(Ok(n)) => Some(n),
        _ => {
            errs.expected(node, "a whole number >= 0", context);
            None
        }
    }
}

/// A size in bytes, at least 1: a whole number (`1048576`) or a number with a unit (`512KiB`,
/// `16MiB`, `1GiB`; `KB`/`MB`/`GB` are powers of 1000).
pub fn byte_size(node: &Node, context: &str, errs: &mut Errors) -> Option<usize> {
    let parsed = node.scalar().and_then(parse_byte_size);
    match parsed {
        Some(n) if n > 0 => Some(n),
        _ => {
            errs.expected(
                node,
                "a size in bytes like `1048576`, `512KiB` or `16MiB` (at least 1)",
                context,
            );
            None
        }
    }
}

/// `16MiB` → 16777216; None when it is not a size.
pub fn parse_byte_size(text: &str) -> Option<usize> {
    let text = text.trim().replace('_', "");
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let n: u64 = digits.parse().ok()?;
    let unit_bytes: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kib" | "k" => 1 << 10,
        "mib" | "m" => 1 << 20,
        "gib" | "g" => 1 << 30,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        _ => return None,
    };
    usize::try_from(n.checked_mul(unit_bytes)?).ok()
}

pub fn duration(node: &Node, context: &str, errs: &mut Errors) -> Option<Duration> {
    let Some(text) = node.scalar() else {
        errs.expected(node, "a duration like `5s`", context);
        return None;
    };
    if text == "0" {
        return Some(Duration::ZERO);
    }
    match humantime::parse_duration(text) {
        Ok(d) => Some(d),
        Err(e) => {
            errs.at(
                node,
                format!("{context}: `{text}` is not a duration ({e})"),
                Some("write a number and a unit: `500ms`, `5s`, `1m`, `2h`, `1h 30m`".into()),
            );
            None
        }
    }
}

/// A positive duration (sizes, gaps, intervals).
pub fn positive_duration(node: &Node, context: &str, errs: &mut Errors) -> Option<Duration> {
    let d = duration(node, context, errs)?;
    if d.is_zero() {
        errs.at(node, format!("{context}: must be longer than 0"), None);
        return None;
    }
    Some(d)
}

/// A list of strings, or a single string as a one-element list, each with its node.
pub fn string_list<'a>(
    node: &'a Node,
    context: &str,
    errs: &mut Errors,
) -> Vec<(String, &'a Node)> {
    match &node.kind {
        Kind::Scalar { text, .. } => vec![(text.clone(), node)],
        Kind::Seq(items) => items
            .iter()
            .filter_map(|item| Some((string(item, context, errs)?, item)))
            .collect(),
        Kind::Map(_) => {
            errs.expected(node, "a name or a list of names", context);
            Vec::new()
        }
    }
}

/// One of `choices`, with a hint listing them.
pub fn choice<'c>(
    node: &Node,
    choices: &[&'c str],
    context: &str,
    errs: &mut Errors,
) -> Option<&'c str> {
    let text = string(node, context, errs)?;
    match choices.iter().find(|c| **c == text) {
        Some(c) => Some(c),
        None => {
            let hint = match suggest(&text, choices) {
                Some(s) => format!("did you mean `{s}`? choose one of: {}", choices.join(", ")),
                None => format!("choose one of: {}", choices.join(", ")),
            };
            errs.at(
                node,
                format!("{context}: `{text}` is not one of the choices"),
                Some(hint),
            );
            None
        }
    }
}

/// Where `node` was written.
pub fn loc(node: &Node) -> Location {
    Location {
        line: node.line,
        col: node.col,
    }
}

/// `p` relative to the pipeline file's folder `base` (absolute paths as they are).
pub fn resolve(base: &Path, p: &str) -> PathBuf {
    let path = Path::new(p);
    if path.is_absolute() {
        path.to_path_buf()
    } else {
        base.join(path)
    }
}

/// Letters, digits, `-` and `_` (names of pipelines, sources and sinks).
pub fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// The entries of a mapping of names to definitions (none, with an error, otherwise).
pub fn entries<'a>(node: &'a Node, context: &str, errs: &mut Errors) -> &'a [(Node, Node)] {
    match &node.kind {
        Kind::Map(e) => e,
        _ => {
            errs.expected(node, "a mapping of names to definitions", context);
            &[]
        }
    }
}

/// A whole number of at least 1 (workers, batch sizes), `default` when absent.
pub fn positive_count(node: Option<&Node>, what: &str, default: usize, errs: &mut Errors) -> usize {
    let Some(n) = node else { return default };
    match uint(n, what, errs) {
        Some(0) => {
            errs.at(n, format!("{what} must be at least 1"), None);
            default
        }
        Some(v) => usize::try_from(v).unwrap_or(default),
        None => default,
    }
}
