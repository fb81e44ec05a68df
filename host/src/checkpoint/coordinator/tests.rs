//! The coordinator's end of a run, driven report by report (no tasks, no thread).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::*;
use crate::checkpoint::manifest::{Manifest, PartitionState, Position};
use crate::checkpoint::participant::CommitParticipant;
use crate::config::spec::{CheckpointMode, CheckpointSpec};

/// Records the epochs it is asked to commit (a fake: the coordinator's decisions are tested).
struct Recorder(Arc<Mutex<Vec<CheckpointId>>>);

impl CommitParticipant for Recorder {
    fn name(&self) -> &str {
        "out"
    }

    fn commit(&self, commit: &SinkCommit) -> Result<(), CheckpointError> {
        if let Ok(mut done) = self.0.lock() {
            done.push(commit.epoch);
        }
        Ok(())
    }

    fn discard_after(&self, _: Option<&Manifest>) -> Result<(), CheckpointError> {
        Ok(())
    }
}

const SOURCE: Participant = Participant::Source { task: 0 };
const SINK: Participant = Participant::Sink { sink: 0 };

fn coordinator(dir: &std::path::Path) -> (Coordinator, Arc<Mutex<Vec<CheckpointId>>>) {
    let url = format!("file://{}", dir.join("checkpoints").display());
    let storage = CheckpointStorage::open(&url).expect("storage");
    let uploader = Uploader::new(&storage).expect("uploader");
    let committed = Arc::new(Mutex::new(Vec::new()));
    let mut committers: HashMap<(String, usize), Arc<dyn CommitParticipant>> = HashMap::new();
    committers.insert(("out".into(), 0), Arc::new(Recorder(committed.clone())));
    let setup = Setup {
        spec: CheckpointSpec {
            enabled: true,
            interval: Duration::from_millis(100),
            timeout: Duration::from_secs(600),
            min_pause: Duration::ZERO,
            retain: 100,
            location: url,
            mode: CheckpointMode::Unaligned,
            aligned_timeout: Duration::ZERO,
            tolerable_failures: 3,
        },
        pipeline: "p".into(),
        parallelism: 1,
        max_parallelism: 128,
        operators: Vec::new(),
        state_dir: dir.join("state"),
        participants: vec![SOURCE, SINK],
        next_id: 1,
        storage,
        uploader,
        live_dirs: Vec::new(),
        dlq_len: 0,
        control: RunControl::new(),
        savepoints: None,
        publishers: Vec::new(),
        committers,
        boundary: None,
    };
    let (c, _barriers) = Coordinator::new(setup, Arc::new(Metrics::new(1)));
    (c, committed)
}

fn position(records: u64, ended: bool) -> Contribution {
    Contribution::Source(vec![PartitionState {
        source: "in".into(),
        partition: "in.jsonl".into(),
        position: Position {
            offset: records * 10,
            records,
        },
        max_event_time: None,
        ended,
    }])
}

fn sink_epoch(epoch: CheckpointId) -> Contribution {
    Contribution::Sink {
        commit: Some(SinkCommit {
            sink: "out".into(),
            epoch,
            pending: PathBuf::from(format!("out/.part-{epoch}.pending")),
            committed: PathBuf::from(format!("out/part-{epoch}")),
            append: None,
            transaction: None,
            instance: 0,
        }),
        channel: None,
    }
}

fn report(from: Participant, id: Option<CheckpointId>, contribution: Contribution) -> Report {
    Report {
        from,
        id,
        contribution,
    }
}

#[test]
fn a_run_that_finishes_while_a_checkpoint_is_in_flight_still_commits_its_last_epoch() {
    // Checkpoint 1 is in flight; its reports and the participants' final ones arrive
    // together (a loaded machine): the source at record 100 for checkpoint 1, then at its
    // end (150); the sink's epoch 1 for checkpoint 1, then its last epoch 2 as it finished.
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut c, committed) = coordinator(dir.path());
    c.trigger(Instant::now());
    c.accept(report(SOURCE, Some(1), position(100, false)));
    c.accept(report(SINK, Some(1), sink_epoch(1)));
    c.accept(report(SOURCE, None, position(150, true)));
    c.accept(report(SINK, None, sink_epoch(2)));
    assert!(c.all_finished());
    c.finish().expect("finish");
    // Before the fix the run ended with checkpoint 1: records 100..150 (epoch 2) were
    // written but never committed, and lost. Now checkpoint 2, taken from the finished
    // contributions, replaces it and commits both epochs.
    assert_eq!(*committed.lock().expect("log"), vec![1, 2]);
    let storage = CheckpointStorage::open(&c.setup.spec.location).expect("storage");
    assert_eq!(storage.list_checkpoints().expect("list"), vec![2]);
    let last = storage.read_manifest(2).expect("manifest 2");
    assert!(last.finished, "the last checkpoint is the finished one");
    assert_eq!(last.sources[0].position.records, 150);
    assert_eq!(
        last.commits.iter().map(|c| c.epoch).collect::<Vec<_>>(),
        vec![1, 2]
    );
    assert_eq!(c.outcome.last, Some((2, true)));
}

#[test]
fn a_run_that_finishes_between_checkpoints_takes_one_final_checkpoint() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut c, committed) = coordinator(dir.path());
    c.accept(report(SOURCE, None, position(150, true)));
    c.accept(report(SINK, None, sink_epoch(1)));
    c.finish().expect("finish");
    assert_eq!(*committed.lock().expect("log"), vec![1]);
    let storage = CheckpointStorage::open(&c.setup.spec.location).expect("storage");
    assert_eq!(storage.list_checkpoints().expect("list"), vec![1]);
    assert!(storage.read_manifest(1).expect("manifest").finished);
}
