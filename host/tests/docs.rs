//! The pipeline reference stays complete: every key the configuration reader accepts is
//! documented in `docs/pipeline.md`.

use std::collections::BTreeSet;
use std::path::Path;

/// The keys `config/` reads: the string literals passed to `MapReader::get` / `required`.
fn keys_read_by_config() -> BTreeSet<String> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/config");
    let mut keys = BTreeSet::new();
    for entry in std::fs::read_dir(&dir).expect("src/config") {
        let path = entry.expect("entry").path();
        if path.extension().is_none_or(|e| e != "rs") || path.ends_with("tests.rs") {
            continue;
        }
        let text = std::fs::read_to_string(&path).expect("read");
        for call in [".get(\"", ".required(\""] {
            for (at, _) in text.match_indices(call) {
                let rest = &text[at + call.len()..];
                let key: String = rest
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                if !key.is_empty() && rest[key.len()..].starts_with('"') {
                    keys.insert(key);
                }
            }
        }
    }
    keys
}

#[test]
fn every_pipeline_key_is_documented_in_the_pipeline_reference() {
    let keys = keys_read_by_config();
    assert!(
        keys.len() > 40 && keys.contains("max_out_of_orderness"),
        "the key scan found too little ({} keys): has config/ changed how it reads keys?",
        keys.len()
    );
    let reference = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/pipeline.md");
    let doc = std::fs::read_to_string(&reference).expect("docs/pipeline.md");
    let missing: Vec<&String> = keys
        .iter()
        .filter(|k| !doc.contains(&format!("`{k}`")) && !doc.contains(&format!("{k}:")))
        .collect();
    assert!(
        missing.is_empty(),
        "pipeline keys read by host/src/config/ but not documented in docs/pipeline.md: {missing:?}; \
         add each to the table of its section"
    );
}
