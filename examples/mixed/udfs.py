"""The mixed example's Python UDF: the host runs it in a Python worker process it starts."""

import headwater as hw

# Euros per unit of each currency (a fixed table: the example's output never changes).
RATES_TO_EUR = {"EUR": 1.0, "USD": 0.92, "GBP": 1.17, "CHF": 1.05, "JPY": 0.0061}


@hw.map
def to_eur(payment: dict) -> dict:
    """Adds `amount_eur`. A currency without a rate fails the record: it goes to the DLQ."""
    rate = RATES_TO_EUR.get(payment["currency"])
    if rate is None:
        raise ValueError(
            f"payment {payment['id']}: no exchange rate for {payment['currency']!r}"
        )
    return {**payment, "amount_eur": round(payment["amount"] * rate, 2)}
