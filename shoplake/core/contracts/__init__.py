"""Versioned event contracts: the one source of truth for what an event is."""

from shoplake.core.contracts.decode import ContractViolation, decode_event, encode_event
from shoplake.core.contracts.model import (
    CONTRACTS,
    EVENT_TYPES,
    Context,
    Event,
    OrderItem,
    Traits,
    current_version,
)

__all__ = [
    "CONTRACTS",
    "EVENT_TYPES",
    "Context",
    "ContractViolation",
    "Event",
    "OrderItem",
    "Traits",
    "current_version",
    "decode_event",
    "encode_event",
]
