"""shoplake's Dagster code location: the lake's layers as software-defined assets."""

from shoplake.core.library_warnings import silence_known_library_warnings

silence_known_library_warnings()
