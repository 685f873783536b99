"""The Models page in Chromium, on the simulated lake's models: no exception, every chart drawn,
no empty box."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from shoplake.core.platform.process import free_port
from shoplake.core.settings import REPO_ROOT
from tests.conftest import clean_env
from tests.test_demo import check_pages, chromium

pytestmark = pytest.mark.integration


def serve_dashboards(ml_lake, log: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = clean_env(
        SHOPLAKE_HOME=str(ml_lake.home),
        SHOPLAKE_ENV="ci",
        SHOPLAKE_PII_KEY="test-pii-key",
        SHOPLAKE_KAFKA_BOOTSTRAP=ml_lake.settings.bootstrap_servers,
    )
    app = str(REPO_ROOT / "shoplake/dashboards/app.py")
    cmd = [str(Path(sys.executable).with_name("streamlit")), "run", app]
    cmd += ["--server.headless", "true", "--server.port", str(port)]
    cmd += ["--browser.gatherUsageStats", "false"]
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=REPO_ROOT)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base}/_stcore/health", timeout=2).status_code == 200:
                return proc, base
        except httpx.HTTPError:
            pass
        if proc.poll() is not None:
            break
        time.sleep(1)
    proc.kill()
    pytest.fail(f"the dashboards did not start:\n{log.read_text()[-3000:]}")


def test_models_page_shows_forecast_backtest_anomalies_and_segments(ml_lake, tmp_path):
    chromium()
    proc, base = serve_dashboards(ml_lake, tmp_path / "streamlit.log")
    try:
        seen = check_pages(base, {"models": ("models", "Models")})["models"]
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert seen["errors"] == 0, seen
    assert seen["charts"] >= 3, seen  # forecast vs actual, backtest errors, segment sizes
    assert seen["empty"] == [], seen
    assert seen["metrics"] and seen["metrics"][0] != "0", seen  # flagged visitors
