//! The control API's Wasm module routes:
//!
//! - `GET /udfs/<udf>/versions`: the uploaded versions (digest, size, when, who) and which
//!   one is active;
//! - `POST /udfs/<udf>/versions`: uploads a module (the request body), checked like at start
//!   (ABI, imports, the UDF's function and kind) before it is stored;
//! - `POST /udfs/<udf>/activate?version=<digest or prefix>`: runs that version from the next
//!   checkpoint boundary on, answered once that checkpoint is complete;
//! - `POST /udfs/<udf>/rollback`: the same for the version active before;
//! - `POST /udfs/<udf>/activate?version=V&shadow=true`: runs the version beside the active one
//!   on the same records without emitting (a shadow run, counted in `/status` and `/metrics`),
//!   until `POST /udfs/<udf>/shadow/stop` or the version is activated.
//!
//! Modules live in the module store next to the checkpoints ([`ModuleStore`]). Requests that
//! change something were authorized before they get here.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value as Json};

use crate::udf::wasm::store::{Activation, ModuleStore, StoreError};
use crate::udf::wasm::versions::{WasmUdf, WasmUdfs};
use crate::udf::wasm::{sha256_hex, MAX_MODULE_BYTES};

/// Longest an activation waits for its checkpoint before answering 504.
const ACTIVATE_WAIT: Duration = Duration::from_secs(600);

/// What the module routes need.
pub struct UdfControl {
    pub udfs: Arc<WasmUdfs>,
    /// None: the checkpoint location cannot be opened (the reason).
    pub store: Result<ModuleStore, String>,
    /// Checkpoints on: versions change at checkpoint boundaries (else at once).
    pub checkpointing: bool,
    /// Every declared UDF and its runtime, to tell "not a Wasm UDF" from "unknown".
    pub declared: Vec<(String, &'static str)>,
}

/// An answer: HTTP status line and JSON body.
pub type Reply = (&'static str, String);

fn reply(status: &'static str, body: Json) -> Reply {
    (status, format!("{body}\n"))
}

fn error(status: &'static str, message: impl std::fmt::Display) -> Reply {
    reply(status, json!({ "error": message.to_string() }))
}

/// A request for the module routes.
pub struct UdfRequest<'a> {
    pub method: &'a str,
    /// The part after `/udfs/`.
    pub rest: &'a str,
    pub query: &'a str,
    /// `X-Headwater-User`, if sent.
    pub user: Option<&'a str>,
    /// The body (uploads only).
    pub body: Vec<u8>,
}

/// Most bytes an upload may have.
pub const MAX_UPLOAD: u64 = MAX_MODULE_BYTES as u64;

impl UdfControl {
    pub fn handle(&self, r: UdfRequest<'_>) -> Reply {
        let (name, action) = r.rest.split_once('/').unwrap_or((r.rest, ""));
        let udf = match self.udf(name) {
            Ok(udf) => udf,
            Err(reply) => return reply,
        };
        let store = match &self.store {
            Ok(store) => store,
            Err(why) => {
                return error(
                    "503 Service Unavailable",
                    format!("the module store is not available: {why}"),
                )
            }
        };
        let by = r.user.unwrap_or("token").to_string();
        match (r.method, action) {
            ("GET", "versions") => self.list(name, udf, store),
            ("POST", "versions") => upload(name, udf, store, &r.body, &by),
            ("POST", "activate") => {
                let Some(wanted) = super::control::query_param(r.query, "version") else {
                    return error(
                        "400 Bad Request",
                        "say which: POST /udfs/<udf>/activate?version=<digest or prefix>",
                    );
                };
                let digest = match store.record(name).and_then(|rec| rec.resolve(name, &wanted)) {
                    Ok(d) => d,
                    Err(e) => return store_error(e),
                };
                let shadow = super::control::query_param(r.query, "shadow")
                    .is_some_and(|s| s == "true" || s == "1");
                if shadow {
                    return shadow_run(name, udf, store, &digest);
                }
                self.activate(name, udf, store, &digest, &by)
            }
            ("POST", "shadow/stop") => match udf.runtime.set_shadow(None) {
                Ok(()) => reply("200 OK", json!({ "udf": name, "shadow": null })),
                Err(e) => error("500 Internal Server Error", e),
            },
            ("POST", "rollback") => {
                let current = udf.runtime.module_digest();
                match store.record(name).map(|rec| rec.previous(&current)) {
                    Ok(Some(digest)) => self.activate(name, udf, store, &digest, &by),
                    Ok(None) => error(
                        "409 Conflict",
                        format!("udf `{name}` has no earlier version to roll back to"),
                    ),
                    Err(e) => store_error(e),
                }
            }
            _ => error(
                "404 Not Found",
                "try GET or POST /udfs/<udf>/versions, POST /udfs/<udf>/activate?version=V, POST /udfs/<udf>/rollback",
            ),
        }
    }

    fn udf(&self, name: &str) -> Result<&WasmUdf, Reply> {
        if let Some(udf) = self.udfs.get(name) {
            return Ok(udf);
        }
        let wasm = self.udfs.names();
        let message = match self.declared.iter().find(|(n, _)| n == name) {
            Some((_, runtime)) => format!(
                "udf `{name}` is a {runtime} UDF; only Wasm UDFs take modules (Wasm UDFs here: {})",
                names(&wasm)
            ),
            None => format!(
                "no udf `{name}` in this pipeline; its Wasm UDFs: {}",
                names(&wasm)
            ),
        };
        Err(reply(
            if self.declared.iter().any(|(n, _)| n == name) {
                "409 Conflict"
            } else {
                "404 Not Found"
            },
            json!({ "error": message, "wasm_udfs": wasm }),
        ))
    }

    fn list(&self, name: &str, udf: &WasmUdf, store: &ModuleStore) -> Reply {
        let record = match store.record(name) {
            Ok(r) => r,
            Err(e) => return store_error(e),
        };
        let active = udf.runtime.module_digest();
        let versions: Vec<Json> = record
            .versions
            .iter()
            .map(|v| {
                json!({
                    "digest": v.digest,
                    "size": v.size,
                    "uploaded_at": v.uploaded_at,
                    "uploader": v.uploader,
                    "active": v.digest == active,
                })
            })
            .collect();
        reply(
            "200 OK",
            json!({ "udf": name, "active": active, "versions": versions, "activations": record.activations }),
        )
    }

    fn activate(
        &self,
        name: &str,
        udf: &WasmUdf,
        store: &ModuleStore,
        digest: &str,
        by: &str,
    ) -> Reply {
        let bytes = match store.module(digest) {
            Ok(Some(b)) => b,
            Ok(None) => {
                return error(
                    "404 Not Found",
                    format!(
                        "the module {} is missing",
                        store.display(&crate::udf::wasm::store::module_key(digest))
                    ),
                )
            }
            Err(e) => return store_error(e),
        };
        let staged = match udf.runtime.stage(&bytes, &udf.uses) {
            Ok(s) => s,
            Err(e) => return error("422 Unprocessable Entity", e),
        };
        let after = if self.checkpointing {
            let answer = self.udfs.activate_at_next_checkpoint(name, staged);
            match answer.recv_timeout(ACTIVATE_WAIT) {
                Ok(Ok(id)) => Some(id),
                Ok(Err(e)) => return error("500 Internal Server Error", e),
                Err(_) => {
                    return error(
                        "504 Gateway Timeout",
                        "no checkpoint completed in time; the version runs once one does (see the run's log)",
                    )
                }
            }
        } else {
            if let Err(e) = udf.runtime.install(staged) {
                return error("500 Internal Server Error", e);
            }
            None
        };
        let noted = store.note_activation(
            name,
            Activation {
                digest: digest.to_string(),
                after_checkpoint: after,
                at: crate::udf::wasm::store::now_rfc3339(),
                by: by.to_string(),
            },
        );
        if let Err(e) = noted {
            tracing::warn!(
                udf = name,
                "the activation is not in the versions record: {e}"
            );
        }
        if udf
            .runtime
            .shadow_report()
            .is_some_and(|s| s.digest == digest)
        {
            let _ = udf.runtime.set_shadow(None);
        }
        tracing::info!(udf = name, digest, after_checkpoint = ?after, by, "Wasm module activated");
        reply(
            "200 OK",
            json!({ "udf": name, "active": digest, "after_checkpoint": after }),
        )
    }
}

impl UdfControl {
    /// The Wasm UDFs for `/status`: the active version and the shadow run, if any.
    pub fn status(&self) -> Json {
        self.udfs
            .iter()
            .map(|(name, udf)| {
                (
                    name.clone(),
                    json!({
                        "active": udf.runtime.module_digest(),
                        "shadow": udf.runtime.shadow_report(),
                    }),
                )
            })
            .collect::<serde_json::Map<_, _>>()
            .into()
    }

    /// The shadow runs' counts in Prometheus text (`pipeline` already escaped).
    pub fn prometheus(&self, pipeline: &str) -> String {
        let mut s = String::new();
        let reports: Vec<_> = self
            .udfs
            .iter()
            .filter_map(|(name, udf)| udf.runtime.shadow_report().map(|r| (name, r)))
            .collect();
        if reports.is_empty() {
            return s;
        }
        s.push_str("# HELP headwater_wasm_shadow_records_total Records a shadow version ran, by outcome against the active version.\n");
        s.push_str("# TYPE headwater_wasm_shadow_records_total counter\n");
        for (name, r) in reports {
            let udf = name.replace('\\', "\\\\").replace('"', "\\\"");
            for (outcome, n) in [
                ("matched", r.matched),
                ("differed", r.differed),
                ("failed", r.failed),
            ] {
                s.push_str(&format!(
                    "headwater_wasm_shadow_records_total{{pipeline=\"{pipeline}\",udf=\"{udf}\",candidate=\"{}\",outcome=\"{outcome}\"}} {n}\n",
                    r.digest
                ));
            }
        }
        s
    }
}

fn shadow_run(name: &str, udf: &WasmUdf, store: &ModuleStore, digest: &str) -> Reply {
    let bytes = match store.module(digest) {
        Ok(Some(b)) => b,
        Ok(None) => return error("404 Not Found", format!("the module {digest} is missing")),
        Err(e) => return store_error(e),
    };
    let staged = match udf.runtime.stage(&bytes, &udf.uses) {
        Ok(s) => s,
        Err(e) => return error("422 Unprocessable Entity", e),
    };
    if let Err(e) = udf.runtime.set_shadow(Some(staged)) {
        return error("500 Internal Server Error", e);
    }
    reply(
        "200 OK",
        json!({ "udf": name, "active": udf.runtime.module_digest(), "shadow": digest }),
    )
}

fn upload(name: &str, udf: &WasmUdf, store: &ModuleStore, body: &[u8], by: &str) -> Reply {
    if body.is_empty() {
        return error(
            "400 Bad Request",
            "send the module (.wasm) as the request body",
        );
    }
    // Checked like at start, and compiled (the compiled code is cached for the activation).
    if let Err(e) = udf.runtime.stage(body, &udf.uses) {
        return reply(
            "422 Unprocessable Entity",
            json!({ "error": format!("the module is not valid for udf `{name}`: {e}") }),
        );
    }
    let digest = sha256_hex(body);
    match store.put(name, &digest, body, by) {
        Ok(v) => {
            tracing::info!(udf = name, digest = %v.digest, size = v.size, uploader = %v.uploader, "Wasm module uploaded");
            reply(
                "201 Created",
                json!({
                    "udf": name,
                    "digest": v.digest,
                    "size": v.size,
                    "uploaded_at": v.uploaded_at,
                    "uploader": v.uploader,
                    "active": v.digest == udf.runtime.module_digest(),
                }),
            )
        }
        Err(e) => store_error(e),
    }
}

fn store_error(e: StoreError) -> Reply {
    match &e {
        StoreError::UnknownVersion { known, .. } => reply(
            "404 Not Found",
            json!({ "error": e.to_string(), "versions": known }),
        ),
        StoreError::Ambiguous { matching, .. } => reply(
            "409 Conflict",
            json!({ "error": e.to_string(), "matching": matching }),
        ),
        _ => error("500 Internal Server Error", e),
    }
}

fn names(names: &[String]) -> String {
    if names.is_empty() {
        "none".into()
    } else {
        names.join(", ")
    }
}

/// Stores the module each Wasm UDF starts with as a version (so it can be rolled back to)
/// and notes it as active, unless it already is.
pub fn register_started(udfs: &WasmUdfs, store: &ModuleStore) {
    for (name, udf) in udfs.iter() {
        let digest = udf.runtime.module_digest();
        let stored = match store.module(&digest) {
            Ok(Some(_)) => Ok(()),
            _ => std::fs::read(&udf.module)
                .map_err(|e| e.to_string())
                .and_then(|bytes| {
                    if sha256_hex(&bytes) != digest {
                        return Err("the file changed since it was loaded".into());
                    }
                    store
                        .put(name, &digest, &bytes, "pipeline file")
                        .map(|_| ())
                        .map_err(|e| e.to_string())
                }),
        };
        let noted = stored.and_then(|()| {
            let last = store
                .record(name)
                .map_err(|e| e.to_string())?
                .activations
                .last()
                .map(|a| a.digest.clone());
            if last.as_deref() == Some(digest.as_str()) {
                return Ok(());
            }
            store
                .note_activation(
                    name,
                    Activation {
                        digest: digest.clone(),
                        after_checkpoint: None,
                        at: crate::udf::wasm::store::now_rfc3339(),
                        by: "run start".into(),
                    },
                )
                .map_err(|e| e.to_string())
        });
        if let Err(e) = noted {
            tracing::warn!(udf = %name, "the starting module is not in the module store: {e}");
        }
    }
}

/// A run restored from a checkpoint runs the modules its manifest names (the versions the
/// checkpointed run ran after it), loaded from the module store.
pub fn restore_versions(
    udfs: &WasmUdfs,
    store: Option<&ModuleStore>,
    modules: &std::collections::BTreeMap<String, String>,
) {
    for (name, digest) in modules {
        let Some(udf) = udfs.get(name) else {
            continue;
        };
        if udf.runtime.module_digest() == *digest {
            continue;
        }
        let restored = match store.map(|s| s.module(digest)) {
            Some(Ok(Some(bytes))) => udf
                .runtime
                .stage(&bytes, &udf.uses)
                .and_then(|staged| udf.runtime.install(staged))
                .map_err(|e| e.to_string()),
            Some(Ok(None)) => Err("it is not in the module store".into()),
            Some(Err(e)) => Err(e.to_string()),
            None => Err("the module store cannot be opened".into()),
        };
        match restored {
            Ok(()) => {
                tracing::info!(udf = %name, %digest, "running the Wasm module the checkpoint recorded")
            }
            Err(e) => tracing::warn!(
                udf = %name,
                %digest,
                "the checkpoint ran another module than the pipeline file names, which cannot be loaded ({e}); running the file's"
            ),
        }
    }
}

/// Before the run starts: the modules the restored checkpoint (`restored`) ran, loaded from
/// the module store next to the checkpoints, and with the control API on (`serving`), the
/// module routes (the starting modules stored as versions).
pub fn prepare(
    spec: &crate::config::spec::PipelineSpec,
    udfs: &Arc<WasmUdfs>,
    restored: Option<&crate::checkpoint::manifest::Manifest>,
    serving: bool,
) -> Option<Arc<UdfControl>> {
    if udfs.is_empty() {
        return None;
    }
    let store = ModuleStore::open(&spec.checkpoint.location).map_err(|e| e.to_string());
    if let Some(m) = restored {
        restore_versions(udfs, store.as_ref().ok(), &m.udf_modules);
    }
    if !serving {
        return None;
    }
    if let Ok(store) = &store {
        register_started(udfs, store);
    }
    Some(Arc::new(UdfControl {
        udfs: udfs.clone(),
        store,
        checkpointing: spec.checkpoint.enabled,
        declared: spec
            .udfs
            .iter()
            .map(|u| (u.name.clone(), u.runtime.name()))
            .collect(),
    }))
}
