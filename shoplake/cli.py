"""The ``shoplake`` command: local platform, contracts, simulator, collector and demo."""

from __future__ import annotations

import sys
from datetime import timedelta
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from shoplake.core import clock
from shoplake.core.days import last_closed_day
from shoplake.core.settings import REPO_ROOT, ConfigError, get_settings
from shoplake.simulator.report import report_table
from shoplake.simulator.shopdb import ShopDB

console = Console()
DBT_DIR = REPO_ROOT / "dbt_project"
BROKER_CHECK_S = 10  # how long a command waits for Kafka before it says how to start it


# Errors whose message is written for the person at the terminal (shoplake's own errors derive
# from these): printed as they are. Any other exception is printed with its type.
USER_ERRORS = (ValueError, RuntimeError, OSError)


class _Commands(click.Group):
    """The CLI's one error wrapper: every command ends in one line on an error, saying what is
    wrong and what to do, unless --debug asks for the traceback."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.ClickException, click.Abort, SystemExit):
            raise
        except KeyboardInterrupt:
            sys.exit(130)
        except Exception as exc:
            if ctx.params.get("debug"):
                raise
            name = "" if isinstance(exc, USER_ERRORS) else f"{type(exc).__name__}: "
            console.print(f"[bold red]error:[/] {name}{exc}", soft_wrap=True)
            console.print("(run with 'shoplake --debug ...' for the traceback)", style="dim")
            sys.exit(1)


@click.group(cls=_Commands, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="shoplake", message="shoplake %(version)s")
@click.option("--debug", is_flag=True, help="Show the traceback of an error.")
def main(debug: bool) -> None:
    """shoplake: e-commerce behaviour data from collector to Kafka to a Dagster lake.

    Settings come from SHOPLAKE_* environment variables (see shoplake/core/settings.py and the
    README's settings table).
    """


# -- kafka ---------------------------------------------------------------------------------------
@main.group()
def kafka() -> None:
    """The local single-node Kafka (KRaft) broker, or the cluster in SHOPLAKE_KAFKA_BOOTSTRAP."""


def _local_kafka():
    from shoplake.core.platform.kafka import LocalKafka

    settings = get_settings()
    if not settings.kafka_provisioned:
        raise ConfigError(
            f"SHOPLAKE_KAFKA_BOOTSTRAP={settings.kafka_bootstrap} is set: shoplake uses that "
            "cluster and provisions no broker. Unset it to use the local one."
        )
    return LocalKafka.from_settings(settings)


@kafka.command("install")
def kafka_install() -> None:
    """Resolve the Kafka broker jars from Maven Central (once)."""
    from shoplake.core.platform.kafka import kafka_version

    settings = get_settings()
    if not settings.kafka_provisioned:
        console.print(
            f"using the existing cluster at {settings.kafka_bootstrap}; nothing to install"
        )
        return
    broker = _local_kafka()
    if broker.installed():
        console.print(f"Kafka {kafka_version()} already resolved in {broker.libs}")
        return
    console.print(f"resolving Apache Kafka {kafka_version()} with Maven (first time only) ...")
    console.print(f"Kafka jars in {broker.install()}")


@kafka.command("start")
@click.option(
    "--timeout", default=90.0, show_default=True, help="Seconds to wait for the broker to answer."
)
def kafka_start(timeout: float) -> None:
    """Start the broker in the background and create/update the declared topics."""
    from shoplake.core.platform.topics import ensure_topics

    broker = _local_kafka()
    if not broker.installed():
        console.print("resolving the Kafka broker with Maven (first time only) ...")
    console.print(broker.start(timeout=timeout))
    for change in ensure_topics(broker.bootstrap):
        console.print(f"  {change}")


@kafka.command("stop")
def kafka_stop() -> None:
    """Stop the broker shoplake started (by pid): gracefully, then forcefully."""
    console.print(_local_kafka().stop())


@kafka.command("status")
def kafka_status() -> None:
    """Is the local broker running?"""
    settings = get_settings()
    if not settings.kafka_provisioned:
        from shoplake.core.platform.kafka import wait_for_broker

        wait_for_broker(settings.bootstrap_servers, timeout=5)
        console.print(f"Kafka: external cluster at {settings.bootstrap_servers} answers")
        return
    console.print(_local_kafka().status())


@kafka.command("topics")
@click.option(
    "--apply/--no-apply",
    default=True,
    show_default=True,
    help="Create missing topics and apply the declared configs before listing.",
)
def kafka_topics(apply: bool) -> None:
    """Apply shoplake/core/platform/topics.yaml and list topics with partitions and message counts."""
    from shoplake.core.platform.kafka import wait_for_broker
    from shoplake.core.platform.topics import describe_topics, ensure_topics, load_topics

    settings = get_settings()
    wait_for_broker(settings.bootstrap_servers, timeout=10)
    if apply:
        for change in ensure_topics(settings.bootstrap_servers):
            console.print(f"  {change}")
    declared = load_topics()
    table = Table("topic", "partitions", "messages", "retention", "declared")
    for name, info in describe_topics(settings.bootstrap_servers).items():
        spec = declared.get(name)
        retention = (
            f"{spec.retention_ms / 86_400_000:g}d" if spec and spec.retention_ms > 0 else "-"
        )
        table.add_row(
            name,
            str(info["partitions"]),
            str(info["messages"]),
            retention,
            "yes" if spec else "no",
        )
    console.print(table)


# -- postgres ------------------------------------------------------------------------------------
@main.group()
def postgres() -> None:
    """The project-local PostgreSQL cluster (Debian's binaries, data under SHOPLAKE_HOME)."""


def _local_pg():
    from shoplake.core.platform.postgres import LocalPostgres

    settings = get_settings()
    if settings.pg_dsn:
        raise ConfigError("SHOPLAKE_PG_DSN is set: shoplake uses that server and provisions none.")
    return LocalPostgres.from_settings(settings)


@postgres.command("install")
def postgres_install() -> None:
    """Install Debian's PostgreSQL server packages if they are missing."""
    from shoplake.core.platform.postgres import find_bindir, install_postgres

    if get_settings().pg_dsn:
        console.print("SHOPLAKE_PG_DSN is set; nothing to install")
        return
    if find_bindir() is None:
        console.print("installing PostgreSQL with apt-get ...")
    console.print(f"PostgreSQL binaries in {install_postgres()}")


@postgres.command("start")
def postgres_start() -> None:
    """initdb (first time) and start the local cluster on a free port; prints its DSN."""
    console.print(_local_pg().start())


@postgres.command("stop")
def postgres_stop() -> None:
    """Stop the local cluster (fast shutdown, then immediate)."""
    console.print(_local_pg().stop())


@postgres.command("status")
def postgres_status() -> None:
    """Is the local cluster running, and on which port?"""
    console.print(_local_pg().status())


@postgres.command("dsn")
def postgres_dsn() -> None:
    """Print the DSN to export as SHOPLAKE_PG_DSN."""
    click.echo(_local_pg().dsn)


# -- contracts -----------------------------------------------------------------------------------
@main.group()
def contracts() -> None:
    """Event contracts and their JSON Schemas."""


@contracts.command("export")
def contracts_export() -> None:
    """Regenerate shoplake/core/contracts/schemas/*.json (refuses incompatible changes)."""
    from shoplake.core.contracts.schemas import SCHEMA_DIR, export

    written = export()
    console.print(
        f"{len(written)} schema file(s) updated in {SCHEMA_DIR}"
        if written
        else "schemas are up to date"
    )


@contracts.command("list")
def contracts_list() -> None:
    """Event types, versions and their personal fields."""
    from shoplake.core.contracts.model import CONTRACTS
    from shoplake.core.pii import PII_FIELDS

    table = Table("event_type", "version", "personal fields")
    for (etype, major), (struct, minor) in sorted(CONTRACTS.items()):
        table.add_row(
            etype, f"{major}.{minor}", ", ".join(".".join(p) for p, _ in PII_FIELDS[struct])
        )
    console.print(table)


# -- simulate ------------------------------------------------------------------------------------
@main.command()
@click.option(
    "--to",
    "target",
    type=click.Choice(["http", "kafka", "files"]),
    default="http",
    show_default=True,
    help="http: through the collector (batched); kafka: straight to the topics (load); files: JSON Lines by day.",
)
@click.option("--days", default=1, show_default=True, help="Number of days to simulate.")
@click.option(
    "--start",
    type=click.DateTime(["%Y-%m-%d"]),
    default=None,
    help="First day (UTC), YYYY-MM-DD. Default: the days end yesterday, the last closed day "
    "(with --live: today).",
)
@click.option("--users", default=2000, show_default=True, help="Size of the user population.")
@click.option("--products", default=500, show_default=True, help="Size of the catalog.")
@click.option(
    "--sessions-per-user",
    default=0.35,
    show_default=True,
    help="Average sessions per user per day.",
)
@click.option(
    "--seed", default=42, show_default=True, help="Random seed: the same seed gives the same bytes."
)
@click.option(
    "--rate",
    type=float,
    default=None,
    help="Cap on events per second (default: as fast as possible).",
)
@click.option(
    "--live", is_flag=True, help="Real-time: start now and send each event when its time comes."
)
@click.option(
    "--faults",
    default="default",
    show_default=True,
    help="'default', 'none', or overrides like 'duplicate=0.01,late=0'. Kinds: malformed_json, "
    "oversize, missing_field, wrong_type (sent to the DLQ); duplicate, late, future, bot_burst "
    "(accepted); traffic_spike (x normal in one 10-minute window), revenue_drop (purchase factor "
    "in one hour).",
)
@click.option(
    "--out", type=click.Path(path_type=Path), default=None, help="Output folder for --to files."
)
@click.option(
    "--batch-size", default=100, show_default=True, help="Events per request for --to http."
)
@click.option(
    "--concurrency", default=4, show_default=True, help="Parallel requests for --to http."
)
@click.option(
    "--shopdb/--no-shopdb",
    default=True,
    show_default=True,
    help="Write orders to the shop database (Postgres if SHOPLAKE_PG_DSN, else SQLite).",
)
def simulate(
    target,
    days,
    start,
    users,
    products,
    sessions_per_user,
    seed,
    rate,
    live,
    faults,
    out,
    batch_size,
    concurrency,
    shopdb,
) -> None:
    """Generate realistic, seeded e-commerce traffic (with labelled faults) and send it somewhere."""
    from shoplake.simulator import FaultRates, SimConfig
    from shoplake.simulator import simulate as run

    settings = get_settings()
    if start:
        first = start.date()
    elif live:
        first = clock.today()
    else:
        first = last_closed_day(clock.today()) - timedelta(days=days - 1)
    config = SimConfig(
        start=first,
        days=days,
        users=users,
        products=products,
        seed=seed,
        sessions_per_user=sessions_per_user,
        faults=FaultRates.parse(faults),
        rate=rate,
        live=live,
    )
    sink = _make_sink(settings, target, out, batch_size, concurrency, replay=not live)
    # after the sink: no shop database is written when nothing can be sent
    db = ShopDB.from_settings(settings) if shopdb else None
    report = run(config, sink, db)
    console.print(report_table(report, target))


def _make_sink(
    settings, target: str, out: Path | None, batch_size: int, concurrency: int, replay: bool
):
    from shoplake.simulator.sinks import FilesSink, HttpSink, KafkaSink

    if target == "files":
        return FilesSink(out or settings.home / "sim")
    if target == "kafka":
        from shoplake.core.ingest import Ingestor
        from shoplake.core.platform.kafka import wait_for_broker

        wait_for_broker(settings.bootstrap_servers, timeout=10)
        return KafkaSink(Ingestor.from_settings(settings), settings.bootstrap_servers)
    sink = HttpSink(
        settings.collector_url, settings.client_key(replay), batch_size, concurrency, replay=replay
    )
    sink.check()
    return sink


# -- import --------------------------------------------------------------------------------------
@main.command("import")
@click.argument("source", type=click.Path(exists=True, path_type=Path))
@click.option(
    "--mapping",
    required=True,
    help="A shipped mapping (rees46, olist) or the path of your own YAML mapping.",
)
def import_(source: Path, mapping: str) -> None:
    """Map a CSV/Parquet export (a file or folder) onto the contracts and land it in bronze by day.

    Rows that fail the contract are kept in bronze/import_rejects with the reason.
    """
    from shoplake.core.ingest import Ingestor
    from shoplake.core.lake.io import lake_location
    from shoplake.importers.land import import_file

    settings = get_settings()
    lake = lake_location(settings.lake_root, settings.s3_endpoint_url)
    report = import_file(mapping, source, lake, Ingestor.from_settings(settings))
    table = Table("what", "count", title=f"import {report.mapping} from {source}")
    table.add_row("rows read", str(report.rows_read))
    table.add_row("landed in bronze", str(report.landed))
    table.add_row("skipped by the mapping", str(report.skipped))
    for reason, n in sorted(report.rejected.items()):
        table.add_row(f"rejected: {reason}", str(n))
    days = sorted(report.days)
    table.add_row("days", f"{len(days)} ({days[0]} .. {days[-1]})" if days else "0")
    console.print(table)
    if report.rejected:
        console.print(
            f"rejected rows are in {report.rejects_at}, with their reasons; the most common:",
            soft_wrap=True,
        )
        for reason, n in report.rejected.most_common(3):
            console.print(f"  {reason} ({n}): {report.examples[reason]}", soft_wrap=True)
    if not report.landed:
        raise ValueError("nothing was landed: every row was rejected or skipped (see above)")
    console.print(f"next: shoplake materialize {days[0]} {days[-1]} --no-kafka", soft_wrap=True)


# -- materialize ---------------------------------------------------------------------------------
@main.command("materialize")
@click.argument("first", type=click.DateTime(formats=["%Y-%m-%d"]))
@click.argument("last", type=click.DateTime(formats=["%Y-%m-%d"]), required=False)
@click.option(
    "--select",
    "selection",
    default="*",
    show_default=True,
    help="Dagster asset selection, e.g. 'silver/events+' or 'group:gold_commerce'.",
)
@click.option(
    "--no-kafka",
    is_flag=True,
    help="Leave out bronze/events and bronze/dlq_events: for a lake fed only by 'shoplake import'.",
)
def materialize_cmd(first, last, selection: str, no_kafka: bool) -> None:
    """Build the lake for the days FIRST..LAST (default: FIRST only) in one Dagster run.

    The run is recorded in the instance under SHOPLAKE_HOME/dagster (or DAGSTER_HOME), so
    'dagster dev' shows it. Dagster's output goes to SHOPLAKE_HOME/run/materialize.log.
    """
    from shoplake.materialize import (
        Materialization,
        materialize,
        run_env,
        summarize,
        without_kafka,
    )

    settings = get_settings()
    first, last = first.date(), (last or first).date()
    if last < first:
        raise ValueError(f"LAST ({last}) is before FIRST ({first}): give the days in order")
    if no_kafka:
        selection = without_kafka(selection)
    elif selection == "*":  # bronze reads Kafka: say so now, not after Dagster has started
        from shoplake.core.platform.kafka import wait_for_broker

        wait_for_broker(settings.bootstrap_servers, timeout=BROKER_CHECK_S)
    log = settings.home / "run" / "materialize.log"
    env = run_env(settings, first)
    if first < settings.partitions_start:
        console.print(
            f"note: {first} is before SHOPLAKE_PARTITIONS_START ({settings.partitions_start}); "
            f"this run uses {first}. To see these days in 'dagster dev', export "
            f"SHOPLAKE_PARTITIONS_START={first}"
        )
    console.print(f"materializing {first}..{last} through Dagster (log {log}) ...")
    with console.status("Dagster: bronze -> silver -> gold ..."):
        code = materialize(Materialization(first, last, selection), env, log)
    summary = summarize(Path(env["DAGSTER_HOME"]))
    if summary is not None:
        print_run_summary(summary)
    if code != 0:
        raise RuntimeError(f"the Dagster run failed; Dagster's output is in {log}")
    console.print(
        f"[green]done:[/] {first}..{last} (DAGSTER_HOME={env['DAGSTER_HOME']}; "
        "'dagster dev' shows the run)",
        soft_wrap=True,
    )


def print_run_summary(summary) -> None:
    table = Table(
        "asset",
        "rows",
        "checks passed",
        "checks failed",
        "error",
        title=f"run {summary.run_id[:8]}: {summary.status}",
    )
    for name, outcome in sorted(summary.assets.items()):
        table.add_row(
            name,
            "" if outcome.rows is None else f"{outcome.rows:,}",
            str(outcome.checks_passed),
            ", ".join(outcome.checks_failed) or "",
            outcome.failed or "",
        )
    console.print(table, width=max(console.width, 160))  # whole asset and check names
    if summary.first_error:
        console.print(f"[bold]first problem:[/] {summary.first_error}", soft_wrap=True)


# -- dbt ---------------------------------------------------------------------------------------
@main.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.argument("dbt_args", nargs=-1, type=click.UNPROCESSED)
def dbt(dbt_args: tuple[str, ...]) -> None:
    """Run dbt by hand on this home's warehouse and lake: shoplake dbt build --select fct_orders.

    It runs the venv's dbt in dbt_project/ with what Dagster gives it: the warehouse
    (SHOPLAKE_HOME/warehouse.duckdb, or SHOPLAKE_WAREHOUSE_DSN) and the lake root. Models read a
    partition window: pass --vars '{"min_date": "YYYY-MM-DD", "max_date": "YYYY-MM-DD"}'.
    """
    import os
    import subprocess

    from resources import resources_for

    settings = get_settings()
    resources = resources_for(settings)
    env = dict(os.environ) | resources["warehouse"].dbt_env() | resources["lake"].dbt_env()
    env["SHOPLAKE_LAKE_ROOT"] = settings.lake_root
    executable = Path(sys.executable).with_name("dbt")
    cmd = [str(executable) if executable.exists() else "dbt", *dbt_args]
    sys.exit(subprocess.run(cmd, cwd=DBT_DIR, env=env).returncode)


# -- collector -----------------------------------------------------------------------------------
@main.command()
@click.option("--host", default=None, help="Bind address (default SHOPLAKE_COLLECTOR_HOST).")
@click.option("--port", type=int, default=None, help="Port (default SHOPLAKE_COLLECTOR_PORT).")
@click.option(
    "--log-level",
    default="warning",
    show_default=True,
    type=click.Choice(["critical", "error", "warning", "info", "debug", "trace"]),
)
@click.option(
    "--workers",
    default=1,
    show_default=True,
    help="Worker processes (rate limits are then per process).",
)
def collector(host: str | None, port: int | None, log_level: str, workers: int) -> None:
    """Run the HTTP collector in the foreground: POST /v1/events, GET /healthz, GET /metrics."""
    from shoplake.collector.server import serve
    from shoplake.core.platform.kafka import wait_for_broker

    settings = get_settings()
    host, port = host or settings.collector_host, port or settings.collector_port
    # Refuse to start without a broker: every request would wait and then answer 503.
    wait_for_broker(settings.bootstrap_servers, timeout=BROKER_CHECK_S)
    console.print(
        f"collector on http://{host}:{port} -> Kafka {settings.bootstrap_servers} ({workers} worker(s))"
    )
    serve(settings, host, port, workers, log_level)


# -- stream --------------------------------------------------------------------------------------
@main.command()
@click.option("-w", "--workers", default=1, show_default=True, help="Worker threads per process.")
@click.option(
    "-p",
    "--processes",
    default=1,
    show_default=True,
    help="Local processes forming one Bytewax cluster (each gets -i and the address list).",
)
@click.option(
    "-i",
    "--process-id",
    type=int,
    default=None,
    help="This process's id in a multi-host cluster; needs --addresses.",
)
@click.option(
    "-a",
    "--addresses",
    default=None,
    help="host:port of every process of a multi-host cluster, ';'-separated.",
)
@click.option(
    "--recovery-dir",
    type=click.Path(path_type=Path),
    default=None,
    help="Bytewax recovery partitions; created when missing. Default: $SHOPLAKE_HOME/stream/recovery.",
)
@click.option(
    "--recovery-parts",
    type=int,
    default=None,
    help="Partitions to create on first use (fixed afterwards). Default: max(4, workers x processes).",
)
@click.option(
    "--no-recovery", is_flag=True, help="Run without recovery (restarts begin again at --from)."
)
@click.option(
    "--reset", is_flag=True, help="Delete the recovery state first, so everything is reprocessed."
)
@click.option(
    "-s",
    "--snapshot-interval",
    default=5,
    show_default=True,
    help="Seconds between state snapshots; a restart replays at most this much.",
)
@click.option(
    "--eof",
    is_flag=True,
    help="Stop at the end of the topics (backfills, tests); results then depend on the input only.",
)
@click.option(
    "--from",
    "start",
    type=click.Choice(["beginning", "end"]),
    default="beginning",
    show_default=True,
    help="Where a first start (no recovery state) reads the topics from.",
)
@click.option(
    "--metrics-port",
    type=int,
    default=None,
    help="Prometheus port (+ process id); 0 disables. Default SHOPLAKE_STREAM_METRICS_PORT or 9108.",
)
def stream(
    workers,
    processes,
    process_id,
    addresses,
    recovery_dir,
    recovery_parts,
    no_recovery,
    reset,
    snapshot_interval,
    eof,
    start,
    metrics_port,
) -> None:
    """Run the Bytewax speed layer: live metrics, daily totals, sessions, top products and alerts.

    Runs `python -m bytewax.run streaming.run:flow` with recovery. Tables land in
    $SHOPLAKE_HOME/lake/speed (and Postgres schema `realtime` when SHOPLAKE_PG_DSN is set); metrics,
    sessions and alerts also go to their Kafka topics. Other settings: SHOPLAKE_STREAM_* (see
    shoplake/core/stream_config.py).
    """
    from shoplake.core.platform.kafka import wait_for_broker
    from streaming.launch import Launch, reset_recovery, run

    wait_for_broker(get_settings().bootstrap_servers, timeout=BROKER_CHECK_S)

    if (process_id is None) != (addresses is None):
        raise ValueError(
            "--process-id and --addresses go together (one member of a multi-host cluster)"
        )
    directory = None if no_recovery else (recovery_dir or get_settings().stream_recovery_dir)
    if reset and directory is not None:
        reset_recovery(directory)
    launch = Launch(
        workers=workers,
        processes=processes,
        process_id=process_id,
        addresses=addresses,
        recovery_dir=directory,
        recovery_parts=recovery_parts,
        snapshot_seconds=snapshot_interval,
        eof=eof,
        start=start,
        metrics_port=metrics_port,
    )
    console.print(
        f"speed layer: {processes} process(es) x {workers} worker(s); recovery "
        f"{directory or 'off'}; {'until the end of the topics' if eof else 'following the topics'}"
    )
    try:
        code = run(launch)
    except KeyboardInterrupt:
        code = 130
    sys.exit(code)


# -- demo ----------------------------------------------------------------------------------------
@main.command()
@click.option(
    "--days",
    default=7,
    show_default=True,
    help="Days of history to simulate, ending today (the closed ones are backfilled).",
)
@click.option("--users", default=1500, show_default=True, help="Simulated visitors.")
@click.option("--rate", default=50.0, show_default=True, help="Live traffic, events per second.")
@click.option(
    "--once",
    is_flag=True,
    help="Short non-interactive run: live traffic for --duration (default 60 s), verify "
    "the numbers, stop everything, exit 0 or 1.",
)
@click.option(
    "--duration",
    type=float,
    default=None,
    envvar="DEMO_DURATION",
    help="Seconds of live traffic before stopping (env DEMO_DURATION). Default: until Ctrl-C.",
)
def demo(days: int, users: int, rate: float, once: bool, duration: float | None) -> None:
    """The whole platform locally: Kafka, collector, speed layer, a week of history, the Dagster
    backfill, then the Dagster UI (:3000), dashboards (:8501) and metrics with live traffic."""
    from shoplake.demo import run_demo

    code = run_demo(
        days=days, users=users, once=once, duration=duration, rate=rate, console=console
    )
    sys.exit(code)


if __name__ == "__main__":
    main()
