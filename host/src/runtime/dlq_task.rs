//! The dead-letter writer's thread: appends envelopes to the DLQ file, per epoch when
//! checkpoints are on (the DLQ is then a checkpoint participant like a sink).

use std::sync::Arc;

use crossbeam_channel::Receiver;

use crate::checkpoint::coordinator::Barriers;
use crate::checkpoint::{Contribution, Participant, Report};
use crate::dlq::{DeadLetter, DlqWriter, Names};

use super::align::{Aligner, Recv, Step};
use super::outputs::{DlqItem, DlqMsg};
use super::{RunControl, RunError};
use crate::metrics::Metrics;

/// Where dead letters go: straight to the file (no checkpoints), or per epoch, committed
/// with the checkpoints (the DLQ is then a participant like a sink).
pub enum DlqOut {
    Plain(DlqWriter),
    Epochs(crate::dlq::DlqEpochs, Barriers, usize, usize),
}

/// Counts a dead letter in the run's metrics: per step, per cause, and its step's first.
pub fn note_dead_letter(metrics: &Metrics, dl: &DeadLetter) {
    metrics.note_dead_letters(&dl.step, 1);
    metrics.note_failure(&dl.step, &dl.error, dl.detail.as_deref());
    let (error_type, fingerprint) = dl.cause();
    metrics.note_cause(&fingerprint, &dl.step, &error_type, dl.failed_at_ms);
}

pub fn run_dlq(
    out: DlqOut,
    names: Names,
    rx: Receiver<DlqMsg>,
    metrics: Arc<Metrics>,
    control: Arc<RunControl>,
    path: String,
) -> Result<(), RunError> {
    let fail = |e: &dyn std::fmt::Display| RunError::Dlq {
        path: path.clone(),
        message: e.to_string(),
    };
    let note = |dl: &DeadLetter| note_dead_letter(&metrics, dl);
    let (mut epochs, barriers, participant, senders) = match out {
        DlqOut::Plain(mut writer) => {
            for (_, item) in rx {
                if let DlqItem::Letters(batch) = item {
                    for dl in &batch {
                        if let Err(e) = writer.write(dl, &names) {
                            control.cancel();
                            return Err(fail(&e));
                        }
                        note(dl);
                    }
                }
            }
            return writer.flush().map_err(|e| fail(&e));
        }
        DlqOut::Epochs(epochs, barriers, participant, senders) => {
            (epochs, barriers, participant, senders)
        }
    };
    let mut aligner: Aligner<DlqItem> = Aligner::new(senders);
    let report = |id, commit| {
        barriers.report(Report {
            from: Participant::Sink { sink: participant },
            id,
            contribution: Contribution::Sink {
                commit,
                channel: None,
            },
        })
    };
    let mut epoch = 0;
    loop {
        match aligner.next(|| match rx.recv() {
            Ok((from, item)) => Recv::Msg(from, item),
            Err(_) => Recv::Closed,
        }) {
            Step::Deliver(_, DlqItem::Letters(batch)) => {
                for dl in &batch {
                    if let Err(e) = epochs.write(dl, &names) {
                        control.cancel();
                        return Err(fail(&e));
                    }
                    note(dl);
                }
            }
            Step::Deliver(_, DlqItem::End) if aligner.all_ended() => {
                let commit = epochs.pre_commit(epoch).map_err(|e| fail(&e))?;
                report(None, commit);
                return Ok(());
            }
            Step::Deliver(..) => {}
            Step::Aligned(id) => {
                let commit = epochs.pre_commit(id).map_err(|e| fail(&e))?;
                epoch = id + 1;
                report(Some(id), commit);
                aligner.release();
            }
            Step::Closed | Step::Timeout => return Ok(()),
        }
    }
}
