//! A fired (or late-updated) window's result record.

use crate::record::{Origin, Record};
use crate::time::TimeWindow;
use crate::udf::{AggregateInput, AggregateOp, AggregateOutput};
use crate::value::{Object, Value};

use super::WindowOp;
use crate::ops::aggregate::Acc;
use crate::ops::{Context, OpError};

impl WindowOp {
    /// The window's result record; user-defined aggregates are computed by their function
    /// (`null` and a dead letter if it fails).
    pub(super) fn output(
        &self,
        key: &Value,
        w: &TimeWindow,
        accs: &[Acc],
        ctx: &mut Context,
    ) -> Result<Record, OpError> {
        let mut record = self.output_builtin(key, w, accs);
        for (i, (spec, acc)) in self.cfg.aggregates.iter().zip(accs).enumerate() {
            let (Some(udf), Acc::Udf { acc, .. }) =
                (self.cfg.udfs.get(i).and_then(Option::as_ref), acc)
            else {
                continue;
            };
            let input = AggregateInput {
                accumulators: if acc.is_empty() {
                    vec![]
                } else {
                    vec![acc.clone()]
                },
                values: Vec::new(),
            };
            // An empty accumulator (every ADD for the window failed) still has a result:
            // create()'s.
            let input = if input.accumulators.is_empty() {
                let created = udf
                    .runtime
                    .invoke_aggregate(&udf.function, AggregateOp::Create, vec![input])
                    .map_err(|e| self.udf_error(e))?;
                match created.into_iter().next() {
                    Some(Ok(AggregateOutput::Accumulator(b))) => AggregateInput {
                        accumulators: vec![b],
                        values: Vec::new(),
                    },
                    Some(Err(err)) => {
                        self.dead_aggregate(ctx, record.value().clone(), &udf.function, &err);
                        continue;
                    }
                    _ => continue,
                }
            } else {
                input
            };
            let outcome = udf
                .runtime
                .invoke_aggregate(&udf.function, AggregateOp::Result, vec![input])
                .map_err(|e| self.udf_error(e))?;
            let value = match outcome.into_iter().next() {
                Some(Ok(AggregateOutput::Result(v))) => v,
                Some(Err(err)) => {
                    self.dead_aggregate(ctx, record.value().clone(), &udf.function, &err);
                    Value::Null
                }
                _ => Value::Null,
            };
            if let Value::Object(obj) = record.value_mut() {
                obj.insert(spec.name.as_str(), value);
            }
        }
        Ok(record)
    }

    pub(super) fn output_builtin(&self, key: &Value, w: &TimeWindow, accs: &[Acc]) -> Record {
        let mut obj = Object::with_capacity(self.cfg.key_names.len() + 2 + accs.len());
        match (self.cfg.key_names.as_slice(), key) {
            ([one], k) => obj.push_unchecked(one.clone(), k.clone()),
            (names, Value::Array(parts)) => {
                for (name, part) in names.iter().zip(parts) {
                    obj.insert(name.clone(), part.clone());
                }
            }
            _ => {}
        }
        obj.insert("window_start", Value::Int(w.start));
        obj.insert("window_end", Value::Int(w.end));
        for (spec, acc) in self.cfg.aggregates.iter().zip(accs) {
            obj.insert(spec.name.as_str(), acc.result());
        }
        Record::new(Value::Object(obj), w.max_timestamp(), Origin::default())
            .with_key(Some(key.clone()))
    }
}
