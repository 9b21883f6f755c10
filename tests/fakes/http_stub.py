"""A real HTTP server on loopback whose answers a test writes as one aiohttp handler: for
exercising HTTP clients (status codes, bodies, streams, dropped connections) without mocks."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from aiohttp import web

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@asynccontextmanager
async def serving(handler: Handler) -> AsyncIterator[str]:
    """Serve every request with `handler` on 127.0.0.1; yields the base URL."""
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


def drop(request: web.Request) -> web.StreamResponse:
    """Close the connection without answering (what a crashed or restarting server does)."""
    assert request.transport is not None
    request.transport.close()
    return web.Response(status=500)  # never reaches the client
