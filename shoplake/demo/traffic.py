"""Live traffic while the demo serves: a simulated day replayed at a steady rate, stamped now."""

from __future__ import annotations

import threading

from shoplake.core import clock
from shoplake.core.days import last_closed_day
from shoplake.core.settings import Settings
from shoplake.simulator import SimConfig, simulate
from shoplake.simulator.sinks import HttpSink


class LiveTraffic(threading.Thread):
    """Steady live traffic: yesterday's simulated day replayed at ``rate`` events/s, stamped now."""

    def __init__(self, settings: Settings, users: int, rate: float):
        super().__init__(daemon=True, name="live-traffic")
        self.settings, self.users, self.rate = settings, users, rate
        self.stop_event = threading.Event()
        self.sent = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        seed = 1000
        try:
            while not self.stop_event.is_set():
                sink = StoppableSink(
                    HttpSink(
                        self.settings.collector_url, self.settings.client_key(False), replay=False
                    ),
                    self.stop_event,
                    self,
                )
                day = last_closed_day(clock.today())
                config = SimConfig(start=day, days=1, users=self.users, seed=seed, rate=self.rate)
                simulate(config, sink, None, show_progress=False)
                seed += 1  # new event ids each lap: the same ids would be dropped as duplicates
        except StopTraffic:
            pass
        except BaseException as exc:  # reported by the summary, never silently
            self.error = exc

    def stop(self) -> None:
        self.stop_event.set()
        self.join(timeout=30)


class StopTraffic(Exception):
    pass


class StoppableSink:
    """Ends the simulation at the next batch once the demo stops; counts what it sent."""

    def __init__(self, inner, stop: threading.Event, counter: LiveTraffic):
        self.inner, self.stop, self.counter = inner, stop, counter
        self.results = inner.results

    def write(self, records) -> None:
        if self.stop.is_set():
            raise StopTraffic
        self.inner.write(records)
        self.counter.sent += len(records)

    def close(self) -> None:
        self.inner.close()
