//! Orders in, enriched orders out, compiled to WebAssembly and run by Headwater's Wasm runtime
//! (docs/wasm.md walks through it).
//!
//! Build: `cargo build --release --target wasm32-wasip1 -p rust-enrich` (or
//! `scripts/build-wasm-examples.sh`); test: `cargo test -p rust-enrich`.

use serde::{Deserialize, Serialize};

use headwater_wasm_guest::{export, Error, Keyed};

#[derive(Deserialize)]
pub struct Order {
    pub order_id: i64,
    pub customer: String,
    pub price: f64,
    pub quantity: i64,
    pub currency: String,
    pub ts: i64,
    #[serde(default)]
    pub items: Vec<String>,
}

#[derive(Serialize, Deserialize, Debug, PartialEq)]
pub struct Enriched {
    pub order_id: i64,
    pub customer: String,
    pub revenue_usd: f64,
    pub ts: i64,
    pub items: Vec<String>,
}

/// USD per unit of each currency the shop takes.
fn usd_rate(currency: &str) -> Option<f64> {
    match currency {
        "USD" => Some(1.0),
        "EUR" => Some(1.08),
        "GBP" => Some(1.27),
        _ => None,
    }
}

/// Revenue in US dollars. An unknown currency or a negative price goes to the DLQ.
pub fn enrich(o: Order) -> Result<Enriched, Error> {
    if o.price < 0.0 || o.quantity < 0 {
        return Err(Error::permanent(format!(
            "order {}: negative price or quantity",
            o.order_id
        )));
    }
    let rate = usd_rate(&o.currency).ok_or_else(|| {
        Error::permanent(format!(
            "order {}: unknown currency {}",
            o.order_id, o.currency
        ))
    })?;
    Ok(Enriched {
        order_id: o.order_id,
        customer: o.customer,
        revenue_usd: (o.price * o.quantity as f64 * rate * 100.0).round() / 100.0,
        ts: o.ts,
        items: o.items,
    })
}

/// Keeps orders worth 100 USD or more.
pub fn large(o: Enriched) -> Result<bool, Error> {
    Ok(o.revenue_usd >= 100.0)
}

#[derive(Serialize)]
pub struct Item {
    pub order_id: i64,
    pub item: String,
}

/// One record per item of an order.
pub fn items(o: Enriched) -> Result<Vec<Item>, Error> {
    Ok(o.items
        .into_iter()
        .map(|item| Item {
            order_id: o.order_id,
            item,
        })
        .collect())
}

/// A customer's open minute: its revenue and order count.
#[derive(Serialize, Deserialize, Clone, Copy, Default, Debug, PartialEq)]
pub struct Minute {
    pub end: i64,
    pub revenue_usd: f64,
    pub orders: i64,
}

/// Per customer (the key) and minute of event time: revenue and order count, emitted when the
/// watermark passes the end of the minute. The host keeps the state and the timers.
pub fn per_minute(ctx: &mut Keyed<Minute>, order: Option<Enriched>) -> Result<(), Error> {
    let customer: String = ctx.key_as()?;
    if let Some(at) = ctx.timer() {
        // A minute already emitted early (below) leaves its timer behind: nothing to do then.
        if let Some(m) = ctx.state().copied().filter(|m| m.end == at) {
            ctx.emit(&serde_json::json!({
                "customer": customer, "minute_end": at,
                "revenue_usd": (m.revenue_usd * 100.0).round() / 100.0, "orders": m.orders,
            }))?;
            ctx.clear_state();
        }
        return Ok(());
    }
    let Some(order) = order else {
        return Ok(());
    };
    let end = order.ts - order.ts.rem_euclid(60_000) + 59_999;
    let mut m = ctx.state().copied().unwrap_or_default();
    if m.end != end {
        if m.orders > 0 {
            // A record of a later minute came before the earlier minute's timer: emit it now.
            ctx.emit(&serde_json::json!({
                "customer": customer, "minute_end": m.end,
                "revenue_usd": (m.revenue_usd * 100.0).round() / 100.0, "orders": m.orders,
            }))?;
        }
        m = Minute {
            end,
            ..Minute::default()
        };
        ctx.set_timer(end);
    }
    m.revenue_usd += order.revenue_usd;
    m.orders += 1;
    ctx.set_state(m);
    Ok(())
}

export! {
    map enrich,
    filter large,
    flat_map items,
    keyed_process per_minute,
}

#[cfg(test)]
mod tests {
    use super::*;
    use headwater_wasm_guest::testing;
    use serde_json::json;

    fn order(price: f64, currency: &str) -> Order {
        Order {
            order_id: 7,
            customer: "ada".into(),
            price,
            quantity: 2,
            currency: currency.into(),
            ts: 61_000,
            items: vec!["tea".into()],
        }
    }

    #[test]
    fn enrich_converts_to_dollars_and_refuses_bad_orders() {
        assert_eq!(enrich(order(50.0, "EUR")).expect("ok").revenue_usd, 108.0);
        assert!(enrich(order(-1.0, "EUR")).is_err());
        let e = enrich(order(1.0, "XYZ")).expect_err("currency");
        assert!(e.message.contains("unknown currency XYZ"));
    }

    #[test]
    fn the_module_encoding_gives_the_same_results() {
        let out = testing::call(
            headwater_functions(),
            "enrich",
            &[
                json!({"order_id": 1, "customer": "ada", "price": 10.0, "quantity": 3, "currency": "USD", "ts": 5}),
            ],
        );
        assert_eq!(out[0].as_ref().expect("ok")[0]["revenue_usd"], json!(30.0));
    }

    #[test]
    fn per_minute_emits_when_the_timer_fires() {
        let enriched = enrich(order(50.0, "USD")).expect("ok");
        let mut ctx = Keyed::new(&"ada", 61_000, None);
        per_minute(&mut ctx, Some(enriched)).expect("record");
        assert_eq!(ctx.timers(), &[119_999]);
        let state = ctx.state().copied();
        let mut fired = Keyed::fired(&"ada", 119_999, state);
        per_minute(&mut fired, None).expect("timer");
        assert_eq!(
            fired.emitted(),
            vec![
                json!({"customer": "ada", "minute_end": 119_999, "revenue_usd": 100.0, "orders": 1})
            ]
        );
        assert!(fired.state_cleared());
    }
}
