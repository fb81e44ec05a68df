//! The record value model: a small JSON-like tree with cheap short strings. The host's records
//! and the Rust SDK's functions share it (`headwater-sdk` re-exports it), so native UDFs see
//! records without copies.
//!
//! Field names and short strings use [`Str`] (inline up to 24 bytes, no allocation), objects
//! keep insertion order in a vector (records have few fields, so a linear scan beats hashing).

use std::fmt;

use serde::de::{self, MapAccess, SeqAccess, Visitor};
use serde::ser::{SerializeMap, SerializeSeq};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A string that stores up to 24 bytes inline.
pub type Str = compact_str::CompactString;

/// A JSON-like value.
#[derive(Clone, Debug, PartialEq, Default)]
pub enum Value {
    #[default]
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(Str),
    Array(Vec<Value>),
    Object(Object),
}

/// An insertion-ordered map from field name to value.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Object(Vec<(Str, Value)>);

impl Object {
    pub fn new() -> Self {
        Object(Vec::new())
    }

    pub fn with_capacity(n: usize) -> Self {
        Object(Vec::with_capacity(n))
    }

    pub fn get(&self, name: &str) -> Option<&Value> {
        self.0.iter().find(|(k, _)| k == name).map(|(_, v)| v)
    }

    pub fn get_mut(&mut self, name: &str) -> Option<&mut Value> {
        self.0.iter_mut().find(|(k, _)| k == name).map(|(_, v)| v)
    }

    /// Sets `name` to `value`, replacing an existing field in place or appending a new one.
    pub fn insert(&mut self, name: impl Into<Str>, value: Value) {
        let name = name.into();
        match self.get_mut(&name) {
            Some(slot) => *slot = value,
            None => self.0.push((name, value)),
        }
    }

    /// Appends without checking for an existing field; for builders that know names are unique.
    pub fn push_unchecked(&mut self, name: impl Into<Str>, value: Value) {
        self.0.push((name.into(), value));
    }

    pub fn remove(&mut self, name: &str) -> Option<Value> {
        let idx = self.0.iter().position(|(k, _)| k == name)?;
        Some(self.0.remove(idx).1)
    }

    /// Renames a field in place (keeping its position). Returns false if `from` is absent.
    pub fn rename(&mut self, from: &str, to: &str) -> bool {
        if from == to {
            return self.get(from).is_some();
        }
        let Some(idx) = self.0.iter().position(|(k, _)| k == from) else {
            return false;
        };
        self.0.retain(|(k, _)| k != to);
        let idx = if idx < self.0.len() && self.0[idx].0 == from {
            idx
        } else {
            match self.0.iter().position(|(k, _)| k == from) {
                Some(i) => i,
                None => return false,
            }
        };
        self.0[idx].0 = Str::from(to);
        true
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&Str, &Value)> {
        self.0.iter().map(|(k, v)| (k, v))
    }
}

impl FromIterator<(Str, Value)> for Object {
    fn from_iter<T: IntoIterator<Item = (Str, Value)>>(iter: T) -> Self {
        let mut obj = Object::new();
        for (k, v) in iter {
            obj.insert(k, v);
        }
        obj
    }
}

impl Value {
    /// Looks up a dotted path (`a.b.c`) already split into segments.
    pub fn get_path(&self, path: &[Str]) -> Option<&Value> {
        let mut cur = self;
        for seg in path {
            match cur {
                Value::Object(o) => cur = o.get(seg)?,
                Value::Array(items) => cur = items.get(seg.parse::<usize>().ok()?)?,
                _ => return None,
            }
        }
        Some(cur)
    }

    /// Sets a dotted path, creating intermediate objects. Returns false when a non-object
    /// value is in the way.
    pub fn set_path(&mut self, path: &[Str], value: Value) -> bool {
        let Some((last, parents)) = path.split_last() else {
            *self = value;
            return true;
        };
        let mut cur = self;
        for seg in parents {
            let Value::Object(o) = cur else { return false };
            if o.get(seg).is_none() {
                o.insert(seg.clone(), Value::Object(Object::new()));
            }
            match o.get_mut(seg) {
                Some(next) => cur = next,
                None => return false,
            }
        }
        match cur {
            Value::Object(o) => {
                o.insert(last.clone(), value);
                true
            }
            _ => false,
        }
    }

    pub fn as_object(&self) -> Option<&Object> {
        match self {
            Value::Object(o) => Some(o),
            _ => None,
        }
    }

    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Value::Int(i) => Some(*i as f64),
            Value::Float(f) => Some(*f),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Bool(_) => "bool",
            Value::Int(_) => "int",
            Value::Float(_) => "float",
            Value::Str(_) => "string",
            Value::Array(_) => "array",
            Value::Object(_) => "object",
        }
    }

    /// Truthiness used by filters: false, null, 0 and "" are false.
    pub fn is_truthy(&self) -> bool {
        match self {
            Value::Null => false,
            Value::Bool(b) => *b,
            Value::Int(i) => *i != 0,
            Value::Float(f) => *f != 0.0,
            Value::Str(s) => !s.is_empty(),
            Value::Array(a) => !a.is_empty(),
            Value::Object(o) => !o.is_empty(),
        }
    }

    /// Parses one JSON document.
    pub fn from_json(bytes: &[u8]) -> Result<Value, serde_json::Error> {
        serde_json::from_slice(bytes)
    }

    /// Appends the compact JSON encoding to `out`.
    pub fn write_json(&self, out: &mut Vec<u8>) {
        // Serializing our own tree into a Vec cannot fail: every variant maps to JSON, and
        // non-finite floats are written as null by `serialize_f64` below.
        let _ = serde_json::to_writer(out, self);
    }

    pub fn to_json_string(&self) -> String {
        let mut out = Vec::new();
        self.write_json(&mut out);
        String::from_utf8(out).unwrap_or_default()
    }

    /// A stable byte encoding used for keys (key groups, state keys): compact JSON.
    pub fn key_bytes(&self, out: &mut Vec<u8>) {
        self.write_json(out)
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Str(s) => f.write_str(s),
            other => f.write_str(&other.to_json_string()),
        }
    }
}

impl From<serde_json::Value> for Value {
    fn from(v: serde_json::Value) -> Self {
        match v {
            serde_json::Value::Null => Value::Null,
            serde_json::Value::Bool(b) => Value::Bool(b),
            serde_json::Value::Number(n) => match n.as_i64() {
                Some(i) => Value::Int(i),
                None => Value::Float(n.as_f64().unwrap_or(f64::NAN)),
            },
            serde_json::Value::String(s) => Value::Str(s.into()),
            serde_json::Value::Array(a) => Value::Array(a.into_iter().map(Value::from).collect()),
            serde_json::Value::Object(o) => Value::Object(
                o.into_iter()
                    .map(|(k, v)| (Str::from(k), Value::from(v)))
                    .collect(),
            ),
        }
    }
}

impl From<Value> for serde_json::Value {
    fn from(v: Value) -> Self {
        match v {
            Value::Null => serde_json::Value::Null,
            Value::Bool(b) => serde_json::Value::Bool(b),
            Value::Int(i) => serde_json::Value::from(i),
            Value::Float(f) => serde_json::Number::from_f64(f)
                .map(serde_json::Value::Number)
                .unwrap_or(serde_json::Value::Null),
            Value::Str(s) => serde_json::Value::String(s.into()),
            Value::Array(a) => serde_json::Value::Array(a.into_iter().map(Into::into).collect()),
            Value::Object(o) => serde_json::Value::Object(
                o.0.into_iter().map(|(k, v)| (k.into(), v.into())).collect(),
            ),
        }
    }
}

impl From<i64> for Value {
    fn from(v: i64) -> Self {
        Value::Int(v)
    }
}

impl From<f64> for Value {
    fn from(v: f64) -> Self {
        Value::Float(v)
    }
}

impl From<&str> for Value {
    fn from(v: &str) -> Self {
        Value::Str(v.into())
    }
}

impl From<bool> for Value {
    fn from(v: bool) -> Self {
        Value::Bool(v)
    }
}

impl Serialize for Value {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Value::Null => s.serialize_unit(),
            Value::Bool(b) => s.serialize_bool(*b),
            Value::Int(i) => s.serialize_i64(*i),
            Value::Float(f) if f.is_finite() => s.serialize_f64(*f),
            Value::Float(_) => s.serialize_unit(),
            Value::Str(v) => s.serialize_str(v),
            Value::Array(items) => {
                let mut seq = s.serialize_seq(Some(items.len()))?;
                for item in items {
                    seq.serialize_element(item)?;
                }
                seq.end()
            }
            Value::Object(o) => {
                let mut map = s.serialize_map(Some(o.len()))?;
                for (k, v) in &o.0 {
                    map.serialize_entry(k.as_str(), v)?;
                }
                map.end()
            }
        }
    }
}

impl<'de> Deserialize<'de> for Value {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Value, D::Error> {
        d.deserialize_any(ValueVisitor)
    }
}

struct ValueVisitor;

impl<'de> Visitor<'de> for ValueVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Int(v))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value, E> {
        Ok(i64::try_from(v)
            .map(Value::Int)
            .unwrap_or(Value::Float(v as f64)))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Value::Float(v))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::Str(Str::from(v)))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::Str(Str::from(v)))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0));
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut obj = Object::with_capacity(map.size_hint().unwrap_or(8));
        while let Some(key) = map.next_key::<Str>()? {
            let value: Value = map.next_value()?;
            obj.insert(key, value);
        }
        Ok(Value::Object(obj))
    }
}

/// Splits a dotted field path (`a.b.c`) into segments.
pub fn split_path(path: &str) -> Vec<Str> {
    path.split('.').map(Str::from).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_round_trip_keeps_field_order_and_types() {
        let text = r#"{"b":1,"a":[true,null,2.5,"x"],"c":{"d":-3}}"#;
        let v = Value::from_json(text.as_bytes()).expect("valid json");
        assert_eq!(v.to_json_string(), text);
    }

    #[test]
    fn paths_read_and_write_nested_fields() {
        let mut v = Value::from_json(br#"{"a":{"b":1}}"#).expect("valid json");
        assert_eq!(v.get_path(&split_path("a.b")), Some(&Value::Int(1)));
        assert!(v.set_path(&split_path("a.c.d"), Value::from("x")));
        assert_eq!(v.to_json_string(), r#"{"a":{"b":1,"c":{"d":"x"}}}"#);
    }

    #[test]
    fn rename_keeps_position_and_replaces_target() {
        let mut o: Object = [("a", 1i64), ("b", 2), ("c", 3)]
            .into_iter()
            .map(|(k, v)| (Str::from(k), Value::Int(v)))
            .collect();
        assert!(o.rename("c", "a"));
        let names: Vec<_> = o.iter().map(|(k, _)| k.to_string()).collect();
        assert_eq!(names, ["b", "a"]);
        assert_eq!(o.get("a"), Some(&Value::Int(3)));
    }

    #[test]
    fn non_finite_floats_serialize_as_null() {
        assert_eq!(Value::Float(f64::NAN).to_json_string(), "null");
    }
}
