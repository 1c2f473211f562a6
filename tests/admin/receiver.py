"""A loopback HTTP server standing in for "another host": it records every request it gets
(method, path, headers, body) and answers each with one status and body."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class Receiver:
    def __init__(self, status: int = 200, body: bytes = b'{"success": true}',
                 content_type: str = "application/json") -> None:
        self.requests: list[tuple[str, str, str, bytes]] = []
        self.status, self.body, self.content_type = status, body, content_type
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def _any(self) -> None:
                length = int(self.headers.get("Content-Length", "0") or 0)
                data = self.rfile.read(length) if length else b""
                receiver.requests.append((self.command, self.path, str(self.headers), data))
                self.send_response(receiver.status)
                self.send_header("Content-Type", receiver.content_type)
                self.send_header("Content-Length", str(len(receiver.body)))
                self.end_headers()
                self.wfile.write(receiver.body)

            do_GET = do_POST = do_PUT = do_DELETE = _any

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.02}, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def seen(self) -> str:
        """Everything it received, as one text to search for a secret."""
        return "\n".join(f"{m} {p}\n{h}\n{b.decode(errors='replace')}"
                         for m, p, h, b in self.requests)

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)
