//! The native runtime: Rust functions compiled into the host through `headwater-sdk`.
//!
//! Built-in functions:
//! - `identity` (map): returns the record unchanged.
//! - `geohash` (map): adds `geohash` (precision 7) computed from numeric `lat` and `lon`.
//! - `split_words` (flat_map): one record `{word, ...}` per whitespace-separated word of `text`.
//! - `require_fields` (filter): keeps records that have non-null `id`; permanent error otherwise.

use std::collections::BTreeMap;
use std::sync::Arc;

use headwater_sdk::{Function, FunctionError, FunctionKind};

use super::registry::{RuntimePlugin, StartContext};
use super::{FunctionInfo, RecordOutcome, RuntimeError, UdfRuntime};
use crate::config::spec::{UdfRuntimeSpec, UdfSpec};
use crate::config::OptionsReader;
use crate::value::{Object, Value};

/// `runtime: native`: no options; every native UDF of a pipeline shares one runtime.
pub struct Native;

/// The options of a native UDF: none.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NativeSpec;

impl RuntimePlugin for Native {
    fn name(&self) -> &'static str {
        "native"
    }

    fn summary(&self) -> &'static str {
        "Rust functions built into the host with the `headwater-sdk` crate (no options)"
    }

    fn read_options(&self, _: &mut OptionsReader<'_, '_>) -> Option<UdfRuntimeSpec> {
        Some(UdfRuntimeSpec::new(self.name(), NativeSpec))
    }

    fn start(
        &self,
        _udf: &UdfSpec,
        ctx: &mut StartContext,
    ) -> Result<Arc<dyn UdfRuntime>, RuntimeError> {
        Ok(ctx.shared(self.name(), || Arc::new(NativeRuntime::with_builtins())))
    }
}

/// Functions registered by name.
#[derive(Clone, Default)]
pub struct NativeRuntime {
    functions: BTreeMap<String, Arc<dyn Function>>,
}

impl NativeRuntime {
    /// A runtime with the built-in functions.
    pub fn with_builtins() -> Self {
        let mut rt = NativeRuntime::default();
        rt.register("identity", Identity);
        rt.register("geohash", Geohash);
        rt.register("split_words", SplitWords);
        rt.register("require_fields", RequireId);
        rt
    }

    pub fn register(&mut self, name: &str, f: impl Function + 'static) {
        self.functions.insert(name.to_string(), Arc::new(f));
    }
}

impl UdfRuntime for NativeRuntime {
    fn name(&self) -> &str {
        "native"
    }

    fn functions(&self) -> Vec<FunctionInfo> {
        self.functions
            .iter()
            .map(|(name, f)| FunctionInfo {
                name: name.clone(),
                kind: f.kind(),
            })
            .collect()
    }

    fn invoke(
        &self,
        function: &str,
        inputs: Vec<Value>,
    ) -> Result<Vec<RecordOutcome>, RuntimeError> {
        let f = self
            .functions
            .get(function)
            .ok_or_else(|| RuntimeError::UnknownFunction {
                runtime: "native".into(),
                name: function.into(),
                available: self
                    .functions
                    .keys()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", "),
            })?;
        Ok(inputs.into_iter().map(|v| f.call(v)).collect())
    }
}

struct Identity;

impl Function for Identity {
    fn kind(&self) -> FunctionKind {
        FunctionKind::Map
    }
    fn call(&self, record: Value) -> Result<Vec<Value>, FunctionError> {
        Ok(vec![record])
    }
}

struct Geohash;

const GEOHASH_PRECISION: usize = 7;

fn number_field(record: &Value, name: &str) -> Result<f64, FunctionError> {
    record
        .as_object()
        .and_then(|o| o.get(name))
        .and_then(Value::as_f64)
        .ok_or_else(|| {
            FunctionError::permanent(format!("field `{name}` is missing or not a number"))
        })
}

impl Function for Geohash {
    fn kind(&self) -> FunctionKind {
        FunctionKind::Map
    }
    fn call(&self, mut record: Value) -> Result<Vec<Value>, FunctionError> {
        let lat = number_field(&record, "lat")?;
        let lon = number_field(&record, "lon")?;
        if !(-90.0..=90.0).contains(&lat) || !(-180.0..=180.0).contains(&lon) {
            return Err(FunctionError::permanent(format!(
                "coordinates out of range: lat {lat}, lon {lon}"
            )));
        }
        let hash = geohash_encode(lat, lon, GEOHASH_PRECISION);
        if let Value::Object(o) = &mut record {
            o.insert("geohash", Value::Str(hash.into()));
        }
        Ok(vec![record])
    }
}

/// Standard base-32 geohash.
pub fn geohash_encode(lat: f64, lon: f64, precision: usize) -> String {
    const ALPHABET: &[u8; 32] = b"0123456789bcdefghjkmnpqrstuvwxyz";
    let (mut lat_lo, mut lat_hi) = (-90.0f64, 90.0f64);
    let (mut lon_lo, mut lon_hi) = (-180.0f64, 180.0f64);
    let mut out = String::with_capacity(precision);
    let mut even = true;
    let mut bits = 0u8;
    let mut ch = 0usize;
    while out.len() < precision {
        if even {
            let mid = (lon_lo + lon_hi) / 2.0;
            if lon >= mid {
                ch = (ch << 1) | 1;
                lon_lo = mid;
            } else {
                ch <<= 1;
                lon_hi = mid;
            }
        } else {
            let mid = (lat_lo + lat_hi) / 2.0;
            if lat >= mid {
                ch = (ch << 1) | 1;
                lat_lo = mid;
            } else {
                ch <<= 1;
                lat_hi = mid;
            }
        }
        even = !even;
        bits += 1;
        if bits == 5 {
            out.push(char::from(ALPHABET[ch]));
            bits = 0;
            ch = 0;
        }
    }
    out
}

struct SplitWords;

impl Function for SplitWords {
    fn kind(&self) -> FunctionKind {
        FunctionKind::FlatMap
    }
    fn call(&self, record: Value) -> Result<Vec<Value>, FunctionError> {
        let obj = record
            .as_object()
            .ok_or_else(|| FunctionError::permanent("record is not an object"))?;
        let text = obj
            .get("text")
            .and_then(Value::as_str)
            .ok_or_else(|| FunctionError::permanent("field `text` is missing or not a string"))?;
        Ok(text
            .split_whitespace()
            .map(|word| {
                let mut out = Object::with_capacity(obj.len());
                for (k, v) in obj.iter().filter(|(k, _)| k.as_str() != "text") {
                    out.push_unchecked(k.clone(), v.clone());
                }
                out.insert("word", Value::from(word));
                Value::Object(out)
            })
            .collect())
    }
}

struct RequireId;

impl Function for RequireId {
    fn kind(&self) -> FunctionKind {
        FunctionKind::Filter
    }
    fn call(&self, record: Value) -> Result<Vec<Value>, FunctionError> {
        match record.as_object().and_then(|o| o.get("id")) {
            Some(Value::Null) | None => Err(FunctionError::permanent("field `id` is required")),
            Some(_) => Ok(vec![record]),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json(s: &str) -> Value {
        Value::from_json(s.as_bytes()).expect("valid json")
    }

    #[test]
    fn geohash_matches_known_values() {
        assert_eq!(geohash_encode(57.64911, 10.40744, 11), "u4pruydqqvj");
        assert_eq!(geohash_encode(37.7749, -122.4194, 5), "9q8yy");
    }

    #[test]
    fn invoke_returns_one_outcome_per_input_and_keeps_failures_per_record() {
        let rt = NativeRuntime::with_builtins();
        let out = rt
            .invoke(
                "geohash",
                vec![
                    json(r#"{"lat":37.7749,"lon":-122.4194}"#),
                    json(r#"{"lat":"x"}"#),
                ],
            )
            .expect("known function");
        assert_eq!(out.len(), 2);
        let first = out[0].as_ref().expect("first succeeds");
        assert_eq!(
            first[0].as_object().and_then(|o| o.get("geohash")),
            Some(&Value::from("9q8yyk8"))
        );
        let err = out[1].as_ref().expect_err("second fails");
        assert_eq!(err.class, headwater_sdk::ErrorClass::Permanent);
    }

    #[test]
    fn split_words_fans_out() {
        let rt = NativeRuntime::with_builtins();
        let out = rt
            .invoke("split_words", vec![json(r#"{"id":1,"text":"a b  c"}"#)])
            .expect("ok");
        let words: Vec<String> = out[0]
            .as_ref()
            .expect("ok")
            .iter()
            .map(|v| v.to_json_string())
            .collect();
        assert_eq!(
            words,
            [
                r#"{"id":1,"word":"a"}"#,
                r#"{"id":1,"word":"b"}"#,
                r#"{"id":1,"word":"c"}"#
            ]
        );
    }

    #[test]
    fn unknown_function_lists_the_available_ones() {
        let rt = NativeRuntime::with_builtins();
        let err = rt.invoke("nope", vec![]).expect_err("unknown");
        assert!(err.to_string().contains("geohash"), "{err}");
        assert!(super::super::check_function(&rt, "geohash", FunctionKind::FlatMap).is_err());
        assert!(super::super::check_function(&rt, "geohash", FunctionKind::Map).is_ok());
    }
}
