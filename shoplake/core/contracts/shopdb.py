"""The shop's order database as shoplake reads it: tables, columns, keys and numeric columns.

The simulator writes it, and bronze extracts it; both import these names from here.
"""

from __future__ import annotations

TABLES: dict[str, tuple[str, ...]] = {
    "customers": (
        "customer_id",
        "email",
        "phone",
        "country",
        "segment",
        "created_at",
        "updated_at",
    ),
    "products": (
        "product_id",
        "name",
        "category_id",
        "category_code",
        "brand",
        "price",
        "currency",
        "created_at",
        "updated_at",
    ),
    "orders": (
        "order_id",
        "customer_id",
        "anonymous_id",
        "status",
        "total",
        "currency",
        "payment_method",
        "created_at",
        "updated_at",
    ),
    "order_items": (
        "order_id",
        "line_no",
        "product_id",
        "quantity",
        "unit_price",
        "category_code",
        "created_at",
        "updated_at",
    ),
    "payments": (
        "payment_id",
        "order_id",
        "method",
        "amount",
        "status",
        "created_at",
        "updated_at",
    ),
    "inventory_movements": (
        "movement_id",
        "product_id",
        "quantity_delta",
        "reason",
        "order_id",
        "created_at",
        "updated_at",
    ),
}
KEYS: dict[str, tuple[str, ...]] = {
    "customers": ("customer_id",),
    "products": ("product_id",),
    "orders": ("order_id",),
    "order_items": ("order_id", "line_no"),
    "payments": ("payment_id",),
    "inventory_movements": ("movement_id",),
}
NUMERIC = {"price", "total", "unit_price", "amount"}
INTEGER = {"line_no", "quantity", "quantity_delta"}
