//! The batch and result encodings (docs/wasm-abi.md), guest side: safe code on byte slices,
//! the same natively and in Wasm.

use crate::keyed::Call;
use crate::{Error, ErrorClass, Function, Handler, Outputs};

/// An output length meaning "the input record, unchanged".
pub(crate) const UNCHANGED: u32 = u32::MAX;

pub(crate) const KEYED_HAS_VALUE: u8 = 1;
pub(crate) const KEYED_HAS_STATE: u8 = 2;
pub(crate) const KEYED_TIMER: u8 = 4;

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let s = self.bytes.get(self.at..self.at.checked_add(n)?)?;
        self.at += n;
        Some(s)
    }

    fn u32(&mut self) -> Option<u32> {
        let b = self.take(4)?;
        Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn i64(&mut self) -> Option<i64> {
        let mut a = [0u8; 8];
        a.copy_from_slice(self.take(8)?);
        Some(i64::from_le_bytes(a))
    }

    fn bytes(&mut self) -> Option<&'a [u8]> {
        let n = self.u32()? as usize;
        self.take(n)
    }
}

fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn put_text(out: &mut Vec<u8>, s: &str) {
    put_u32(out, s.len() as u32);
    out.extend_from_slice(s.as_bytes());
}

/// Replaces what a failed record wrote after `start` with its error.
fn put_error(out: &mut Vec<u8>, start: usize, e: &Error) {
    out.truncate(start);
    out.push(match e.class {
        ErrorClass::Transient => 1,
        ErrorClass::Permanent => 2,
    });
    put_text(out, &e.message);
    put_text(out, e.detail.as_deref().unwrap_or(""));
}

/// The module's description (`hw_describe`): its ABI version and functions, as JSON.
pub fn describe(functions: &[Function]) -> Vec<u8> {
    let fns: Vec<serde_json::Value> = functions
        .iter()
        .map(|f| serde_json::json!({ "name": f.name, "kind": f.kind.as_str() }))
        .collect();
    let doc = serde_json::json!({
        "abi": crate::ABI_VERSION,
        "sdk": concat!("headwater-wasm-guest ", env!("CARGO_PKG_VERSION")),
        "functions": fns,
    });
    doc.to_string().into_bytes()
}

/// Runs function `index` of `functions` on an encoded batch and returns the encoded results
/// (`hw_call` without the memory handling). A batch that does not decode yields `None`.
pub fn call_batch(functions: &[Function], index: usize, batch: &[u8]) -> Option<Vec<u8>> {
    let f = functions.get(index)?;
    let mut r = Reader {
        bytes: batch,
        at: 0,
    };
    let n = r.u32()?;
    let mut out = Vec::with_capacity(batch.len() + 16 * n as usize);
    put_u32(&mut out, n);
    for _ in 0..n {
        let start = out.len();
        match &f.handler {
            Handler::Records(handler) => {
                let record = r.bytes()?;
                out.push(0);
                let count_at = out.len();
                put_u32(&mut out, 0);
                let mut outputs = Outputs::new(&mut out, record);
                match handler(record, &mut outputs) {
                    Ok(()) => {
                        let count = outputs.count;
                        out[count_at..count_at + 4].copy_from_slice(&count.to_le_bytes());
                    }
                    Err(e) => put_error(&mut out, start, &e),
                }
            }
            Handler::Keyed(handler) => {
                let flags = *r.take(1)?.first()?;
                let time = r.i64()?;
                let timer = r.i64()?;
                let key = r.bytes()?;
                let value = r.bytes()?;
                let state = r.bytes()?;
                let mut call = Call {
                    key,
                    value: (flags & KEYED_HAS_VALUE != 0).then_some(value),
                    time,
                    timer: (flags & KEYED_TIMER != 0).then_some(timer),
                    state: (flags & KEYED_HAS_STATE != 0).then_some(state),
                    result: crate::keyed::CallResult::default(),
                };
                match handler(&mut call) {
                    Ok(()) => call.result.encode(&mut out),
                    Err(e) => put_error(&mut out, start, &e),
                }
            }
        }
    }
    (r.at == batch.len()).then_some(out)
}
