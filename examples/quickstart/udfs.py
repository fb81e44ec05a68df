"""The quickstart's Python UDF: the host runs it in a worker process it starts itself."""

import headwater as hw


@hw.map
def add_revenue(order: dict) -> dict:
    """Adds the order's revenue (price times quantity)."""
    return {**order, "revenue": order["price"] * order["quantity"]}
