//! The Rust Wasm guest of the host's end-to-end tests (`host/tests/wasm_udf.rs`): the same
//! functions as the Go test worker (`host/tests/go-worker`) and the Go Wasm guest
//! (`host/tests/wasm/guest-go`), so every runtime is held to the same results; plus functions
//! that misbehave on purpose, and the two maps `./dev bench wasm` measures.

use std::borrow::Cow;
use std::collections::BTreeMap;

use headwater_wasm_guest::{export, Error, Keyed};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// An input record: `{"ts": ..., "n": ...}`.
#[derive(Deserialize)]
pub struct Rec {
    #[serde(default)]
    pub ts: i64,
    pub n: i64,
}

#[derive(Serialize)]
pub struct Square {
    pub n: i64,
    pub square: i64,
}

/// Fails on every 97th record (n % 97 == 13): that record alone goes to the DLQ.
pub fn enrich(r: Rec) -> Result<Square, Error> {
    if r.n % 97 == 13 {
        return Err(Error::permanent(format!("bad record {}", r.n)));
    }
    Ok(Square {
        n: r.n,
        square: r.n * r.n,
    })
}

pub fn even(r: Rec) -> Result<bool, Error> {
    Ok(r.n % 2 == 0)
}

#[derive(Serialize)]
pub struct Copy {
    pub n: i64,
    pub copy: i64,
}

pub fn twice(r: Rec) -> Result<Vec<Copy>, Error> {
    Ok(vec![Copy { n: r.n, copy: 1 }, Copy { n: r.n, copy: 2 }])
}

/// Indexes past the end of a slice on every 89th record (n % 89 == 7): a panic, which aborts
/// the instance (a trap).
pub fn explode(r: Rec) -> Result<Value, Error> {
    let table = [0i64; 7];
    let v = if r.n % 89 == 7 {
        table[std::hint::black_box(r.n % 89) as usize]
    } else {
        0
    };
    Ok(serde_json::json!({ "n": r.n, "v": v }))
}

/// Never returns for n == 5.
pub fn spin(r: Rec) -> Result<Value, Error> {
    let mut x = r.n;
    while std::hint::black_box(x) == 5 {
        x = std::hint::black_box(5);
    }
    Ok(serde_json::json!({ "n": r.n }))
}

/// Allocates without end for n == 5.
pub fn hog(r: Rec) -> Result<Value, Error> {
    let mut kept: Vec<Vec<u8>> = Vec::new();
    if r.n == 5 {
        loop {
            kept.push(vec![1u8; 1 << 20]);
            std::hint::black_box(&kept);
        }
    }
    Ok(serde_json::json!({ "n": r.n, "kept": kept.len() }))
}

/// Fails transiently on every record (retried, then dead-lettered).
pub fn flaky(_: Rec) -> Result<Value, Error> {
    Err(Error::transient("the dependency is down"))
}

/// What the sandbox lets the module see: a file, the environment, the clock, the random
/// source (through the seed of a hash map's hasher); and a line on standard output.
pub fn sandbox(_: Value) -> Result<Value, Error> {
    use std::hash::BuildHasher;
    let file = match std::fs::read_to_string("/etc/passwd") {
        Ok(_) => "read /etc/passwd".to_string(),
        Err(e) => e.to_string(),
    };
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(-1, |d| d.as_millis() as i64);
    let hash = std::collections::hash_map::RandomState::new().hash_one(1u64);
    println!("sandbox says hello");
    Ok(serde_json::json!({
        "file": file,
        "env": std::env::vars().count(),
        "now_ms": now_ms,
        "random": hash.to_string(),
    }))
}

#[derive(Serialize, Deserialize, Clone, Copy, Default)]
pub struct Bucket {
    pub total: i64,
    pub count: i64,
}

/// Per key, its open 100-ms buckets (bucket end -> total and count of n); each bucket is
/// emitted when the watermark passes its end.
pub fn bucket_totals(ctx: &mut Keyed<BTreeMap<i64, Bucket>>, r: Option<Rec>) -> Result<(), Error> {
    let mut buckets = ctx.state().cloned().unwrap_or_default();
    match (ctx.timer(), r) {
        (Some(at), _) => {
            let done = buckets.remove(&at).ok_or_else(|| {
                Error::permanent(format!(
                    "timer {at} fired for key {} without its bucket",
                    ctx.key()
                ))
            })?;
            let user: Value = ctx.key_as()?;
            ctx.emit(&serde_json::json!({
                "user": user, "bucket_end": at, "total": done.total, "count": done.count,
            }))?;
        }
        (None, Some(r)) => {
            let end = r.ts / 100 * 100 + 99;
            let b = buckets.entry(end).or_default();
            b.total += r.n;
            b.count += 1;
            ctx.set_timer(end);
        }
        (None, None) => return Err(Error::permanent("a call with neither record nor timer")),
    }
    if buckets.is_empty() {
        ctx.clear_state();
    } else {
        ctx.set_state(buckets);
    }
    Ok(())
}

/// The trivial map of the benchmark: the record, unchanged, without decoding it.
pub fn trivial(record: &[u8]) -> Result<Cow<'_, [u8]>, Error> {
    Ok(Cow::Borrowed(record))
}

/// An order, as the benchmark's realistic map reads it.
#[derive(Deserialize)]
pub struct Order {
    pub order_id: i64,
    pub customer: String,
    pub price: f64,
    pub quantity: i64,
    pub currency: String,
    pub ts: i64,
}

#[derive(Serialize)]
pub struct Priced {
    pub order_id: i64,
    pub customer: String,
    pub revenue_usd: f64,
    pub minute: i64,
    pub large: bool,
}

/// The realistic map of the benchmark: parse, convert the currency, bucket, serialize.
pub fn realistic(o: Order) -> Result<Priced, Error> {
    let rate = match o.currency.as_str() {
        "USD" => 1.0,
        "EUR" => 1.08,
        "GBP" => 1.27,
        other => return Err(Error::permanent(format!("unknown currency {other}"))),
    };
    let revenue_usd = (o.price * o.quantity as f64 * rate * 100.0).round() / 100.0;
    Ok(Priced {
        order_id: o.order_id,
        customer: o.customer,
        revenue_usd,
        minute: o.ts / 60_000 * 60_000,
        large: revenue_usd >= 100.0,
    })
}

export! {
    map enrich,
    filter even,
    flat_map twice,
    map explode,
    map spin,
    map hog,
    map flaky,
    map sandbox,
    keyed_process bucket_totals,
    map_bytes trivial,
    map realistic,
}

#[cfg(test)]
mod tests {
    use super::*;
    use headwater_wasm_guest::testing;
    use serde_json::json;

    #[test]
    fn the_functions_behave_natively() {
        let out = testing::call(
            headwater_functions(),
            "enrich",
            &[json!({"n": 3}), json!({"n": 13})],
        );
        assert_eq!(out[0], Ok(vec![json!({"n": 3, "square": 9})]));
        assert_eq!(out[1].clone().expect_err("13").message, "bad record 13");
        let priced = realistic(Order {
            order_id: 1,
            customer: "c".into(),
            price: 50.0,
            quantity: 2,
            currency: "EUR".into(),
            ts: 61_000,
        })
        .expect("priced");
        assert_eq!(
            (priced.revenue_usd, priced.minute, priced.large),
            (108.0, 60_000, true)
        );
    }
}
