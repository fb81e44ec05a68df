//! The Wasm half of the mixed example (examples/mixed): after the Go step has screened a
//! payment (`flags`, `amount_eur`), `risk` rates it, in the host's Wasm runtime.
//!
//! The rule:
//! - `block`: two or more flags, or an amount of [`BLOCK_EUR`] or more (flagged or not);
//! - `review`: exactly one flag;
//! - `low`: no flag.
//!
//! Build: `scripts/build-wasm-examples.sh` (or `cargo build --release --target wasm32-wasip1
//! -p mixed-risk`); test: `cargo test -p mixed-risk`.

use serde::{Deserialize, Serialize};
use serde_json::Number;

use headwater_wasm_guest::{export, Error};

/// A payment of this many euros or more is blocked whatever its flags.
pub const BLOCK_EUR: f64 = 1500.0;

/// A payment as the Go step (`velocity/`) emits it.
#[derive(Serialize, Deserialize, Debug, PartialEq)]
pub struct Screened {
    pub ts: String,
    pub id: String,
    pub account: String,
    /// Kept as the Go step wrote it (`84` stays `84`, not `84.0`).
    pub amount_eur: Number,
    pub recent: u32,
    pub flags: Vec<String>,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Risk {
    Low,
    Review,
    Block,
}

/// The screened payment with its `risk` added last.
#[derive(Serialize, Debug, PartialEq)]
pub struct Rated {
    #[serde(flatten)]
    pub payment: Screened,
    pub risk: Risk,
}

/// The rule (see the crate's documentation): any flag counts, whatever its name.
pub fn level(amount_eur: f64, flags: &[String]) -> Risk {
    if flags.len() >= 2 || amount_eur >= BLOCK_EUR {
        Risk::Block
    } else if flags.len() == 1 {
        Risk::Review
    } else {
        Risk::Low
    }
}

/// Adds `risk`. A record without the Go step's fields fails to decode: it goes to the DLQ.
pub fn risk(payment: Screened) -> Result<Rated, Error> {
    let amount = payment.amount_eur.as_f64().ok_or_else(|| {
        Error::permanent(format!(
            "payment {}: amount_eur is not a number",
            payment.id
        ))
    })?;
    let risk = level(amount, &payment.flags);
    Ok(Rated { payment, risk })
}

export! {
    map risk,
}

#[cfg(test)]
mod tests {
    use super::*;
    use headwater_wasm_guest::testing;
    use serde_json::json;

    fn flags(names: &[&str]) -> Vec<String> {
        names.iter().map(|n| n.to_string()).collect()
    }

    #[test]
    fn no_flag_is_low_one_is_review_two_are_block() {
        assert_eq!(level(24.5, &flags(&[])), Risk::Low);
        assert_eq!(level(1250.0, &flags(&["large"])), Risk::Review);
        assert_eq!(level(27.6, &flags(&["burst"])), Risk::Review);
        assert_eq!(level(84.0, &flags(&["burst", "foreign"])), Risk::Block);
        assert_eq!(
            level(1200.0, &flags(&["large", "burst", "foreign"])),
            Risk::Block
        );
    }

    #[test]
    fn a_very_large_amount_is_blocked_whatever_its_flags() {
        assert_eq!(level(BLOCK_EUR - 0.01, &flags(&["large"])), Risk::Review);
        assert_eq!(level(BLOCK_EUR, &flags(&["large"])), Risk::Block);
        assert_eq!(level(1932.0, &flags(&[])), Risk::Block);
    }

    #[test]
    fn the_module_adds_risk_last_and_keeps_the_other_fields_as_they_are() {
        let out = testing::call(
            headwater_functions(),
            "risk",
            &[
                json!({"ts": "2026-03-02T09:05:20Z", "id": "p09", "account": "acc-1",
                       "amount_eur": 84, "recent": 3, "flags": ["burst", "foreign"]}),
                json!({"ts": "2026-03-02T09:00:05Z", "id": "p01", "account": "acc-1",
                       "amount_eur": 24.5, "recent": 1, "flags": []}),
            ],
        );
        let first = &out[0].as_ref().expect("ok")[0];
        assert_eq!(
            serde_json::to_string(first).expect("json"),
            r#"{"ts":"2026-03-02T09:05:20Z","id":"p09","account":"acc-1","amount_eur":84,"recent":3,"flags":["burst","foreign"],"risk":"block"}"#
        );
        assert_eq!(out[1].as_ref().expect("ok")[0]["risk"], json!("low"));
    }

    #[test]
    fn a_payment_without_an_amount_fails() {
        let out = testing::call(
            headwater_functions(),
            "risk",
            &[json!({"ts": "t", "id": "p99", "account": "a", "recent": 1, "flags": []})],
        );
        assert!(out[0].is_err());
    }
}
