//! The Wasm UDFs of a run and their module versions: new versions wait for a checkpoint
//! boundary, so each checkpoint's output comes from exactly one version.
//!
//! An activation is staged (checked and compiled) when asked for, then armed by the
//! coordinator just before it asks for the next checkpoint's barrier: each task runs the new
//! version for the records after it passed that barrier ([`super::passed_barrier`]), so the
//! records of one epoch (one checkpoint's output) all run on one version, whichever task runs
//! them. The checkpoint's manifest records the digest each UDF runs after it; once the
//! checkpoint is complete, the activation is answered and the old version is dropped.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use crossbeam_channel::{Receiver, Sender};

use super::{Staged, WasmRuntime};
use crate::checkpoint::{Boundary, CheckpointId};
use crate::udf::FunctionInfo;

/// One Wasm UDF of the run.
pub struct WasmUdf {
    pub runtime: Arc<WasmRuntime>,
    /// The function the pipeline calls, and its kind: every new version must offer it.
    pub uses: Vec<FunctionInfo>,
    /// The module the pipeline file names.
    pub module: PathBuf,
}

/// What an activation waiting for a checkpoint is answered: the checkpoint after whose
/// barrier the version runs, or why it was not armed.
pub type Activated = Result<CheckpointId, String>;

struct Waiting {
    udf: String,
    staged: Staged,
    reply: Sender<Activated>,
}

/// The run's Wasm UDFs, by name.
#[derive(Default)]
pub struct WasmUdfs {
    udfs: BTreeMap<String, WasmUdf>,
    /// Staged versions waiting for the next checkpoint to be triggered.
    waiting: Mutex<Vec<Waiting>>,
    /// Armed at checkpoint `.0`, answered once it completes.
    armed: Mutex<Vec<(CheckpointId, Sender<Activated>)>>,
}

impl WasmUdfs {
    pub fn insert(&mut self, name: String, udf: WasmUdf) {
        self.udfs.insert(name, udf);
    }

    pub fn get(&self, name: &str) -> Option<&WasmUdf> {
        self.udfs.get(name)
    }

    pub fn names(&self) -> Vec<String> {
        self.udfs.keys().cloned().collect()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&String, &WasmUdf)> {
        self.udfs.iter()
    }

    pub fn is_empty(&self) -> bool {
        self.udfs.is_empty()
    }

    /// Runs `staged` for UDF `udf` from the next checkpoint boundary on; the answer comes
    /// once that checkpoint is complete.
    pub fn activate_at_next_checkpoint(&self, udf: &str, staged: Staged) -> Receiver<Activated> {
        let (reply, answer) = crossbeam_channel::bounded(1);
        self.waiting
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Waiting {
                udf: udf.to_string(),
                staged,
                reply,
            });
        answer
    }
}

impl Boundary for WasmUdfs {
    fn before_trigger(&self, id: CheckpointId) -> bool {
        let waiting = std::mem::take(&mut *self.waiting.lock().unwrap_or_else(|e| e.into_inner()));
        let mut armed = false;
        for w in waiting {
            let Some(udf) = self.udfs.get(&w.udf) else {
                let _ = w.reply.send(Err(format!("unknown udf `{}`", w.udf)));
                continue;
            };
            match udf.runtime.arm(w.staged, id) {
                Ok(()) => {
                    armed = true;
                    self.armed
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push((id, w.reply))
                }
                Err(e) => {
                    let _ = w.reply.send(Err(e.to_string()));
                }
            }
        }
        armed
    }

    fn modules_after(&self, id: CheckpointId) -> BTreeMap<String, String> {
        self.udfs
            .iter()
            .map(|(name, udf)| (name.clone(), udf.runtime.digest_after(id)))
            .collect()
    }

    fn completed(&self, id: CheckpointId) {
        for udf in self.udfs.values() {
            udf.runtime.prune(id);
        }
        let mut armed = self.armed.lock().unwrap_or_else(|e| e.into_inner());
        armed.retain(|(at, reply)| {
            if *at <= id {
                let _ = reply.send(Ok(*at));
                false
            } else {
                true
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::udf::wasm::WasmSpec;
    use crate::udf::{FunctionKind, UdfRuntime};
    use std::time::Duration;

    const HOSTILE: &str = include_str!("../../../tests/wasm/hostile.wat");

    #[test]
    fn a_version_runs_for_the_records_after_the_barrier_it_was_armed_at() {
        let spec = WasmSpec {
            module: PathBuf::from("hostile.wasm"),
            memory: 4 << 20,
            timeout: Duration::from_secs(5),
            allow_clock: false,
            allow_random: false,
        };
        let v1 = wat::parse_str(HOSTILE).expect("v1");
        let v2 = wat::parse_str(HOSTILE.replace("hostile.wat", "hostile-2.wat")).expect("v2");
        let (d1, d2) = (super::super::sha256_hex(&v1), super::super::sha256_hex(&v2));
        let runtime = Arc::new(WasmRuntime::from_bytes("f", &v1, &spec).expect("v1 loads"));
        let uses = vec![FunctionInfo {
            name: "identity".into(),
            kind: FunctionKind::Map,
        }];
        let mut udfs = WasmUdfs::default();
        udfs.insert(
            "f".into(),
            WasmUdf {
                runtime: runtime.clone(),
                uses: uses.clone(),
                module: spec.module.clone(),
            },
        );
        let staged = runtime.stage(&v2, &uses).expect("v2 is valid");
        let answer = udfs.activate_at_next_checkpoint("f", staged);
        // Nothing changes until the coordinator triggers the next checkpoint.
        assert_eq!(runtime.module_digest(), d1);
        udfs.before_trigger(5);
        assert_eq!(runtime.module_digest(), d2, "the newest version is armed");
        assert_eq!(udfs.modules_after(4)["f"], d1);
        assert_eq!(udfs.modules_after(5)["f"], d2);
        // A task runs the new version once it passed barrier 5, the old one before.
        assert_eq!(runtime.running_digest(), d1);
        let rt = runtime.clone();
        let seen = std::thread::spawn(move || {
            crate::udf::wasm::passed_barrier(4);
            let before = rt.running_digest();
            let out = rt.invoke("identity", vec![crate::value::Value::Null]);
            crate::udf::wasm::passed_barrier(5);
            (before, rt.running_digest(), out.map(|o| o.len()).ok())
        })
        .join()
        .expect("task");
        assert_eq!(seen, (d1.clone(), d2.clone(), Some(1)));
        assert!(answer.try_recv().is_err(), "answered once complete");
        udfs.completed(5);
        assert_eq!(answer.try_recv().ok(), Some(Ok(5)));
        // Every task passed barrier 5: the old version is gone.
        assert_eq!(runtime.running_digest(), d2);
        // A shadow run of an equivalent module matches every record, and emits nothing.
        let staged = runtime.stage(&v1, &uses).expect("v1");
        runtime.set_shadow(Some(staged)).expect("shadow");
        let out = runtime
            .invoke("identity", vec![crate::value::Value::Null; 3])
            .expect("invoke");
        assert_eq!(out.len(), 3);
        let report = runtime.shadow_report().expect("a shadow run");
        assert_eq!(report.digest, d1);
        assert_eq!((report.matched, report.differed, report.failed), (3, 0, 0));
        runtime.set_shadow(None).expect("stop");
        assert!(runtime.shadow_report().is_none());
        // Unknown UDFs are answered at once.
        let staged = runtime.stage(&v1, &uses).expect("v1");
        let answer = udfs.activate_at_next_checkpoint("g", staged);
        udfs.before_trigger(6);
        assert!(answer.try_recv().expect("answered").is_err());
    }
}
