//! The checkpoint coordinator: triggers barriers on the interval (one checkpoint in flight,
//! a minimum pause between), collects every participant's contribution, uploads new state
//! files, writes the manifest last, commits the sinks' pending output, then applies
//! retention and deletes files no retained manifest references (`retention`).

mod retention;
#[cfg(test)]
mod tests;

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};

use self::retention::remove_dir;
use super::declines::Declines;
use super::files::{SharedUploader, UploadStats, Uploader};
use super::manifest::{Manifest, ManifestKind, SinkChannel, SinkCommit, TaskState, FORMAT};
use super::participant::{CommitParticipant, PositionPublisher};
use super::storage::CheckpointStorage;
use super::{CheckpointError, CheckpointId, Contribution, Participant, Report};
use crate::config::spec::CheckpointSpec;
use crate::metrics::Metrics;
use crate::run_control::RunControl;

/// What tasks and sinks hold: the barrier to inject next, and where to report.
#[derive(Clone)]
pub struct Barriers {
    requested: Arc<AtomicU64>,
    /// The newest checkpoint every receiver must align, even in unaligned mode (0: none).
    must_align: Arc<AtomicU64>,
    reports: Sender<Report>,
    state_dir: PathBuf,
}

impl Barriers {
    /// Barriers driven by a test: `requested` stands for the coordinator.
    #[cfg(test)]
    pub(crate) fn for_test(
        requested: Arc<AtomicU64>,
        state_dir: &std::path::Path,
    ) -> (Barriers, Receiver<Report>) {
        let (reports, rx) = crossbeam_channel::unbounded();
        (
            Barriers {
                requested,
                must_align: Arc::new(AtomicU64::new(0)),
                reports,
                state_dir: state_dir.to_path_buf(),
            },
            rx,
        )
    }

    /// The newest checkpoint the coordinator asked for (0: none yet).
    pub fn requested(&self) -> CheckpointId {
        self.requested.load(Ordering::Acquire)
    }

    /// Whether checkpoint `id` must be aligned at every receiver, whatever the mode (a Wasm
    /// module version switches at its barrier).
    pub fn must_align(&self, id: CheckpointId) -> bool {
        id != 0 && self.must_align.load(Ordering::Acquire) == id
    }

    pub fn report(&self, report: Report) {
        // The coordinator only goes away when the run is being torn down.
        let _ = self.reports.send(report);
    }

    /// The folder a stage task writes its local RocksDB checkpoint into.
    pub fn snapshot_dir(&self, id: Option<CheckpointId>, stage: usize, task: usize) -> PathBuf {
        let name = match id {
            Some(id) => format!("pending-{id}"),
            None => "final".to_string(),
        };
        self.state_dir
            .join("checkpoints")
            .join(name)
            .join(task_dir_name(stage, task))
    }

    /// Where sink participant `sink` writes its in-flight results of unaligned checkpoint `id`.
    pub fn sink_channel_path(&self, id: CheckpointId, sink: usize) -> PathBuf {
        self.state_dir
            .join("checkpoints")
            .join(format!("pending-{id}"))
            .join(format!("sink-{sink}.channel.jsonl"))
    }
}

/// `s<stage>-t<task>`: a stage task's folder name (live state and local checkpoints).
pub fn task_dir_name(stage: usize, task: usize) -> String {
    format!("s{stage}-t{task}")
}

/// Everything the coordinator needs.
pub struct Setup {
    pub spec: CheckpointSpec,
    pub pipeline: String,
    pub parallelism: usize,
    pub max_parallelism: u32,
    pub operators: Vec<String>,
    pub state_dir: PathBuf,
    pub participants: Vec<Participant>,
    /// The first id this run uses.
    pub next_id: CheckpointId,
    pub storage: CheckpointStorage,
    pub uploader: Uploader,
    /// Each stateful task's label and live RocksDB folder: their SST files are uploaded ahead
    /// of checkpoints ([`super::preupload`]).
    pub live_dirs: Vec<(String, PathBuf)>,
    /// Length of the dead-letter file as the run starts (restored checkpoint's, or 0).
    pub dlq_len: u64,
    /// A stop request takes a checkpoint at once, then halts the tasks (no draining: the
    /// next run resumes exactly there).
    pub control: Arc<RunControl>,
    /// Savepoints asked for through the control API.
    pub savepoints: Option<Receiver<super::SavepointRequest>>,
    /// Sources that also publish their checkpointed positions elsewhere (Kafka consumer
    /// groups), by source name.
    pub publishers: Vec<(String, Arc<dyn PositionPublisher>)>,
    /// What makes each sink instance's output visible, by (sink, instance): file sinks, the
    /// dead-letter file, transactional sinks.
    pub committers: HashMap<(String, usize), Arc<dyn CommitParticipant>>,
    /// What else changes at checkpoint boundaries (Wasm module versions).
    pub boundary: Option<Arc<dyn super::Boundary>>,
}

/// How the coordinator ended.
#[derive(Debug, Default)]
pub struct Outcome {
    pub completed: u64,
    pub failed: u64,
    pub last: Option<(CheckpointId, bool)>,
    /// Stopped on request after checkpoint `last`.
    pub stopped: bool,
}

struct Inflight {
    id: CheckpointId,
    started: Instant,
    started_ms: i64,
    reports: HashMap<Participant, Contribution>,
    /// Savepoints to copy from this checkpoint once it is complete.
    savepoints: Vec<super::SavepointRequest>,
}

pub struct Coordinator {
    setup: Setup,
    /// The setup's uploader, shared with the background uploader.
    uploader: SharedUploader,
    rx: Receiver<Report>,
    requested: Arc<AtomicU64>,
    must_align: Arc<AtomicU64>,
    metrics: Arc<Metrics>,
    finished: HashMap<Participant, Contribution>,
    uncommitted: Vec<SinkCommit>,
    inflight: Option<Inflight>,
    next_id: CheckpointId,
    last_trigger: Instant,
    last_end: Instant,
    outcome: Outcome,
    /// Manifests this run wrote or read, for garbage collection.
    known: HashMap<CheckpointId, HashSet<String>>,
    stop_pending: Arc<AtomicBool>,
    /// Savepoint requests waiting for the next checkpoint to be triggered.
    savepoints_waiting: Vec<super::SavepointRequest>,
    /// Checkpoints the storage failed to take, in a row.
    declines: Declines,
}

/// A checkpoint written to the storage (state files and manifest), not yet committed.
struct Written {
    manifest: Manifest,
    stats: UploadStats,
    local_dirs: Vec<(usize, usize, PathBuf)>,
}

impl Coordinator {
    pub fn new(mut setup: Setup, metrics: Arc<Metrics>) -> (Coordinator, Barriers) {
        let uploader = Arc::new(std::sync::Mutex::new(std::mem::take(&mut setup.uploader)));
        let (tx, rx) = crossbeam_channel::unbounded();
        let requested = Arc::new(AtomicU64::new(0));
        let must_align = Arc::new(AtomicU64::new(0));
        let barriers = Barriers {
            requested: requested.clone(),
            must_align: must_align.clone(),
            reports: tx,
            state_dir: setup.state_dir.clone(),
        };
        let now = Instant::now();
        let next_id = setup.next_id;
        // After a declined checkpoint the next waits an interval (at least the minimum pause).
        let declines = Declines::new(
            setup.spec.tolerable_failures,
            setup.spec.interval.max(setup.spec.min_pause),
        );
        (
            Coordinator {
                setup,
                uploader,
                rx,
                requested,
                must_align,
                metrics,
                finished: HashMap::new(),
                uncommitted: Vec::new(),
                inflight: None,
                next_id,
                last_trigger: now,
                last_end: now,
                outcome: Outcome::default(),
                known: HashMap::new(),
                stop_pending: Arc::new(AtomicBool::new(false)),
                savepoints_waiting: Vec::new(),
                declines,
            },
            barriers,
        )
    }

    /// Runs until every participant finished (then the final checkpoint is written), the run
    /// is cancelled, or every participant went away. A failure cancels the run.
    pub fn run(self) -> Result<Outcome, CheckpointError> {
        let control = self.setup.control.clone();
        let result = self.run_until_done();
        if result.is_err() {
            tracing::debug!("checkpoints failed: stopping the run");
            control.cancel();
        }
        result
    }

    fn run_until_done(mut self) -> Result<Outcome, CheckpointError> {
        const TICK: Duration = Duration::from_millis(10);
        let _ahead = self.start_upload_ahead();
        loop {
            match self.rx.recv_timeout(TICK) {
                Ok(r) => self.accept(r),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    if self.all_finished() {
                        self.finish()?;
                    } else if !self.setup.control.cancelled() {
                        let missing: Vec<_> = self
                            .setup
                            .participants
                            .iter()
                            .filter(|p| !self.finished.contains_key(p))
                            .collect();
                        tracing::warn!(
                            ?missing,
                            "the run ended before every participant finished: output after the last checkpoint stays uncommitted until the next run resumes from it"
                        );
                    }
                    return Ok(self.outcome);
                }
            }
            while let Ok(r) = self.rx.try_recv() {
                self.accept(r);
            }
            if let Some(requests) = &self.setup.savepoints {
                self.savepoints_waiting.extend(requests.try_iter());
            }
            if self.setup.control.cancelled() {
                return Ok(self.outcome);
            }
            if self.all_finished() {
                self.finish()?;
                return Ok(self.outcome);
            }
            if self.inflight_complete() {
                let id = self.inflight.as_ref().map(|i| i.id).unwrap_or_default();
                if self.complete()? && self.stop_pending.load(Ordering::Relaxed) {
                    tracing::info!(checkpoint = id, "stopped after checkpoint");
                    self.outcome.stopped = true;
                    self.setup.control.cancel();
                    return Ok(self.outcome);
                }
                continue;
            }
            let now = Instant::now();
            if let Some(inflight) = &self.inflight {
                if now.duration_since(inflight.started) > self.setup.spec.timeout {
                    self.abort("timed out");
                }
                continue;
            }
            if !self.declines.may_start(now) {
                continue;
            }
            let stop = self.setup.control.stop_requested();
            if stop {
                self.stop_pending.store(true, Ordering::Relaxed);
            }
            let due = now.duration_since(self.last_trigger) >= self.setup.spec.interval
                && now.duration_since(self.last_end) >= self.setup.spec.min_pause;
            // A savepoint is taken at once (still after the minimum pause).
            let savepoint = !self.savepoints_waiting.is_empty()
                && now.duration_since(self.last_end) >= self.setup.spec.min_pause;
            if due || stop || savepoint {
                self.trigger(now);
            }
        }
    }

    /// Starts uploading the stateful tasks' SST files ahead of checkpoints (stops when
    /// dropped). Without it checkpoints still work, uploading everything themselves.
    fn start_upload_ahead(&self) -> Option<super::preupload::PreUploader> {
        if self.setup.live_dirs.is_empty() {
            return None;
        }
        let started = self.setup.storage.reopen().and_then(|storage| {
            super::preupload::PreUploader::start(
                storage,
                self.uploader.clone(),
                self.setup.live_dirs.clone(),
            )
            .map_err(|source| CheckpointError::Io {
                path: self.setup.state_dir.clone(),
                source,
            })
        });
        match started {
            Ok(p) => Some(p),
            Err(e) => {
                tracing::warn!("state files are not uploaded ahead of checkpoints: {e}");
                None
            }
        }
    }

    /// The uploader (a panic elsewhere while holding it leaves its maps usable).
    fn uploader(&self) -> std::sync::MutexGuard<'_, Uploader> {
        self.uploader.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn trigger(&mut self, now: Instant) {
        let id = self.next_id;
        self.next_id += 1;
        self.last_trigger = now;
        self.inflight = Some(Inflight {
            id,
            started: now,
            started_ms: wall_ms(),
            reports: HashMap::new(),
            savepoints: std::mem::take(&mut self.savepoints_waiting),
        });
        tracing::debug!(checkpoint = id, "checkpoint triggered");
        if let Some(boundary) = &self.setup.boundary {
            if boundary.before_trigger(id) {
                // Set before the barrier exists, so every receiver sees it with the barrier.
                self.must_align.store(id, Ordering::Release);
            }
        }
        self.requested.store(id, Ordering::Release);
    }

    fn accept(&mut self, r: Report) {
        let Report {
            from,
            id,
            contribution,
        } = r;
        let contribution = match contribution {
            Contribution::Sink { commit, channel } => {
                // Sink output is data: keep it whatever became of its checkpoint.
                self.uncommitted.extend(commit);
                Contribution::Sink {
                    commit: None,
                    channel,
                }
            }
            other => other,
        };
        match id {
            None => {
                self.finished.insert(from, contribution);
            }
            Some(id) => match &mut self.inflight {
                Some(inflight) if inflight.id == id => {
                    inflight.reports.insert(from, contribution);
                }
                _ => {
                    // A checkpoint that was abandoned: its local snapshot is not needed.
                    if let Contribution::Stage { dir: Some(dir), .. } = contribution {
                        remove_dir(&dir);
                    }
                }
            },
        }
    }

    fn all_finished(&self) -> bool {
        self.setup
            .participants
            .iter()
            .all(|p| self.finished.contains_key(p))
    }

    fn inflight_complete(&self) -> bool {
        self.inflight.as_ref().is_some_and(|i| {
            self.setup
                .participants
                .iter()
                .all(|p| i.reports.contains_key(p) || self.finished.contains_key(p))
        })
    }

    fn abort(&mut self, why: &str) {
        if let Some(inflight) = self.inflight.take() {
            tracing::warn!(checkpoint = inflight.id, "checkpoint abandoned: {why}");
            self.drop_checkpoint(inflight);
        }
    }

    /// Gives up on a checkpoint (abandoned or declined): its savepoints wait for the next one,
    /// its local snapshots go; sink output stays pending for the next one to commit.
    fn drop_checkpoint(&mut self, inflight: Inflight) {
        self.release(inflight);
        self.outcome.failed += 1;
        self.metrics.update_checkpoints(|c| c.failed += 1);
        self.last_end = Instant::now();
    }

    /// Lets go of a checkpoint that will not be written: its savepoints wait for the next
    /// one, its local snapshots go (sink output stays pending for the next one to commit).
    fn release(&mut self, mut inflight: Inflight) {
        self.savepoints_waiting.append(&mut inflight.savepoints);
        for c in inflight.reports.values() {
            if let Contribution::Stage { dir: Some(dir), .. } = c {
                remove_dir(dir);
            }
        }
    }

    /// Every participant finished: a final checkpoint is taken from their finished
    /// contributions alone, and retaken while the storage declines it (until too many fail,
    /// or the run is cancelled).
    ///
    /// A checkpoint still in flight is superseded, never completed as the final one:
    /// participants that reported for it went on to write more before they finished (a
    /// sink's last epoch, a source's last records), and only a checkpoint taken after they
    /// finished commits that. The final one covers everything the superseded one would.
    fn finish(&mut self) -> Result<(), CheckpointError> {
        if let Some(inflight) = self.inflight.take() {
            tracing::debug!(
                checkpoint = inflight.id,
                "every participant finished: the final checkpoint replaces this one"
            );
            self.release(inflight);
        }
        loop {
            if self.inflight.is_none() {
                let wait = self.declines.wait(Instant::now());
                if !wait.is_zero() {
                    std::thread::sleep(wait.min(Duration::from_millis(50)));
                    if self.setup.control.cancelled() {
                        return Ok(());
                    }
                    continue;
                }
                self.trigger(Instant::now());
            }
            if self.complete()? {
                return Ok(());
            }
        }
    }

    fn contribution<'a>(
        &'a self,
        inflight: &'a Inflight,
        p: &Participant,
    ) -> Option<&'a Contribution> {
        inflight.reports.get(p).or_else(|| self.finished.get(p))
    }

    /// Writes the checkpoint in flight and commits its output: true once it is complete,
    /// false when the storage declined it (the run goes on; see [`Declines`]).
    fn complete(&mut self) -> Result<bool, CheckpointError> {
        let Some(inflight) = self.inflight.take() else {
            return Ok(true);
        };
        match self.write(&inflight) {
            Ok(written) => {
                self.declines.completed();
                self.commit(inflight, written)?;
                Ok(true)
            }
            Err(cause) => {
                let id = inflight.id;
                self.drop_checkpoint(inflight);
                self.declines
                    .declined(id, self.setup.storage.url(), cause)?;
                Ok(false)
            }
        }
    }

    /// Uploads the checkpoint's new state files and in-flight data, then writes its manifest.
    fn write(&mut self, inflight: &Inflight) -> Result<Written, CheckpointError> {
        let id = inflight.id;
        let mut stats = UploadStats::default();
        let mut sources = Vec::new();
        let mut tasks = Vec::new();
        let mut local_dirs: Vec<(usize, usize, PathBuf)> = Vec::new();
        let mut sink_channels = Vec::new();
        let participants = self.setup.participants.clone();
        let gathered: Vec<(Participant, Option<Contribution>)> = participants
            .iter()
            .map(|p| (*p, self.contribution(inflight, p).cloned()))
            .collect();
        for (p, contribution) in &gathered {
            match (p, contribution) {
                (Participant::Source { .. }, Some(Contribution::Source(parts))) => {
                    sources.extend(parts.iter().cloned())
                }
                (
                    Participant::Stage { stage, task },
                    Some(Contribution::Stage {
                        watermark,
                        key_groups,
                        dir,
                        channel,
                    }),
                ) => {
                    let channel = match channel {
                        Some(path) => Some(self.uploader().upload_file(
                            &self.setup.storage,
                            "channel.jsonl",
                            path,
                            &mut stats,
                        )?),
                        None => None,
                    };
                    let files = match dir {
                        Some(dir) => {
                            let label = task_dir_name(*stage, *task);
                            let files = self.uploader().upload_dir(
                                &self.setup.storage,
                                &label,
                                dir,
                                &mut stats,
                            )?;
                            local_dirs.push((*stage, *task, dir.clone()));
                            files
                        }
                        None => Vec::new(),
                    };
                    tasks.push(TaskState {
                        stage: *stage,
                        task: *task,
                        key_groups: *key_groups,
                        watermark: *watermark,
                        files,
                        channel,
                    });
                }
                (
                    Participant::Sink { .. },
                    Some(Contribution::Sink {
                        channel: Some(c), ..
                    }),
                ) => sink_channels.push(SinkChannel {
                    sink: c.sink.clone(),
                    instance: c.instance,
                    file: self.uploader().upload_file(
                        &self.setup.storage,
                        "channel.jsonl",
                        &c.path,
                        &mut stats,
                    )?,
                }),
                _ => {}
            }
        }
        let commits: Vec<SinkCommit> = self
            .uncommitted
            .iter()
            .filter(|c| c.epoch <= id)
            .cloned()
            .collect();
        let finished = participants
            .iter()
            .filter(|p| matches!(p, Participant::Source { .. }))
            .all(|p| self.finished.contains_key(p))
            && sources.iter().all(|s| s.ended);
        let manifest = Manifest {
            format: FORMAT,
            id,
            kind: ManifestKind::Checkpoint,
            pipeline: self.setup.pipeline.clone(),
            started_ms: inflight.started_ms,
            duration_ms: 0,
            parallelism: self.setup.parallelism,
            max_parallelism: self.setup.max_parallelism,
            finished,
            operators: self.setup.operators.clone(),
            sources,
            tasks,
            commits,
            state_bytes: stats.total_bytes,
            uploaded_bytes: stats.uploaded_bytes,
            dlq_len: None,
            sink_channels,
            udf_modules: self
                .setup
                .boundary
                .as_ref()
                .map(|b| b.modules_after(id))
                .unwrap_or_default(),
        };
        let mut manifest = manifest;
        let dlq_len = manifest
            .commits
            .iter()
            .filter_map(|c| c.append)
            .map(|a| a.offset + a.size)
            .max()
            .unwrap_or(self.setup.dlq_len);
        manifest.dlq_len = Some(dlq_len);
        manifest.duration_ms = inflight.started.elapsed().as_millis() as u64;
        crash_point("uploaded");
        self.setup.storage.write_manifest(&manifest)?;
        Ok(Written {
            manifest,
            stats,
            local_dirs,
        })
    }

    /// Makes a written checkpoint's output visible, applies retention, reports it.
    fn commit(&mut self, inflight: Inflight, written: Written) -> Result<(), CheckpointError> {
        let Written {
            manifest,
            stats,
            local_dirs,
        } = written;
        let id = inflight.id;
        let dlq_len = manifest.dlq_len.unwrap_or(self.setup.dlq_len);
        crash_point("manifest-written");
        // The checkpoint exists: now its output becomes visible.
        for (i, c) in manifest.commits.iter().enumerate() {
            let committer = self
                .setup
                .committers
                .get(&(c.sink.clone(), c.instance))
                .ok_or_else(|| CheckpointError::Commit {
                    message: format!(
                        "nothing commits the output of sink `{}` (instance {})",
                        c.sink, c.instance
                    ),
                })?;
            committer.commit(c)?;
            if i == 0 {
                crash_point("committed-one");
            }
        }
        // The last checkpoint of a run waits for the group commit (the process ends next).
        let last = manifest.finished || self.stop_pending.load(Ordering::Relaxed);
        for (source, publisher) in &self.setup.publishers {
            let states: Vec<_> = manifest
                .sources
                .iter()
                .filter(|p| &p.source == source)
                .cloned()
                .collect();
            publisher.publish(&states, last);
        }
        self.uncommitted.retain(|c| c.epoch > id);
        self.setup.dlq_len = dlq_len;
        let all_finished = self.all_finished();
        self.keep_local(id, &local_dirs, all_finished);
        self.known
            .insert(id, manifest.files().map(|f| f.key.clone()).collect());
        // The checkpoint is complete: a storage failure now only delays the clean-up.
        if let Err(e) = self.retain_and_collect() {
            tracing::warn!(checkpoint = id, "old checkpoints are deleted later: {e}");
        }
        let duration = inflight.started.elapsed();
        tracing::info!(
            checkpoint = id,
            ms = duration.as_millis() as u64,
            state_bytes = stats.total_bytes,
            uploaded_bytes = stats.uploaded_bytes,
            files = stats.files,
            "checkpoint complete"
        );
        self.metrics.update_checkpoints(|c| {
            c.completed += 1;
            c.last_id = Some(id);
            c.last_duration_ms = duration.as_millis() as u64;
            c.last_state_bytes = stats.total_bytes;
            c.last_uploaded_bytes = stats.uploaded_bytes;
            c.last_files = stats.files as u64;
        });
        self.outcome.completed += 1;
        self.outcome.last = Some((id, manifest.finished));
        if let Some(boundary) = &self.setup.boundary {
            boundary.completed(id);
        }
        for request in inflight.savepoints {
            let result = super::inspect::copy_to_savepoint(
                &self.setup.storage,
                manifest.clone(),
                &request.to,
            );
            match &result {
                Ok(info) => tracing::info!(
                    checkpoint = id,
                    location = %info.location,
                    files = info.files,
                    bytes = info.bytes,
                    "savepoint written"
                ),
                Err(e) => tracing::warn!(checkpoint = id, "savepoint failed: {e}"),
            }
            let _ = request.reply.send(result.map_err(|e| e.to_string()));
        }
        self.last_end = Instant::now();
        Ok(())
    }
}

/// Failure injection for the recovery tests: `HEADWATER_CRASH_AT=<point>` aborts the process
/// (as abruptly as a kill -9) the first time a checkpoint reaches `<point>`: `uploaded` (state
/// files stored, manifest not yet written), `manifest-written` (sink output not yet
/// committed), `committed-one` (first sink part committed, others not).
/// Failure injection for tests: `HEADWATER_CRASH_AT=POINT` aborts the process the first time
/// it reaches `POINT`, `POINT:N` the N-th time.
fn crash_point(point: &str) {
    static AT: std::sync::OnceLock<Option<(String, u32)>> = std::sync::OnceLock::new();
    static SEEN: AtomicU64 = AtomicU64::new(0);
    let at = AT.get_or_init(|| {
        let v = std::env::var("HEADWATER_CRASH_AT").ok()?;
        Some(match v.split_once(':') {
            Some((p, n)) => (p.to_string(), n.parse().unwrap_or(1)),
            None => (v, 1),
        })
    });
    if let Some((p, n)) = at {
        if p == point && SEEN.fetch_add(1, Ordering::Relaxed) + 1 >= u64::from(*n) {
            eprintln!("HEADWATER_CRASH_AT={point}: aborting on purpose");
            std::process::abort();
        }
    }
}

/// Milliseconds since the Unix epoch (for listings; never used for event time).
pub fn wall_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
