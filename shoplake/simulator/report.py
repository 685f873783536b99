"""A simulation's report as a table, for the CLI and the demo."""

from __future__ import annotations

from rich.table import Table

from shoplake.simulator.run import SimReport


def report_table(report: SimReport, target: str) -> Table:
    """What a simulation sent, where, and what the shop database received."""
    table = Table("what", "count", title=f"simulation ({report.seconds:.1f}s)")
    table.add_row("events sent", str(report.records))
    table.add_row("  expected accepted", str(report.expected_accepted))
    table.add_row("  expected rejected (DLQ)", str(report.expected_rejected))
    for fault, n in sorted(report.faults.items()):
        table.add_row(f"  fault: {fault}", str(n))
    if report.not_yet_arrived:
        table.add_row("  held back (would arrive in the future)", str(report.not_yet_arrived))
    table.add_row("orders", str(report.orders))
    for k, v in sorted(report.sink.items()):
        table.add_row(f"{target}: {k}", str(v))
    for t, n in report.db_rows.items():
        table.add_row(f"shop db: {t}", str(n))
    return table
