"""`shoplake demo --once` on its own Kafka, ports and home, as a user would run it; while it serves,
every dashboard page is opened in a real headless Chromium (Debian's) and screenshotted into
artifacts/screenshots/ (git-ignored)."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from shoplake.core.platform.process import free_port
from shoplake.core.settings import REPO_ROOT
from shoplake.core.speed.tables import read_table
from tests.conftest import clean_env, unavailable

pytestmark = [pytest.mark.integration, pytest.mark.timeout(1200)]
SCREENSHOTS = REPO_ROOT / "artifacts" / "screenshots"
# name -> (url path, title); Live is the default page, served at the root.
PAGES = {
    "live": ("", "Live"),
    "commerce": ("commerce", "Commerce"),
    "ads": ("ads", "Ads"),
    "models": ("models", "Models"),
    "health": ("health", "Data health"),
}


def chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        unavailable("chromium", "install Debian's chromium package (infra/system-deps.sh --test)")
    return path


def wait_for(predicate, timeout: float, what: str, proc: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(
                f"the demo exited ({proc.returncode}) before {what}:\n{log.read_text()[-4000:]}"
            )
        if predicate():
            return
        time.sleep(2)
    pytest.fail(f"timed out waiting for {what}:\n{log.read_text()[-4000:]}")


def has_live_numbers(lake: Path) -> bool:
    """A 1-minute window of the live traffic (50 events/s) is in the speed table."""
    metrics = read_table("window_metrics", lake)
    minutes = metrics.filter((metrics["window_size"] == "1m") & (metrics["dimension"] == "all"))
    return (
        minutes.height > 0
        and int(minutes["events"].max()) >= 1000
        and read_table("active_sessions", lake).height > 0
    )


def check_pages(base: str, pages: dict[str, tuple[str, str]] = PAGES) -> dict[str, dict]:
    from playwright.sync_api import sync_playwright

    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    seen = {}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium(), args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1400, "height": 1600})
        for name, (path, title) in pages.items():
            page.goto(f"{base}/{path}")
            page.get_by_role("heading", name=title).first.wait_for(timeout=60_000)
            page.locator(".vega-embed").first.wait_for(timeout=60_000)
            running = page.locator('[data-testid="stStatusWidget"]')
            running.wait_for(state="hidden", timeout=60_000)  # the script run has finished
            page.wait_for_timeout(2_000)  # let every chart of the page render
            seen[name] = {
                "errors": page.locator('[data-testid="stException"]').count(),
                "charts": page.locator(".vega-embed").count(),
                "empty": page.locator('[data-testid="stAlertContentInfo"]').all_inner_texts(),
                "metrics": page.locator('[data-testid="stMetricValue"]').all_inner_texts(),
            }
            page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)
        browser.close()
    return seen


def test_demo_once_serves_every_page_and_verifies_its_numbers(tmp_path):
    chromium()
    home = tmp_path / "home"
    ports = {
        k: str(free_port())
        for k in (
            "SHOPLAKE_KAFKA_PORT",
            "SHOPLAKE_KAFKA_CONTROLLER_PORT",
            "SHOPLAKE_COLLECTOR_PORT",
            "SHOPLAKE_DAGSTER_PORT",
            "SHOPLAKE_DASHBOARD_PORT",
            "SHOPLAKE_DAGSTER_EXPORTER_PORT",
            "SHOPLAKE_STREAM_METRICS_PORT",
        )
    }
    env = clean_env()
    # A full minute of live traffic reaches the speed table once it has closed past the lateness
    # and the lake sink has flushed: 180 s of traffic left that to where the minute boundaries
    # fell (a fresh-clone run failed so); 300 s leaves at least two closed minutes.
    env.update(ports, SHOPLAKE_HOME=str(home), SHOPLAKE_ENV="ci", DEMO_DURATION="300")
    log = tmp_path / "demo.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "shoplake.cli",
                "demo",
                "--once",
                "--days",
                "3",
                "--users",
                "400",
            ],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=REPO_ROOT,
        )
    try:
        wait_for(lambda: b"live traffic at" in log.read_bytes(), 900, "serving", proc, log)
        lake = home / "lake"
        wait_for(
            lambda: has_live_numbers(lake),
            300,
            "a minute of live traffic in the speed table",
            proc,
            log,
        )

        dagster = f"http://127.0.0.1:{ports['SHOPLAKE_DAGSTER_PORT']}"
        assert httpx.get(f"{dagster}/server_info", timeout=10).status_code == 200
        exported = httpx.get(
            f"http://127.0.0.1:{ports['SHOPLAKE_DAGSTER_EXPORTER_PORT']}/metrics", timeout=30
        ).text
        assert 'shoplake_dagster_runs{dagster_job="__ASSET_JOB",status="SUCCESS"} 1.0' in exported
        stream = httpx.get(f"http://127.0.0.1:{ports['SHOPLAKE_STREAM_METRICS_PORT']}/metrics").text
        assert "shoplake_stream_records_in_total" in stream

        seen = check_pages(f"http://127.0.0.1:{ports['SHOPLAKE_DASHBOARD_PORT']}")
        for path, found in seen.items():
            assert found["errors"] == 0, (path, found)
            assert found["charts"] >= 1, (path, found)
            assert (SCREENSHOTS / f"{path}.png").stat().st_size > 10_000
        assert all("alerts" in t for t in seen["live"]["empty"]), seen["live"]
        assert "-" not in seen["live"]["metrics"][:2], seen["live"]  # events/s, active sessions
        assert seen["commerce"]["empty"] == [] and seen["ads"]["empty"] == []
        assert seen["commerce"]["metrics"][0] not in ("", "0.00")  # revenue

        assert proc.wait(timeout=600) == 0, log.read_text()[-4000:]
    finally:
        if proc.poll() is None:  # like Ctrl-C: the demo stops what it started
            proc.send_signal(signal.SIGINT)
            proc.wait(timeout=120)
    text = log.read_text()
    assert "demo verified" in text
    for name in ("dashboards", "dagster-webserver", "dagster-daemon", "stream", "collector"):
        assert f"stopped {name}" in text
    assert not list((home / "run").glob("*.pid"))  # everything it started is gone
