"""The ceiling: a bare ASGI app answering every request with one constant JSON body.
Run: uvicorn bench.servers.ceiling:app --loop uvloop --http httptools --no-access-log"""

from __future__ import annotations

from typing import Any

BODY = b'{"prediction":1,"probability":0.5}'
HEADERS = [(b"content-type", b"application/json"), (b"content-length", str(len(BODY)).encode())]


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    more = True
    while more:  # drain the request body
        message = await receive()
        more = message.get("more_body", False)
    await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
    await send({"type": "http.response.body", "body": BODY})
