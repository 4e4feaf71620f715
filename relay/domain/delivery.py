"""The states a delivery moves through, defined once for the store, the reports and the tests."""

from typing import Literal, get_args

DeliveryState = Literal["pending", "sending", "retrying", "delivered", "dead", "unmatched", "superseded"]
# Every state the deliveries table allows (its CHECK constraint), so each gauge and count exists at zero.
DELIVERY_STATES: tuple[DeliveryState, ...] = get_args(DeliveryState)
# Owed to Quivo and not yet delivered: what the backlog counts. Unmatched ones wait for a link instead.
WAITING_STATES: tuple[DeliveryState, ...] = ("pending", "retrying", "sending")
