//! Keyed process functions: a key's state and timers, kept by the host.

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::{decode, Error};

/// What a keyed process function gets with each call: the key, the event time, the key's
/// state (of type `S`, stored by the host as JSON), timers and outputs.
///
/// In tests, make one with [`Keyed::new`] or [`Keyed::fired`], call the function, and look at
/// [`Keyed::emitted`], [`Keyed::state`] and [`Keyed::timers`].
pub struct Keyed<S> {
    key: String,
    event_time: i64,
    timer: Option<i64>,
    state: Option<S>,
    op: StateOp,
    timers: Vec<i64>,
    outputs: Vec<Vec<u8>>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum StateOp {
    #[default]
    Keep,
    Set,
    Clear,
}

impl<S: Serialize + DeserializeOwned> Keyed<S> {
    /// A call for a record of `key` at `event_time`, with the key's `state`.
    pub fn new(key: &impl Serialize, event_time: i64, state: Option<S>) -> Self {
        Keyed {
            key: serde_json::to_string(key).unwrap_or_else(|_| "null".into()),
            event_time,
            timer: None,
            state,
            op: StateOp::Keep,
            timers: Vec::new(),
            outputs: Vec::new(),
        }
    }

    /// A call for `key`'s timer set for `at`.
    pub fn fired(key: &impl Serialize, at: i64, state: Option<S>) -> Self {
        let mut k = Keyed::new(key, at, state);
        k.timer = Some(at);
        k
    }

    /// The record's key as JSON text (`"north"`, or `["eu",7]` for a key of several fields).
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The key decoded into `T`.
    pub fn key_as<T: DeserializeOwned>(&self) -> Result<T, Error> {
        decode(self.key.as_bytes(), "key")
    }

    /// The record's event time (ms since the Unix epoch), or the timer's when one fired.
    pub fn event_time(&self) -> i64 {
        self.event_time
    }

    /// The time of the timer that fired, when this call is one (then the record is `None`).
    pub fn timer(&self) -> Option<i64> {
        self.timer
    }

    /// The key's state: what was stored last, or what this call set.
    pub fn state(&self) -> Option<&S> {
        self.state.as_ref()
    }

    /// Stores a new state for the key.
    pub fn set_state(&mut self, state: S) {
        self.state = Some(state);
        self.op = StateOp::Set;
    }

    /// Deletes the key's state.
    pub fn clear_state(&mut self) {
        self.state = None;
        self.op = StateOp::Clear;
    }

    /// Calls the function again for this key when the watermark passes `at` (event time, ms).
    pub fn set_timer(&mut self, at: i64) {
        self.timers.push(at);
    }

    /// Outputs a record (encoded as JSON now).
    pub fn emit<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Error> {
        let bytes = serde_json::to_vec(value)
            .map_err(|e| Error::permanent(format!("the output does not encode as JSON: {e}")))?;
        self.outputs.push(bytes);
        Ok(())
    }

    /// What the call emitted so far, as JSON values.
    pub fn emitted(&self) -> Vec<serde_json::Value> {
        self.outputs
            .iter()
            .filter_map(|b| serde_json::from_slice(b).ok())
            .collect()
    }

    /// The timers the call set.
    pub fn timers(&self) -> &[i64] {
        &self.timers
    }

    /// Whether the call deleted the key's state.
    pub fn state_cleared(&self) -> bool {
        self.op == StateOp::Clear
    }
}

/// One keyed call as it came in the batch.
pub(crate) struct Call<'a> {
    pub key: &'a [u8],
    pub value: Option<&'a [u8]>,
    pub time: i64,
    pub timer: Option<i64>,
    pub state: Option<&'a [u8]>,
    pub result: CallResult,
}

/// What a keyed call returns, encoded for the host.
#[derive(Default)]
pub(crate) struct CallResult {
    outputs: Vec<Vec<u8>>,
    op: StateOp,
    state: Vec<u8>,
    timers: Vec<i64>,
}

impl CallResult {
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.push(0);
        out.extend_from_slice(&(self.outputs.len() as u32).to_le_bytes());
        for o in &self.outputs {
            out.extend_from_slice(&(o.len() as u32).to_le_bytes());
            out.extend_from_slice(o);
        }
        match self.op {
            StateOp::Keep => out.push(0),
            StateOp::Set => {
                out.push(1);
                out.extend_from_slice(&(self.state.len() as u32).to_le_bytes());
                out.extend_from_slice(&self.state);
            }
            StateOp::Clear => out.push(2),
        }
        out.extend_from_slice(&(self.timers.len() as u32).to_le_bytes());
        for t in &self.timers {
            out.extend_from_slice(&t.to_le_bytes());
        }
    }
}

pub(crate) fn run<In, S, F>(call: &mut Call<'_>, f: &F) -> Result<(), Error>
where
    In: DeserializeOwned,
    S: Serialize + DeserializeOwned,
    F: Fn(&mut Keyed<S>, Option<In>) -> Result<(), Error>,
{
    let state = match call.state {
        Some(bytes) => Some(decode::<S>(bytes, "state")?),
        None => None,
    };
    let record = match (call.timer, call.value) {
        (None, Some(bytes)) => Some(decode::<In>(bytes, "record")?),
        _ => None,
    };
    let mut ctx = Keyed {
        key: String::from_utf8_lossy(call.key).into_owned(),
        event_time: call.time,
        timer: call.timer,
        state,
        op: StateOp::Keep,
        timers: Vec::new(),
        outputs: Vec::new(),
    };
    f(&mut ctx, record)?;
    let state = match (ctx.op, &ctx.state) {
        (StateOp::Set, Some(s)) => serde_json::to_vec(s)
            .map_err(|e| Error::permanent(format!("the state does not encode as JSON: {e}")))?,
        _ => Vec::new(),
    };
    call.result = CallResult {
        outputs: ctx.outputs,
        op: ctx.op,
        state,
        timers: ctx.timers,
    };
    Ok(())
}
