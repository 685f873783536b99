"""Deterministic (seeded) e-commerce traffic: catalog, users, funnels, ads, faults, orders."""

from shoplake.simulator.faults import FaultRates
from shoplake.simulator.run import SimConfig, SimReport, simulate

__all__ = ["FaultRates", "SimConfig", "SimReport", "simulate"]
