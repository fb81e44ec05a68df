//! The `steps` list: filters, maps, `key_by`, windows (`windows.rs`) and UDF calls.

use super::decode::{entries, loc, string, string_list, suggest, Errors, MapReader};
use super::spec::*;
use super::windows::window;
use super::yaml::{Kind, Node};
use crate::expr::Expr;
use crate::value::split_path;

const STEP_KINDS: [&str; 5] = ["filter", "map", "key_by", "window", "udf"];

/// The `remediate:` key of a `udf` step, checked: it names a declared `map` or `flat_map`
/// UDF. `None` when the step has no such key (or one that is wrong, reported).
fn remediation(
    kv: &[(Node, Node)],
    ctx: &str,
    udfs: &[UdfSpec],
    errs: &mut Errors,
) -> Option<String> {
    let (_, v) = kv.iter().find(|(k, _)| k.scalar() == Some("remediate"))?;
    if !kv.iter().any(|(k, _)| k.scalar() == Some("udf")) {
        errs.at(
            v,
            format!("{ctx}: `remediate` belongs to a `udf` step"),
            Some("e.g. `- { udf: enrich, remediate: fix_enrich }`".into()),
        );
        return None;
    }
    let name = string(v, &format!("{ctx} remediate"), errs)?;
    match udfs.iter().find(|u| u.name == name) {
        None => {
            let names: Vec<&str> = udfs.iter().map(|u| u.name.as_str()).collect();
            let hint = match suggest(&name, &names) {
                Some(s) => format!("did you mean `{s}`? declare it under `udfs:`"),
                None => "declare it under `udfs:` as a `map` or `flat_map` UDF".into(),
            };
            errs.at(
                v,
                format!("{ctx}: remediation udf `{name}` is not declared in `udfs`"),
                Some(hint),
            );
            None
        }
        Some(u) if !matches!(u.kind, UdfKind::Map | UdfKind::FlatMap) => {
            errs.at(
                v,
                format!("{ctx}: remediation udf `{name}` is a {} function; it must be a `map` (repair or give up) or a `flat_map` (repair, drop with no output, or give up)", match u.kind {
                    UdfKind::Filter => "filter",
                    UdfKind::KeyedProcess => "keyed_process",
                    _ => "window_aggregate",
                }),
                None,
            );
            None
        }
        Some(_) => Some(name),
    }
}

pub(super) fn steps(
    node: &Node,
    sinks: &[&str],
    udfs: &[UdfSpec],
    errs: &mut Errors,
) -> Vec<StepSpec> {
    let Kind::Seq(items) = &node.kind else {
        errs.expected(
            node,
            "a list of steps (`- filter: ...`, `- key_by: ...`)",
            "steps",
        );
        return Vec::new();
    };
    let mut out = Vec::new();
    let mut keyed = false;
    for (i, item) in items.iter().enumerate() {
        let ctx = format!("steps[{i}]");
        let Kind::Map(kv) = &item.kind else {
            errs.expected(item, "a one-key mapping like `- filter: \"x > 1\"`", &ctx);
            continue;
        };
        // A udf step may name its remediation beside it: `- { udf: enrich, remediate: fix }`.
        let remediate = remediation(kv, &ctx, udfs, errs);
        let kv: Vec<_> = kv
            .iter()
            .filter(|(k, _)| k.scalar() != Some("remediate"))
            .collect();
        if kv.len() != 1 {
            errs.at(
                item,
                format!(
                    "{ctx}: each step has exactly one kind, found {} keys",
                    kv.len()
                ),
                Some(format!("step kinds: {}", STEP_KINDS.join(", "))),
            );
            continue;
        }
        let (k, v) = kv[0];
        let which = k.scalar().unwrap_or("");
        let kind = match which {
            "filter" => string(v, &format!("{ctx} filter"), errs).map(|e| {
                check_expr(&e, v, &format!("{ctx} filter"), errs);
                StepKind::Filter { expr: e }
            }),
            "map" => map_step(v, &ctx, errs).map(StepKind::Map),
            "key_by" => {
                let fields: Vec<_> = string_list(v, &format!("{ctx} key_by"), errs).into_iter().map(|(f, _)| split_path(&f)).collect();
                if fields.is_empty() {
                    errs.at(v, format!("{ctx} key_by: name at least one field"), None);
                    None
                } else {
                    keyed = true;
                    Some(StepKind::KeyBy { fields })
                }
            }
            "window" => {
                if !keyed {
                    errs.at(k, format!("{ctx}: a window needs a `key_by` step before it"), Some("add `- key_by: some_field` before the window".into()));
                }
                window(v, &ctx, sinks, errs).map(StepKind::Window)
            }
            "udf" => string(v, &format!("{ctx} udf"), errs).map(|f| {
                if !udfs.iter().any(|u| u.name == f) {
                    let names: Vec<&str> = udfs.iter().map(|u| u.name.as_str()).collect();
                    let hint = match suggest(&f, &names) {
                        Some(s) => format!("did you mean `{s}`? declare UDFs under `udfs:`"),
                        None => "declare it under `udfs:`, e.g. `udfs: { name: { runtime: native, function: geohash } }`".into(),
                    };
                    errs.at(v, format!("{ctx}: udf `{f}` is not declared in `udfs`"), Some(hint));
                }
                if remediate.as_ref() == Some(&f) {
                    errs.at(v, format!("{ctx}: udf `{f}` cannot remediate its own failures"), Some("name another UDF under `remediate`".into()));
                }
                StepKind::Udf { function: f, remediate: remediate.clone() }
            }),
            other => {
                let hint = match suggest(other, &STEP_KINDS) {
                    Some(s) => format!("did you mean `{s}`? step kinds: {}", STEP_KINDS.join(", ")),
                    None => format!("step kinds: {}", STEP_KINDS.join(", ")),
                };
                errs.at(k, format!("unknown step kind `{other}` in {ctx}"), Some(hint));
                None
            }
        };
        if let Some(kind) = kind {
            out.push(StepSpec {
                kind,
                location: loc(k),
            });
        }
    }
    out
}

fn check_expr(text: &str, node: &Node, ctx: &str, errs: &mut Errors) {
    if let Err(e) = Expr::parse(text) {
        // Point inside the scalar when it is written plainly on one line.
        let col = node.col
            + e.column.saturating_sub(1)
            + usize::from(matches!(node.kind, Kind::Scalar { quoted: true, .. }));
        errs.list.push(super::ConfigError {
            line: node.line,
            col,
            message: format!("{ctx}: invalid expression `{text}`: {}", e.message),
            hint: e.hint,
        });
    }
}

fn map_step(node: &Node, ctx: &str, errs: &mut Errors) -> Option<MapSpec> {
    let ctx = format!("{ctx} map");
    let mut m = MapReader::new(node, &ctx, errs)?;
    let mut spec = MapSpec::default();
    if let Some(c) = m.get("compute") {
        for (k, v) in entries(c, &format!("{ctx} compute"), errs) {
            let target = k.scalar().unwrap_or("").to_string();
            if let Some(text) = string(v, &format!("{ctx} compute.{target}"), errs) {
                check_expr(&text, v, &format!("{ctx} compute.{target}"), errs);
                spec.compute.push((split_path(&target), text));
            }
        }
    }
    if let Some(r) = m.get("rename") {
        for (k, v) in entries(r, &format!("{ctx} rename"), errs) {
            if let Some(to) = string(v, &format!("{ctx} rename"), errs) {
                spec.rename.push((k.scalar().unwrap_or("").to_string(), to));
            }
        }
    }
    spec.select = m.get("select").map(|s| {
        string_list(s, &format!("{ctx} select"), errs)
            .into_iter()
            .map(|(f, _)| f)
            .collect()
    });
    spec.drop = m
        .get("drop")
        .map(|s| {
            string_list(s, &format!("{ctx} drop"), errs)
                .into_iter()
                .map(|(f, _)| f)
                .collect()
        })
        .unwrap_or_default();
    if spec.compute.is_empty()
        && spec.rename.is_empty()
        && spec.select.is_none()
        && spec.drop.is_empty()
    {
        errs.at(
            node,
            format!("{ctx}: does nothing"),
            Some("give it `compute`, `rename`, `select` or `drop`".into()),
        );
    }
    m.finish(errs);
    Some(spec)
}
