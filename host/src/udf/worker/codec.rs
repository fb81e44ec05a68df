//! Host records to protocol messages and back: plain records, keyed calls (state, timers),
//! window-aggregate calls, and per-record results with their error class.

use crate::record::Record;
use crate::udf::proto;
use crate::udf::{
    outputs_from_json, AggregateInput, AggregateOutcome, AggregateOutput, KeyedInput, KeyedOutcome,
    KeyedResult, RecordOutcome, StateUpdate,
};
use crate::value::Value;
use headwater_sdk::{ErrorClass, FunctionError};

pub(super) fn outcome(result: proto::RecordResult) -> RecordOutcome {
    if let Some(err) = result.error {
        let class = match proto::ErrorClass::try_from(err.class) {
            Ok(proto::ErrorClass::Transient) => ErrorClass::Transient,
            _ => ErrorClass::Permanent,
        };
        let mut e = FunctionError::permanent(err.message);
        e.class = class;
        if !err.traceback.is_empty() {
            e.detail = Some(err.traceback);
        }
        return Err(e);
    }
    outputs_from_json(&result.outputs)
}

pub(super) fn encode_aggregate(i: &AggregateInput) -> proto::Record {
    proto::Record {
        accumulators: i.accumulators.clone(),
        values: i.values.iter().map(json_bytes).collect(),
        ..Default::default()
    }
}

pub(super) fn accumulator_outcome(result: proto::RecordResult) -> AggregateOutcome {
    let accumulator = result.accumulator.clone();
    outcome(result)?;
    Ok(AggregateOutput::Accumulator(accumulator))
}

pub(super) fn result_outcome(result: proto::RecordResult) -> AggregateOutcome {
    let mut values = outcome(result)?;
    match values.pop() {
        Some(v) if values.is_empty() => Ok(AggregateOutput::Result(v)),
        _ => Err(FunctionError::permanent(
            "a window aggregate's result must be exactly one value",
        )),
    }
}

pub(super) fn encode_value(v: &Value) -> proto::Record {
    proto::Record {
        value: json_bytes(v),
        ..Default::default()
    }
}

/// A record's value for a call: its source text when it has one, else its value encoded.
pub(super) fn encode_record(r: &Record) -> proto::Record {
    proto::Record {
        value: match r.source_text() {
            Some(text) => text.to_vec(),
            None => json_bytes(r.value()),
        },
        ..Default::default()
    }
}

pub(super) fn encode_keyed(i: &KeyedInput) -> proto::Record {
    proto::Record {
        value: i.value.as_ref().map(json_bytes).unwrap_or_default(),
        key: json_bytes(&i.key),
        event_time: i.time,
        state: i.state.clone(),
        timer: i.timer,
        ..Default::default()
    }
}

pub(super) fn json_bytes(v: &Value) -> Vec<u8> {
    let mut out = Vec::with_capacity(128);
    v.write_json(&mut out);
    out
}

pub(super) fn keyed_outcome(result: proto::RecordResult) -> KeyedOutcome {
    let state = if result.clear_state {
        StateUpdate::Clear
    } else {
        match &result.new_state {
            Some(bytes) => StateUpdate::Set(bytes.clone()),
            None => StateUpdate::Keep,
        }
    };
    let timers = result.timers.clone();
    let outputs = outcome(result)?;
    Ok(KeyedResult {
        outputs,
        state,
        timers,
    })
}
