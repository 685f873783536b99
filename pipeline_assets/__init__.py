"""shoplake's Dagster code location: the lake's layers as software-defined assets."""
