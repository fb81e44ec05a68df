//! How a chain passes replayed dead letters to the step they enter at.

use super::*;
use crate::record::{Origin, Record};
use crate::value::Value;

/// Appends its step index to each record's value (an array).
struct Mark(i64);

impl Operator for Mark {
    fn process(&mut self, mut batch: Batch, _ctx: &mut Context) -> Result<Batch, OpError> {
        for r in &mut batch {
            if let Value::Array(seen) = r.value_mut() {
                seen.push(Value::Int(self.0));
            }
        }
        Ok(batch)
    }
}

fn record(n: u64, entry: u16) -> Record {
    let origin = Origin {
        offset: n,
        entry,
        ..Origin::default()
    };
    Record::new(Value::Array(Vec::new()), 0, origin)
}

fn seen(r: &Record) -> Vec<i64> {
    match r.value() {
        Value::Array(a) => a
            .iter()
            .map(|v| match v {
                Value::Int(i) => *i,
                _ => -1,
            })
            .collect(),
        _ => Vec::new(),
    }
}

#[test]
fn a_replayed_record_skips_the_steps_before_its_own_and_runs_the_rest() {
    // Steps 3, 4 and 5 of a pipeline (a later stage).
    let ops: Vec<Box<dyn Operator>> = vec![Box::new(Mark(3)), Box::new(Mark(4)), Box::new(Mark(5))];
    let mut chain = Chain::of_steps(ops, vec![3, 4, 5]);
    let mut ctx = Context::default();
    // An ordinary record, one entering at step 4, one whose step is in a later stage (7).
    let out = chain
        .process(vec![record(1, 0), record(2, 5), record(3, 8)], &mut ctx)
        .expect("process");
    let by_offset = |n: u64| out.iter().find(|r| r.origin.offset == n).expect("record");
    assert_eq!(seen(by_offset(1)), vec![3, 4, 5]);
    assert_eq!(seen(by_offset(2)), vec![4, 5]);
    assert_eq!(
        by_offset(2).origin.entry,
        0,
        "it is an ordinary record once in"
    );
    assert_eq!(seen(by_offset(3)), Vec::<i64>::new());
    assert_eq!(
        by_offset(3).origin.entry_step(),
        Some(7),
        "still on its way to its step"
    );
    assert_eq!(out.len(), 3);
}

#[test]
fn a_batch_of_replayed_records_alone_enters_in_order() {
    let ops: Vec<Box<dyn Operator>> = vec![Box::new(Mark(0)), Box::new(Mark(1))];
    let mut chain = Chain::new(ops);
    let mut ctx = Context::default();
    let out = chain
        .process((0..5).map(|n| record(n, 2)).collect(), &mut ctx)
        .expect("process");
    assert_eq!(
        out.iter().map(|r| r.origin.offset).collect::<Vec<_>>(),
        vec![0, 1, 2, 3, 4]
    );
    assert!(out.iter().all(|r| seen(r) == vec![1]));
}
