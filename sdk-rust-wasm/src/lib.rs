//! Write Headwater user-defined functions in Rust and run them in the host's Wasm runtime
//! (`runtime: wasm`), sandboxed, at near-native speed.
//!
//! A function is a plain Rust function; [`export!`] makes a module of them. Build the crate as
//! a `cdylib` for `wasm32-wasip1` and name the `.wasm` in the pipeline. The same functions
//! compile natively too, so they are tested with `cargo test` like any Rust code (call them
//! directly, or through the module's encoding with [`testing`]).
//!
//! ```
//! use headwater_wasm_guest::{export, Error, Keyed};
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Deserialize)]
//! struct Order { price: f64, quantity: u32 }
//!
//! #[derive(Serialize)]
//! struct Priced { revenue: f64 }
//!
//! fn revenue(o: Order) -> Result<Priced, Error> {
//!     if o.price < 0.0 {
//!         return Err(Error::permanent("price must not be negative"));
//!     }
//!     Ok(Priced { revenue: o.price * f64::from(o.quantity) })
//! }
//!
//! fn big(o: Order) -> Result<bool, Error> {
//!     Ok(o.price * f64::from(o.quantity) > 100.0)
//! }
//!
//! // Per key: the number of orders so far, emitted when the key's timer fires.
//! fn count(ctx: &mut Keyed<u64>, order: Option<Order>) -> Result<(), Error> {
//!     let n = ctx.state().copied().unwrap_or(0);
//!     match order {
//!         Some(_) => {
//!             ctx.set_state(n + 1);
//!             ctx.set_timer(ctx.event_time() + 60_000);
//!         }
//!         None => {
//!             ctx.emit(&serde_json::json!({ "key": ctx.key_as::<String>()?, "orders": n }))?;
//!             ctx.clear_state();
//!         }
//!     }
//!     Ok(())
//! }
//!
//! export! {
//!     map revenue,
//!     filter big,
//!     keyed_process count as "order_count",
//! }
//!
//! assert_eq!(revenue(Order { price: 2.5, quantity: 4 }).unwrap().revenue, 10.0);
//! assert_eq!(headwater_functions().len(), 3);
//! ```
//!
//! Errors carry a class: [`Error::transient`] failures are retried by the host with backoff,
//! [`Error::permanent`] ones send the record to the dead-letter queue. A panic aborts the
//! instance (Wasm has no unwinding): the host finds the record that panicked, dead-letters it
//! with the panic message, and runs the rest in a fresh instance.
//!
//! The ABI between host and module is in `docs/wasm-abi.md` of the Headwater repository.

mod abi;
#[doc(hidden)]
pub mod ffi;
mod keyed;
pub mod testing;

use std::borrow::Cow;

use serde::de::DeserializeOwned;
use serde::Serialize;

pub use abi::{call_batch, describe};
pub use keyed::Keyed;
pub use serde_json::{self, json, Value};

/// The version of the host–module ABI this crate implements.
pub const ABI_VERSION: i32 = 1;

/// Whether retrying the same record can help.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorClass {
    /// May succeed on retry (a timeout, an unavailable dependency): retried with backoff.
    Transient,
    /// Will fail again: the record goes to the dead-letter queue.
    Permanent,
}

/// A failure of one record; never fails the batch it came in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Error {
    pub class: ErrorClass,
    pub message: String,
    /// Extra detail kept in the dead-letter envelope.
    pub detail: Option<String>,
}

impl Error {
    pub fn permanent(message: impl Into<String>) -> Self {
        Error {
            class: ErrorClass::Permanent,
            message: message.into(),
            detail: None,
        }
    }

    pub fn transient(message: impl Into<String>) -> Self {
        Error {
            class: ErrorClass::Transient,
            message: message.into(),
            detail: None,
        }
    }

    pub fn with_detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

impl From<serde_json::Error> for Error {
    fn from(e: serde_json::Error) -> Self {
        Error::permanent(e.to_string())
    }
}

impl From<String> for Error {
    fn from(message: String) -> Self {
        Error::permanent(message)
    }
}

impl From<&str> for Error {
    fn from(message: &str) -> Self {
        Error::permanent(message)
    }
}

/// What a function is, as the pipeline's `kind:` spells it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Map,
    Filter,
    FlatMap,
    KeyedProcess,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Map => "map",
            Kind::Filter => "filter",
            Kind::FlatMap => "flat_map",
            Kind::KeyedProcess => "keyed_process",
        }
    }
}

/// Where a function's outputs for one record go.
pub struct Outputs<'a> {
    buf: &'a mut Vec<u8>,
    input: &'a [u8],
    count: u32,
}

impl<'a> Outputs<'a> {
    fn new(buf: &'a mut Vec<u8>, input: &'a [u8]) -> Self {
        Outputs {
            buf,
            input,
            count: 0,
        }
    }

    /// Adds an output encoded as JSON.
    pub fn push_json<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Error> {
        let at = self.buf.len();
        self.buf.extend_from_slice(&[0; 4]);
        if let Err(e) = serde_json::to_writer(&mut *self.buf, value) {
            self.buf.truncate(at);
            return Err(Error::permanent(format!(
                "the result does not encode as JSON: {e}"
            )));
        }
        let len = (self.buf.len() - at - 4) as u32;
        self.buf[at..at + 4].copy_from_slice(&len.to_le_bytes());
        self.count += 1;
        Ok(())
    }

    /// Adds an output that is already JSON text.
    pub fn push_bytes(&mut self, json: &[u8]) {
        if std::ptr::eq(json, self.input) {
            return self.push_unchanged();
        }
        self.buf
            .extend_from_slice(&(json.len() as u32).to_le_bytes());
        self.buf.extend_from_slice(json);
        self.count += 1;
    }

    /// Adds the input record itself, unchanged (the host reuses it: nothing is copied).
    pub fn push_unchanged(&mut self) {
        self.buf.extend_from_slice(&abi::UNCHANGED.to_le_bytes());
        self.count += 1;
    }
}

type RecordFn = dyn Fn(&[u8], &mut Outputs<'_>) -> Result<(), Error> + Send + Sync;
type KeyedFn = dyn Fn(&mut keyed::Call<'_>) -> Result<(), Error> + Send + Sync;

pub(crate) enum Handler {
    Records(Box<RecordFn>),
    Keyed(Box<KeyedFn>),
}

/// A function ready to export: made by [`export!`] with the constructors below.
pub struct Function {
    name: String,
    kind: Kind,
    handler: Handler,
}

fn decode<In: DeserializeOwned>(bytes: &[u8], what: &str) -> Result<In, Error> {
    serde_json::from_slice(bytes).map_err(|e| {
        Error::permanent(format!(
            "the {what} does not decode as {}: {e}",
            std::any::type_name::<In>()
        ))
    })
}

impl Function {
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn kind(&self) -> Kind {
        self.kind
    }

    fn records(
        name: &str,
        kind: Kind,
        f: impl Fn(&[u8], &mut Outputs<'_>) -> Result<(), Error> + Send + Sync + 'static,
    ) -> Function {
        Function {
            name: name.to_string(),
            kind,
            handler: Handler::Records(Box::new(f)),
        }
    }

    /// A map function: one output per record, decoded into `In` and encoded from `Out` as
    /// JSON (use [`Value`] for records of any shape).
    pub fn map<In, Out, F>(name: &str, f: F) -> Function
    where
        In: DeserializeOwned,
        Out: Serialize,
        F: Fn(In) -> Result<Out, Error> + Send + Sync + 'static,
    {
        Self::records(name, Kind::Map, move |bytes, out| {
            out.push_json(&f(decode(bytes, "record")?)?)
        })
    }

    /// A filter: `true` keeps the record (the input itself, byte for byte).
    pub fn filter<In, F>(name: &str, f: F) -> Function
    where
        In: DeserializeOwned,
        F: Fn(In) -> Result<bool, Error> + Send + Sync + 'static,
    {
        Self::records(name, Kind::Filter, move |bytes, out| {
            if f(decode(bytes, "record")?)? {
                out.push_unchanged();
            }
            Ok(())
        })
    }

    /// A flat map: any number of outputs per record.
    pub fn flat_map<In, Out, F>(name: &str, f: F) -> Function
    where
        In: DeserializeOwned,
        Out: Serialize,
        F: Fn(In) -> Result<Vec<Out>, Error> + Send + Sync + 'static,
    {
        Self::records(name, Kind::FlatMap, move |bytes, out| {
            for o in f(decode(bytes, "record")?)? {
                out.push_json(&o)?;
            }
            Ok(())
        })
    }

    /// A map on the record's JSON text, for functions that skip decoding: return the input
    /// slice itself (`Cow::Borrowed(record)`) to pass the record on unchanged at no cost.
    pub fn map_bytes<F>(name: &str, f: F) -> Function
    where
        F: for<'r> Fn(&'r [u8]) -> Result<Cow<'r, [u8]>, Error> + Send + Sync + 'static,
    {
        Self::records(name, Kind::Map, move |bytes, out| {
            out.push_bytes(&f(bytes)?);
            Ok(())
        })
    }

    /// A filter on the record's JSON text.
    pub fn filter_bytes<F>(name: &str, f: F) -> Function
    where
        F: Fn(&[u8]) -> Result<bool, Error> + Send + Sync + 'static,
    {
        Self::records(name, Kind::Filter, move |bytes, out| {
            if f(bytes)? {
                out.push_unchanged();
            }
            Ok(())
        })
    }

    /// A flat map on the record's JSON text: each output must be JSON text.
    pub fn flat_map_bytes<F>(name: &str, f: F) -> Function
    where
        F: Fn(&[u8]) -> Result<Vec<Vec<u8>>, Error> + Send + Sync + 'static,
    {
        Self::records(name, Kind::FlatMap, move |bytes, out| {
            for o in f(bytes)? {
                out.push_bytes(&o);
            }
            Ok(())
        })
    }

    /// A keyed process function (after a `key_by`): called with each record of a key and its
    /// state `S` (kept by the host, as JSON), or with `None` when a timer it set fires. See
    /// [`Keyed`]. A call that fails changes nothing: its outputs, state and timers are dropped.
    pub fn keyed_process<In, S, F>(name: &str, f: F) -> Function
    where
        In: DeserializeOwned,
        S: Serialize + DeserializeOwned,
        F: Fn(&mut Keyed<S>, Option<In>) -> Result<(), Error> + Send + Sync + 'static,
    {
        Function {
            name: name.to_string(),
            kind: Kind::KeyedProcess,
            handler: Handler::Keyed(Box::new(move |call| keyed::run(call, &f))),
        }
    }
}

/// Exports functions from a module: `KIND FUNCTION` (or `KIND FUNCTION as "name"`), separated
/// by commas, where KIND is `map`, `filter`, `flat_map`, `keyed_process`, `map_bytes`,
/// `filter_bytes` or `flat_map_bytes`. Use it once per crate, at its root.
///
/// It defines `headwater_functions()` (the module's functions, for [`testing`]) and, when
/// compiled for Wasm, the module's exports (`hw_abi_version`, `hw_alloc`, `hw_free`,
/// `hw_describe`, `hw_call`).
#[macro_export]
macro_rules! export {
    ($($kind:ident $f:ident $(as $name:literal)?),+ $(,)?) => {
        /// The functions this module exports, in order.
        pub fn headwater_functions() -> &'static [$crate::Function] {
            static FUNCTIONS: ::std::sync::OnceLock<::std::vec::Vec<$crate::Function>> =
                ::std::sync::OnceLock::new();
            FUNCTIONS.get_or_init(|| {
                ::std::vec![$($crate::Function::$kind($crate::__name!($f $(, $name)?), $f)),+]
            })
        }

        #[cfg(target_arch = "wasm32")]
        #[allow(unsafe_code)]
        mod __headwater_exports {
            #[unsafe(no_mangle)]
            pub extern "C" fn hw_abi_version() -> i32 {
                $crate::ABI_VERSION
            }

            #[unsafe(no_mangle)]
            pub extern "C" fn hw_alloc(len: i32) -> i32 {
                $crate::ffi::alloc(len)
            }

            #[unsafe(no_mangle)]
            pub extern "C" fn hw_free(ptr: i32, len: i32) {
                // SAFETY: the host frees only blocks it got from hw_alloc, hw_describe or
                // hw_call, with their lengths (docs/wasm-abi.md).
                unsafe { $crate::ffi::free(ptr, len) }
            }

            #[unsafe(no_mangle)]
            pub extern "C" fn hw_describe() -> i64 {
                $crate::ffi::describe(super::headwater_functions())
            }

            #[unsafe(no_mangle)]
            pub extern "C" fn hw_call(function: i32, ptr: i32, len: i32) -> i64 {
                // SAFETY: the host passes a block it got from hw_alloc(len) and filled, and
                // gives it up (docs/wasm-abi.md).
                unsafe { $crate::ffi::call(super::headwater_functions(), function, ptr, len) }
            }
        }
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __name {
    ($f:ident) => {
        stringify!($f)
    };
    ($f:ident, $name:literal) => {
        $name
    };
}
