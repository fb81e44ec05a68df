//! The `checkpoint` section: interval, timeouts, retention, mode and storage location.

use std::path::Path;
use std::time::Duration;

use super::decode::{
    choice, duration, positive_duration, resolve, string, uint, Errors, MapReader,
};
use super::spec::*;
use super::yaml::Node;

pub(super) fn checkpoint(
    node: Option<&Node>,
    base: &Path,
    default_dir: &Path,
    errs: &mut Errors,
) -> CheckpointSpec {
    let mut c = CheckpointSpec {
        enabled: true,
        interval: Duration::from_secs(10),
        timeout: Duration::from_secs(600),
        min_pause: Duration::ZERO,
        retain: 3,
        location: local_url(&default_dir.join("checkpoints")),
        mode: CheckpointMode::Aligned,
        aligned_timeout: Duration::ZERO,
        tolerable_failures: 3,
    };
    let Some(node) = node else {
        return c;
    };
    let Some(mut m) = MapReader::new(node, "checkpoint", errs) else {
        return c;
    };
    if let Some(n) = m.get("enabled") {
        match choice(n, &["true", "false"], "checkpoint enabled", errs) {
            Some("false") => c.enabled = false,
            Some(_) => c.enabled = true,
            None => {}
        }
    }
    if let Some(d) = m
        .get("interval")
        .and_then(|n| positive_duration(n, "checkpoint interval", errs))
    {
        c.interval = d;
    }
    if let Some(d) = m
        .get("timeout")
        .and_then(|n| positive_duration(n, "checkpoint timeout", errs))
    {
        c.timeout = d;
    }
    if let Some(d) = m
        .get("min_pause")
        .and_then(|n| duration(n, "checkpoint min_pause", errs))
    {
        c.min_pause = d;
    }
    if let Some(n) = m.get("retain") {
        match uint(n, "checkpoint retain", errs) {
            Some(0) => errs.at(
                n,
                "checkpoint retain must be at least 1",
                Some("keep at least the newest checkpoint; 3 is a good default".into()),
            ),
            Some(r) => c.retain = r as usize,
            None => {}
        }
    }
    if let Some(n) = m.get("mode") {
        match choice(n, &["aligned", "unaligned"], "checkpoint mode", errs) {
            Some("unaligned") => c.mode = CheckpointMode::Unaligned,
            Some(_) => c.mode = CheckpointMode::Aligned,
            None => {}
        }
    }
    if let Some(n) = m.get("aligned_timeout") {
        if let Some(d) = duration(n, "checkpoint aligned_timeout", errs) {
            if c.mode == CheckpointMode::Unaligned {
                c.aligned_timeout = d;
            } else {
                errs.at(
                    n,
                    "checkpoint aligned_timeout applies to unaligned checkpoints only",
                    Some("add `mode: unaligned`: each checkpoint then starts aligned and switches to unaligned after this long".into()),
                );
            }
        }
    }
    if let Some(n) = m.get("tolerable_failures") {
        if let Some(t) = uint(n, "checkpoint tolerable_failures", errs) {
            c.tolerable_failures = u32::try_from(t).unwrap_or(u32::MAX);
        }
    }
    if let Some(n) = m.get("location") {
        if let Some(text) = string(n, "checkpoint location", errs) {
            if text.contains("://") {
                if !(text.starts_with("file://") || text.starts_with("s3://")) {
                    errs.at(
                        n,
                        format!("checkpoint location `{text}`: only `file://` and `s3://` URLs are supported"),
                        Some("write a folder (`ckpt/`), a `file:///abs/path` URL or `s3://bucket/prefix`".into()),
                    );
                }
                c.location = text;
            } else {
                c.location = local_url(&resolve(base, &text));
            }
        }
    }
    m.finish(errs);
    c
}

/// A `file://` URL for a local folder (made absolute: the URL must not depend on the
/// working directory).
fn local_url(path: &Path) -> String {
    let abs = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    format!("file://{}", abs.display())
}
