"""Serving the collector: uvicorn (uvloop + httptools) with the timeouts a reverse proxy would set.

uvicorn closes idle kept-alive connections, and the app bounds the body (size, time, uploads in
progress), but uvicorn waits forever for a request's headers. :class:`TimedHttpToolsProtocol` adds
that timeout, so a client that opens connections and trickles nothing cannot hold them.
"""

from __future__ import annotations

import asyncio

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from shoplake.core.settings import Settings, get_settings


class TimedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, closing a connection whose request headers have not all
    arrived ``SHOPLAKE_COLLECTOR_HEADER_TIMEOUT`` seconds after it opened or after its last
    response."""

    header_timeout_s: float | None = None

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if TimedHttpToolsProtocol.header_timeout_s is None:  # each worker process reads it once
            TimedHttpToolsProtocol.header_timeout_s = get_settings().header_timeout_s
        self._header_timer: asyncio.TimerHandle | None = None

    def _arm(self) -> None:
        self._disarm()
        self._header_timer = self.loop.call_later(self.header_timeout_s, self._headers_too_slow)

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_too_slow(self) -> None:
        self._header_timer = None
        if not self.transport.is_closing():
            self.transport.close()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def on_headers_complete(self) -> None:
        self._disarm()
        super().on_headers_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._arm()  # the next request on this connection gets the same bound

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)


def serve(settings: Settings, host: str, port: int, workers: int, log_level: str) -> None:
    uvicorn.run(
        "shoplake.collector.app:app_from_env",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level=log_level,
        access_log=False,
        loop="uvloop",
        http=TimedHttpToolsProtocol,
        timeout_keep_alive=int(max(1, settings.idle_timeout_s)),
    )
