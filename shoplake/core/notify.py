"""Notifications: Slack through an incoming webhook, and always a local log the dashboard reads.

One path for every alert (Dagster run and check failures, the daily summary, Kafka lag, the speed
layer's anomaly alerts). Sending never raises: a notification that cannot be delivered is logged
and kept in ``$SHOPLAKE_HOME/notifications.jsonl``, and the run that sent it goes on.
"""

from __future__ import annotations

import json
import logging
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shoplake.core import clock

log = logging.getLogger("shoplake.core.notify")

SEVERITY_EMOJI = {
    "info": ":information_source:",
    "warning": ":warning:",
    "critical": ":rotating_light:",
}
LOG_FILE = "notifications.jsonl"


@dataclass(frozen=True)
class Notification:
    title: str
    text: str
    severity: str = "info"  # info | warning | critical
    source: str = "shoplake"
    fields: dict[str, Any] = field(default_factory=dict)
    link: str | None = None

    def slack_payload(self) -> dict[str, Any]:
        """Slack incoming-webhook body: a plain ``text`` fallback plus Block Kit sections."""
        head = f"{SEVERITY_EMOJI.get(self.severity, '')} *{self.title}*".strip()
        blocks: list[dict[str, Any]] = [
            {"type": "section", "text": {"type": "mrkdwn", "text": f"{head}\n{self.text}"}}
        ]
        if self.fields:
            blocks.append(
                {
                    "type": "section",
                    "fields": [
                        {"type": "mrkdwn", "text": f"*{k}*\n{v}"}
                        for k, v in list(self.fields.items())[:10]  # Slack allows 10 fields
                    ],
                }
            )
        if self.link:
            blocks.append(
                {"type": "context", "elements": [{"type": "mrkdwn", "text": f"<{self.link}|open>"}]}
            )
        return {"text": f"{head}\n{self.text}", "blocks": blocks}


class Notifier:
    """Posts to a Slack webhook when one is configured; always appends to the local log."""

    def __init__(
        self,
        webhook_url: str | None,
        home: Path | str,
        timeout: float = 5.0,
        attempts: int = 3,
        backoff: float = 0.5,
    ):
        self.webhook_url = webhook_url or None
        self.log_path = Path(home) / LOG_FILE
        self.timeout = timeout
        self.attempts = attempts
        self.backoff = backoff

    @classmethod
    def from_settings(cls, settings: Any) -> Notifier:
        return cls(settings.slack_webhook_url, settings.home)

    def send(self, note: Notification) -> bool:
        """True when Slack acknowledged it. Never raises."""
        delivered = False
        error = None
        if self.webhook_url:
            delivered, error = self._post(note.slack_payload())
            if not delivered:
                log.warning("Slack notification %r not delivered: %s", note.title, error)
        else:
            log.info("[%s] %s: %s", note.severity, note.title, note.text)
        self._append(note, delivered, error)
        return delivered

    def _post(self, payload: dict[str, Any]) -> tuple[bool, str | None]:
        body = json.dumps(payload).encode()
        error = None
        for attempt in range(self.attempts):
            request = urllib.request.Request(
                self.webhook_url, data=body, headers={"Content-Type": "application/json"}
            )
            try:
                with urllib.request.urlopen(request, timeout=self.timeout) as resp:
                    if 200 <= resp.status < 300:
                        return True, None
                    error = f"HTTP {resp.status}"
            except urllib.error.HTTPError as exc:
                error = f"HTTP {exc.code}"
                if exc.code < 500 and exc.code != 429:
                    return False, error  # a bad URL or payload does not get better by retrying
            except (urllib.error.URLError, OSError) as exc:
                error = str(getattr(exc, "reason", exc))
            if attempt + 1 < self.attempts:
                time.sleep(self.backoff * 2**attempt)
        return False, error

    def _append(self, note: Notification, delivered: bool, error: str | None) -> None:
        record = {
            "at": clock.now().isoformat(),
            "title": note.title,
            "text": note.text,
            "severity": note.severity,
            "source": note.source,
            "fields": note.fields,
            "link": note.link,
            "slack": "delivered" if delivered else ("failed" if self.webhook_url else "disabled"),
            "error": error,
        }
        try:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            with self.log_path.open("a") as f:
                f.write(json.dumps(record, default=str) + "\n")
        except OSError as exc:
            log.warning("cannot write %s: %s", self.log_path, exc)


def read_log(home: Path | str, limit: int = 200) -> list[dict[str, Any]]:
    """The newest ``limit`` notifications, newest first (what the dashboard shows)."""
    path = Path(home) / LOG_FILE
    if not path.exists():
        return []
    lines = path.read_text().splitlines()[-limit:]
    out = []
    for line in reversed(lines):
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a torn last line from a crash; the rest is still good
    return out
