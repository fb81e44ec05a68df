//! Filter, map (compute / rename / select / drop) and key_by.

use crate::config::spec::MapSpec;
use crate::dlq::ErrorClass;
use crate::expr::Expr;
use crate::record::Batch;
use crate::value::{Object, Str, Value};

use super::{dead_letter_for, Context, OpError, Operator};

/// Keeps records for which an expression is truthy; a record the expression cannot be
/// evaluated on goes to the DLQ.
pub struct Filter {
    step: String,
    expr: Expr,
}

impl Filter {
    pub fn new(step: String, expr: Expr) -> Self {
        Filter { step, expr }
    }
}

impl Operator for Filter {
    fn process(&mut self, mut batch: Batch, ctx: &mut Context) -> Result<Batch, OpError> {
        batch.retain(|r| match self.expr.matches(r.value()) {
            Ok(true) => true,
            Ok(false) => {
                ctx.filtered += 1;
                false
            }
            Err(e) => {
                ctx.dead.push(dead_letter_for(
                    r,
                    &self.step,
                    ErrorClass::Permanent,
                    e.to_string(),
                ));
                false
            }
        });
        Ok(batch)
    }
}

/// Edits fields: compute (in order, each seeing the earlier ones), then rename, select, drop.
pub struct Map {
    step: String,
    compute: Vec<(Vec<Str>, Expr)>,
    spec: MapSpec,
}

impl Map {
    pub fn new(step: String, spec: MapSpec, compute: Vec<(Vec<Str>, Expr)>) -> Self {
        Map {
            step,
            compute,
            spec,
        }
    }

    fn apply(&self, value: &mut Value) -> Result<(), String> {
        for (path, expr) in &self.compute {
            let v = expr.eval(value).map_err(|e| e.to_string())?;
            if !value.set_path(path, v) {
                return Err(format!(
                    "cannot set `{}`: a field on its path is not an object",
                    path.join(".")
                ));
            }
        }
        let Value::Object(obj) = value else {
            return Err("record is not an object".to_string());
        };
        for (from, to) in &self.spec.rename {
            obj.rename(from, to);
        }
        if let Some(select) = &self.spec.select {
            let mut kept = Object::with_capacity(select.len());
            for name in select {
                if let Some(v) = obj.remove(name) {
                    kept.push_unchecked(name.as_str(), v);
                }
            }
            *obj = kept;
        }
        for name in &self.spec.drop {
            obj.remove(name);
        }
        Ok(())
    }
}

impl Operator for Map {
    fn process(&mut self, mut batch: Batch, ctx: &mut Context) -> Result<Batch, OpError> {
        batch.retain_mut(|r| match self.apply(r.value_mut()) {
            Ok(()) => true,
            Err(e) => {
                ctx.dead
                    .push(dead_letter_for(r, &self.step, ErrorClass::Permanent, e));
                false
            }
        });
        Ok(batch)
    }
}

/// Sets each record's key from one or more fields (an array of values for several). A
/// missing field keys as `null`.
#[derive(Clone, Debug)]
pub struct KeyBy {
    fields: Vec<Vec<Str>>,
}

impl KeyBy {
    pub fn new(fields: Vec<Vec<Str>>) -> Self {
        KeyBy { fields }
    }

    pub fn key_of(&self, value: &Value) -> Value {
        match self.fields.as_slice() {
            [one] => value.get_path(one).cloned().unwrap_or(Value::Null),
            many => Value::Array(
                many.iter()
                    .map(|p| value.get_path(p).cloned().unwrap_or(Value::Null))
                    .collect(),
            ),
        }
    }
}

impl Operator for KeyBy {
    fn process(&mut self, mut batch: Batch, _ctx: &mut Context) -> Result<Batch, OpError> {
        for r in &mut batch {
            r.key = Some(self.key_of(r.value()));
        }
        Ok(batch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{Origin, Record};
    use crate::value::split_path;

    fn rec(json: &str) -> Record {
        Record::new(
            Value::from_json(json.as_bytes()).expect("json"),
            0,
            Origin::default(),
        )
    }

    #[test]
    fn filter_keeps_truthy_and_dead_letters_errors() {
        let mut f = Filter::new(
            "steps[0] filter".into(),
            Expr::parse("a > 1").expect("expr"),
        );
        let mut ctx = Context::default();
        let out = f
            .process(
                vec![rec(r#"{"a":2}"#), rec(r#"{"a":0}"#), rec(r#"{"a":"x"}"#)],
                &mut ctx,
            )
            .expect("process");
        assert_eq!(out.len(), 1);
        assert_eq!(ctx.dead.len(), 1);
        assert_eq!(ctx.dead[0].step, "steps[0] filter");
    }

    #[test]
    fn map_computes_then_renames_selects_and_drops() {
        let spec = MapSpec {
            compute: vec![],
            rename: vec![("a".into(), "alpha".into())],
            select: Some(vec!["total".into(), "alpha".into(), "b".into()]),
            drop: vec!["b".into()],
        };
        let compute = vec![(split_path("total"), Expr::parse("a * 2").expect("expr"))];
        let mut m = Map::new("steps[0] map".into(), spec, compute);
        let mut ctx = Context::default();
        let out = m
            .process(vec![rec(r#"{"a":2,"b":1,"c":3}"#)], &mut ctx)
            .expect("process");
        assert_eq!(out[0].value().to_json_string(), r#"{"total":4,"alpha":2}"#);
    }

    #[test]
    fn key_by_sets_single_and_composite_keys() {
        let one = KeyBy::new(vec![split_path("u.id")]);
        assert_eq!(one.key_of(rec(r#"{"u":{"id":7}}"#).value()), Value::Int(7));
        let two = KeyBy::new(vec![split_path("a"), split_path("b")]);
        assert_eq!(
            two.key_of(rec(r#"{"a":1}"#).value()).to_json_string(),
            "[1,null]"
        );
    }
}
