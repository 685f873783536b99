"""The silver events table: its Polars JSON schema (derived from the contracts) and its Pandera model."""

from __future__ import annotations

from typing import Any

import msgspec
import pandera.polars as pa
import polars as pl

from shoplake.core.contracts.model import CONTRACTS, EVENT_TYPES

_SCALARS = {
    msgspec.inspect.StrType: pl.String,
    msgspec.inspect.IntType: pl.Int64,
    msgspec.inspect.FloatType: pl.Float64,
    msgspec.inspect.BoolType: pl.Boolean,
    msgspec.inspect.DateTimeType: pl.String,  # parsed to Datetime after decoding (any UTC offset)
    msgspec.inspect.UUIDType: pl.String,
    msgspec.inspect.LiteralType: pl.String,
}


def _dtype(t: Any) -> pl.DataType:
    if isinstance(t, msgspec.inspect.Metadata):
        return _dtype(t.type)
    if isinstance(t, msgspec.inspect.UnionType):
        members = [m for m in t.types if not isinstance(m, msgspec.inspect.NoneType)]
        return _dtype(members[0])
    if isinstance(t, msgspec.inspect.StructType):
        return pl.Struct({f.encode_name: _dtype(f.type) for f in t.fields})
    if isinstance(t, msgspec.inspect.ListType):
        return pl.List(_dtype(t.item_type))
    for kind, dtype in _SCALARS.items():
        if isinstance(t, kind):
            return dtype()
    raise TypeError(f"no Polars type for {t!r}")


def event_struct() -> pl.Struct:
    """One struct holding every field of every contract (fields absent from a type are null)."""
    fields: dict[str, pl.DataType] = {"event_type": pl.String()}
    for struct, _ in CONTRACTS.values():
        for f in msgspec.inspect.type_info(struct).fields:
            dtype = _dtype(f.type)
            if f.encode_name in fields and fields[f.encode_name] != dtype:
                raise TypeError(f"field {f.encode_name} has two types across contracts")
            fields[f.encode_name] = dtype
    return pl.Struct(fields)


QUARANTINE_REASONS = ("contract_violation", "future_event", "late_beyond_window", "unparseable")


class SilverEvent(pa.DataFrameModel):
    """Contract of silver/events: what gold may rely on."""

    event_id: str = pa.Field(unique=True, str_length={"min_value": 32, "max_value": 36})
    event_type: str = pa.Field(isin=list(EVENT_TYPES))
    schema_version: str = pa.Field(str_matches=r"^\d+\.\d+$")
    event_at: pl.Datetime(time_unit="us", time_zone="UTC") = pa.Field()  # type: ignore[valid-type]
    event_date: pl.Date = pa.Field()
    anonymous_id: str = pa.Field(str_length={"min_value": 1, "max_value": 128})
    platform: str = pa.Field(isin=["web", "ios", "android"])
    device_type: str = pa.Field(isin=["desktop", "mobile", "tablet"], nullable=True)
    price: float = pa.Field(ge=0, nullable=True)
    unit_price: float = pa.Field(ge=0, nullable=True)
    quantity: int = pa.Field(ge=1, nullable=True)
    total: float = pa.Field(ge=0, nullable=True)
    banner_position: int = pa.Field(ge=0, le=7, nullable=True)
    is_bot: bool = pa.Field()

    class Config:
        strict = False  # more columns are allowed; these are the ones gold relies on
        coerce = False
