//! A sink instance's thread: writes the results its senders send, and takes part in
//! checkpoints (aligned: after every sender's barrier; unaligned: see [`super::unaligned`]).

use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::Receiver;

use crate::checkpoint::coordinator::Barriers;
use crate::checkpoint::manifest::SinkCommit;
use crate::checkpoint::{CheckpointId, Contribution, Participant, Report};
use crate::sinks::{Sink, SinkError};
use crate::state::StateError;
use crate::value::Value;

use super::align::{Aligner, Recv, Step};
use super::outputs::{CloseCreditsOnDrop, CreditCounters, SinkItem, SinkMsg};
use super::unaligned::{self, Flow, LaneItem, UnalignedInput};
use super::{RunControl, RunError};

/// A sink thread's part in checkpoints.
pub struct SinkCheckpointing {
    pub barriers: Barriers,
    pub sink: usize,
    /// The sink's name and which of its instances this is (for in-flight results).
    pub name: String,
    pub instance: usize,
    /// Tasks that send to the sink (every task of every stage).
    pub senders: usize,
    /// The epoch the sink's next records belong to.
    pub epoch: CheckpointId,
    /// Unaligned checkpoints: the priority lane barriers take, and the credits this sink
    /// gives its senders as it handles their messages.
    pub priority: Option<UnalignedInput>,
}

/// A sink and what writing to it involves: a reader that closed the output ends writing
/// (the rest is drained and discarded), any other failure cancels the run.
struct SinkWriter {
    sink: Box<dyn Sink>,
    control: Arc<RunControl>,
    closed: bool,
}

impl SinkWriter {
    fn write(&mut self, values: &[Value]) -> Result<(), RunError> {
        if self.closed {
            return Ok(()); // keep draining so upstream never blocks on a closed output
        }
        match self.sink.write(values) {
            Ok(()) => Ok(()),
            Err(SinkError::Closed { .. }) => {
                tracing::warn!("output closed by the reader; discarding the rest of its records");
                self.closed = true;
                Ok(())
            }
            Err(e) => {
                self.control.cancel();
                Err(RunError::from(e))
            }
        }
    }

    fn flush(&mut self) -> Result<(), RunError> {
        match self.sink.flush() {
            Ok(()) | Err(SinkError::Closed { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    fn pre_commit(&mut self, epoch: CheckpointId) -> Result<Option<SinkCommit>, RunError> {
        match self.sink.pre_commit(epoch) {
            Ok(c) => Ok(c),
            Err(SinkError::Closed { .. }) => Ok(None),
            Err(e) => Err(RunError::from(e)),
        }
    }
}

pub fn run_sink(
    sink: Box<dyn Sink>,
    rx: Receiver<SinkMsg>,
    control: Arc<RunControl>,
    checkpointing: Option<SinkCheckpointing>,
    restored: Vec<Value>,
) -> Result<(), RunError> {
    let mut out = SinkWriter {
        sink,
        control,
        closed: false,
    };
    // Results in flight to this sink at the restored (unaligned) checkpoint come first.
    if !restored.is_empty() {
        out.write(&restored)?;
    }
    let Some(mut ckpt) = checkpointing else {
        for (_, item) in rx {
            if let SinkItem::Data(values) = item {
                out.write(&values)?;
            }
        }
        return out.flush();
    };
    if let Some(input) = ckpt.priority.take() {
        // However the sink ends, its senders stop waiting for its credit.
        let _close = CloseCreditsOnDrop(input.credits.clone());
        return run_sink_unaligned(&mut out, rx, &input, ckpt);
    }
    // Checkpointed: align the barriers of every sending task, then pre-commit the epoch.
    let mut aligner: Aligner<SinkItem> = Aligner::new(ckpt.senders);
    loop {
        match aligner.next(|| match rx.recv() {
            Ok((from, item)) => Recv::Msg(from, item),
            Err(_) => Recv::Closed,
        }) {
            Step::Deliver(_, SinkItem::Data(values)) => out.write(&values)?,
            Step::Deliver(_, SinkItem::End) if aligner.all_ended() => {
                let commit = out.pre_commit(ckpt.epoch)?;
                report_sink(&ckpt, None, commit, None);
                return Ok(());
            }
            Step::Deliver(..) => {}
            Step::Aligned(id) => {
                let commit = out.pre_commit(id)?;
                ckpt.epoch = id + 1;
                report_sink(&ckpt, Some(id), commit, None);
                aligner.release();
            }
            // The run is being torn down (or stopped at a checkpoint): what was written
            // since is discarded by the next run's recovery.
            Step::Closed | Step::Timeout => return Ok(()),
        }
    }
}

fn report_sink(
    ckpt: &SinkCheckpointing,
    id: Option<CheckpointId>,
    commit: Option<SinkCommit>,
    channel: Option<std::path::PathBuf>,
) {
    ckpt.barriers.report(Report {
        from: Participant::Sink { sink: ckpt.sink },
        id,
        contribution: Contribution::Sink {
            commit,
            channel: channel.map(|path| crate::checkpoint::SinkChannelPath {
                sink: ckpt.name.clone(),
                instance: ckpt.instance,
                path,
            }),
        },
    });
}

impl LaneItem for SinkItem {
    type Payload = Vec<Value>;
    /// Sinks number only data messages (see [`super::outputs::SinkLane::send_barrier`]).
    fn counted(&self) -> bool {
        matches!(self, SinkItem::Data(_))
    }
    fn is_end(&self) -> bool {
        matches!(self, SinkItem::End)
    }
    fn payload(&self) -> Option<&Vec<Value>> {
        match self {
            SinkItem::Data(values) => Some(values),
            _ => None,
        }
    }
}

/// A sink instance in unaligned checkpoints: its epoch is pre-committed at a checkpoint's first
/// barrier; results its senders sent before their barriers and not yet written are stored with
/// the checkpoint (and still written as usual, into the next epoch), so the checkpoint
/// completes without waiting for the sink to work through its queue.
struct UnalignedSink<'a> {
    out: &'a mut SinkWriter,
    ckpt: SinkCheckpointing,
    credits: &'a CreditCounters,
    ended: Vec<bool>,
}

impl unaligned::Participant for UnalignedSink<'_> {
    type Item = SinkItem;
    type Begun = Option<SinkCommit>;

    fn wait(&self) -> Duration {
        Duration::from_millis(5)
    }

    fn cancelled(&self) -> bool {
        self.out.control.cancelled()
    }

    fn must_align(&self, id: CheckpointId) -> bool {
        self.ckpt.barriers.must_align(id)
    }

    fn begin(&mut self, id: CheckpointId) -> Result<Option<Self::Begun>, RunError> {
        let commit = self.out.pre_commit(id)?;
        self.ckpt.epoch = id + 1;
        Ok(Some(commit))
    }

    fn abandon(&mut self, id: CheckpointId, commit: Self::Begun) {
        // The epoch's output still counts: the next manifest commits it.
        report_sink(&self.ckpt, Some(id), commit, None);
    }

    fn complete(
        &mut self,
        id: CheckpointId,
        commit: Self::Begun,
        in_flight: Vec<Vec<Value>>,
    ) -> Result<(), RunError> {
        let channel = store_sink_channel(&self.ckpt, id, in_flight)?;
        report_sink(&self.ckpt, Some(id), commit, channel);
        Ok(())
    }

    fn handle(&mut self, from: usize, item: SinkItem) -> Result<Flow, RunError> {
        match item {
            SinkItem::Data(values) => {
                // The sender may send one more (see `SinkLane::send_data`).
                self.credits.handled_one(from);
                self.out.write(&values)?;
            }
            SinkItem::End => {
                if let Some(e) = self.ended.get_mut(from) {
                    *e = true;
                }
                if self.ended.iter().all(|e| *e) {
                    let commit = self.out.pre_commit(self.ckpt.epoch)?;
                    report_sink(&self.ckpt, None, commit, None);
                    return Ok(Flow::Done);
                }
            }
            SinkItem::Barrier(_) => {}
        }
        Ok(Flow::Go)
    }
}

fn run_sink_unaligned(
    out: &mut SinkWriter,
    rx: Receiver<SinkMsg>,
    input: &UnalignedInput,
    ckpt: SinkCheckpointing,
) -> Result<(), RunError> {
    let senders = ckpt.senders;
    let mut sink = UnalignedSink {
        out,
        ckpt,
        credits: &input.credits,
        ended: vec![false; senders],
    };
    // Torn down or done: what was written since the last checkpoint is discarded by the next
    // run's recovery.
    unaligned::run(
        &mut sink,
        &rx,
        &input.priority,
        senders,
        input.aligned_timeout,
    )?;
    Ok(())
}

/// Writes a completed capture's results next to the checkpoint's other local files.
fn store_sink_channel(
    ckpt: &SinkCheckpointing,
    id: CheckpointId,
    in_flight: Vec<Vec<Value>>,
) -> Result<Option<std::path::PathBuf>, RunError> {
    let values: Vec<Value> = in_flight.into_iter().flatten().collect();
    if values.is_empty() {
        return Ok(None);
    }
    let path = ckpt.barriers.sink_channel_path(id, ckpt.sink);
    let fail = |source| {
        RunError::State(StateError::Clear {
            path: path.clone(),
            source,
        })
    };
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(fail)?;
    }
    crate::checkpoint::channel::write_values(&path, &values).map_err(fail)?;
    Ok(Some(path))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::manifest::SinkCommit;
    use crate::runtime::outputs;
    use crate::value::Value;
    use crossbeam_channel::bounded;
    use std::sync::atomic::Ordering;
    use std::sync::Mutex;
    use std::time::Duration;

    #[derive(Clone, Debug, PartialEq)]
    enum Event {
        Write(Vec<Value>),
        PreCommit(CheckpointId),
    }

    /// Records what the sink thread asks of it (a fake: the point is the thread's protocol).
    struct Recording(Arc<Mutex<Vec<Event>>>);

    impl Sink for Recording {
        fn write(&mut self, records: &[Value]) -> Result<(), SinkError> {
            if let Ok(mut log) = self.0.lock() {
                log.push(Event::Write(records.to_vec()));
            }
            Ok(())
        }

        fn flush(&mut self) -> Result<(), SinkError> {
            Ok(())
        }

        fn pre_commit(&mut self, epoch: CheckpointId) -> Result<Option<SinkCommit>, SinkError> {
            if let Ok(mut log) = self.0.lock() {
                log.push(Event::PreCommit(epoch));
            }
            Ok(Some(SinkCommit {
                sink: "out".into(),
                epoch,
                pending: format!("pending-{epoch}").into(),
                committed: "out".into(),
                append: None,
                transaction: None,
                instance: 1,
            }))
        }
    }

    fn data(sender: usize, n: i64) -> SinkMsg {
        (
            sender,
            SinkItem::Data(vec![Value::Int(sender as i64 * 100 + n)]),
        )
    }

    /// Waits (up to 10 s) until `check` holds for the sink's log.
    fn wait_for(log: &Mutex<Vec<Event>>, what: &str, check: impl Fn(&[Event]) -> bool) {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            if check(&log.lock().expect("log")) {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "timed out waiting for {what}"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    #[test]
    fn results_sent_before_a_late_barrier_are_captured_after_the_sinks_queue_ran_dry() {
        // Sender 0's barrier of checkpoint 1 comes first, with nothing before it; the sink
        // pre-commits with an empty queue. Sender 1 then sends two results before its own
        // barrier: the sink writes them into the next epoch, so the checkpoint must store
        // them as in flight (they are in no committed epoch).
        let dir = tempfile::tempdir().expect("tempdir");
        let (barriers, reports) =
            Barriers::for_test(Arc::new(std::sync::atomic::AtomicU64::new(0)), dir.path());
        let (tx, rx) = bounded::<SinkMsg>(16);
        let (lane, priority) = crossbeam_channel::unbounded();
        let credits = outputs::CreditCounters::new(2);
        let log = Arc::new(Mutex::new(Vec::new()));
        lane.send((0, 1, 0)).expect("barrier 0");
        let ckpt = SinkCheckpointing {
            barriers,
            sink: 0,
            name: "out".into(),
            instance: 0,
            senders: 2,
            epoch: 1,
            priority: Some(UnalignedInput {
                priority,
                credits: credits.clone(),
                aligned_timeout: Duration::ZERO,
            }),
        };
        let sink_log = log.clone();
        let sink = std::thread::spawn(move || {
            run_sink(
                Box::new(Recording(sink_log)),
                rx,
                RunControl::new(),
                Some(ckpt),
                Vec::new(),
            )
        });
        wait_for(&log, "the pre-commit of epoch 1", |l| {
            l.contains(&Event::PreCommit(1))
        });
        tx.send(data(1, 1)).expect("send");
        tx.send(data(1, 2)).expect("send");
        wait_for(&log, "both results written", |l| {
            l.iter().filter(|e| matches!(e, Event::Write(_))).count() == 2
        });
        lane.send((1, 1, 2)).expect("barrier 1");
        tx.send((0, SinkItem::End)).expect("end 0");
        tx.send((1, SinkItem::End)).expect("end 1");
        drop(tx);
        sink.join().expect("sink thread").expect("sink runs");
        let first = reports
            .recv_timeout(Duration::from_secs(1))
            .expect("report 1");
        assert_eq!(first.id, Some(1));
        let Contribution::Sink {
            commit: Some(commit),
            channel,
        } = first.contribution
        else {
            panic!("checkpoint 1: {:?}", first.contribution);
        };
        assert_eq!(commit.epoch, 1);
        let channel = channel.expect("checkpoint 1 stores the results written after its epoch");
        let stored = crate::checkpoint::channel::read_values(
            &std::fs::read(&channel.path).expect("channel file"),
        )
        .expect("values");
        assert_eq!(stored, [101, 102].map(Value::Int).to_vec());
    }

    #[test]
    fn an_unaligned_barrier_overtakes_a_sinks_queue_and_stores_what_it_overtook() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (barriers, reports) =
            Barriers::for_test(Arc::new(std::sync::atomic::AtomicU64::new(0)), dir.path());
        let (tx, rx) = bounded::<SinkMsg>(16);
        let (lane, priority) = crossbeam_channel::unbounded();
        let credits = outputs::CreditCounters::new(2);
        // Queued: three results of sender 0 and two of sender 1 sent before their barriers of
        // checkpoint 1, then one of sender 0 sent after it.
        for m in [
            data(0, 1),
            data(0, 2),
            data(0, 3),
            data(1, 1),
            data(1, 2),
            data(0, 4),
        ] {
            tx.send(m).expect("queue");
        }
        lane.send((0, 1, 3)).expect("barrier 0");
        lane.send((1, 1, 2)).expect("barrier 1");
        tx.send((0, SinkItem::End)).expect("end 0");
        tx.send((1, SinkItem::End)).expect("end 1");
        drop(tx);
        let log = Arc::new(Mutex::new(Vec::new()));
        let ckpt = SinkCheckpointing {
            barriers,
            sink: 1,
            name: "out".into(),
            instance: 1,
            senders: 2,
            epoch: 1,
            priority: Some(UnalignedInput {
                priority,
                credits: credits.clone(),
                aligned_timeout: Duration::ZERO,
            }),
        };
        run_sink(
            Box::new(Recording(log.clone())),
            rx,
            RunControl::new(),
            Some(ckpt),
            vec![Value::from("restored")],
        )
        .expect("sink runs");

        let log = log.lock().expect("log").clone();
        // The restored results first, then the epoch closes before the first queued result
        // is written (at most the one taken off the channel before the barrier was seen).
        assert_eq!(log[0], Event::Write(vec![Value::from("restored")]));
        assert_eq!(log[1], Event::PreCommit(1));
        let written: Vec<Value> = log[2..]
            .iter()
            .filter_map(|e| match e {
                Event::Write(v) => Some(v.clone()),
                Event::PreCommit(_) => None,
            })
            .flatten()
            .collect();
        assert_eq!(
            written,
            [1, 2, 3, 101, 102, 4].map(Value::Int).to_vec(),
            "every queued result is still written, in order: {log:?}"
        );
        assert_eq!(log.last(), Some(&Event::PreCommit(2)), "final epoch");
        // Checkpoint 1's report carries the epoch's commit and the overtaken results; the
        // final one the last epoch.
        let first = reports
            .recv_timeout(Duration::from_secs(1))
            .expect("report 1");
        assert_eq!(first.id, Some(1));
        let Contribution::Sink {
            commit: Some(commit),
            channel: Some(channel),
        } = first.contribution
        else {
            panic!("checkpoint 1: {:?}", first.contribution);
        };
        assert_eq!((commit.epoch, channel.instance), (1, 1));
        assert!(channel.path.starts_with(dir.path()), "{:?}", channel.path);
        let stored = crate::checkpoint::channel::read_values(
            &std::fs::read(&channel.path).expect("channel file"),
        )
        .expect("values");
        assert_eq!(stored, [1, 2, 3, 101, 102].map(Value::Int).to_vec());
        let last = reports
            .recv_timeout(Duration::from_secs(1))
            .expect("final report");
        assert!(matches!(
            last.contribution,
            Contribution::Sink {
                commit: Some(SinkCommit { epoch: 2, .. }),
                channel: None
            }
        ));
        assert_eq!(last.id, None);
        // Every data message handled was credited to its sender.
        let handled: Vec<u64> = credits
            .handled
            .iter()
            .map(|h| h.load(Ordering::Acquire))
            .collect();
        assert_eq!(handled, vec![4, 2]);
    }
}
