"""Dagster resources, picked per environment (SHOPLAKE_ENV) in one place. Filled by the lake issues."""
