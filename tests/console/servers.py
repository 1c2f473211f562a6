"""Local receivers the alert tests deliver to over loopback: SMTP and an HTTP webhook.

aiosmtpd is not installed, so the SMTP side is a small server on asyncio speaking
the part of RFC 5321 that smtplib uses (EHLO/HELO, MAIL, RCPT, DATA, RSET, NOOP, QUIT).
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import json
import threading
from dataclasses import dataclass, field
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Mail:
    mail_from: str
    rcpt_tos: list[str]
    message: EmailMessage


@dataclass
class SmtpServer:
    """Start with `start()`; `messages` fills as mail arrives; `fail_data` answers the
    next N DATA commands with a temporary failure (451)."""

    messages: list[Mail] = field(default_factory=list)
    fail_data: int = 0
    port: int = 0

    def start(self) -> SmtpServer:
        self._loop = asyncio.new_event_loop()
        started = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(self._loop)
            self._server = self._loop.run_until_complete(
                asyncio.start_server(self._session, "127.0.0.1", 0))
            self.port = self._server.sockets[0].getsockname()[1]
            started.set()
            self._loop.run_forever()

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()
        assert started.wait(5)
        return self

    def stop(self) -> None:
        def close() -> None:
            self._server.close()
            self._loop.stop()

        self._loop.call_soon_threadsafe(close)
        self._thread.join(5)

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        def say(line: str) -> None:
            writer.write(line.encode() + b"\r\n")

        say("220 localhost test SMTP")
        mail_from, rcpt = "", []
        try:
            while line := (await reader.readline()).decode().rstrip("\r\n"):
                verb = line[:4].upper()
                if verb in ("EHLO", "HELO"):
                    say("250 localhost")
                elif verb == "MAIL":
                    mail_from, rcpt = line.split(":", 1)[1].strip().strip("<>"), []
                    say("250 OK")
                elif verb == "RCPT":
                    rcpt.append(line.split(":", 1)[1].strip().strip("<>"))
                    say("250 OK")
                elif verb == "DATA":
                    say("354 end with <CRLF>.<CRLF>")
                    await writer.drain()
                    data = await self._data(reader)
                    if self.fail_data:
                        self.fail_data -= 1
                        say("451 try again later")
                    else:
                        message = email.message_from_bytes(data, policy=email.policy.default)
                        self.messages.append(Mail(mail_from, rcpt, message))  # type: ignore[arg-type]
                        say("250 OK queued")
                elif verb == "QUIT":
                    say("221 bye")
                    await writer.drain()
                    break
                elif verb in ("RSET", "NOOP"):
                    say("250 OK")
                else:
                    say("502 not implemented")
                await writer.drain()
        finally:
            writer.close()

    @staticmethod
    async def _data(reader: asyncio.StreamReader) -> bytes:
        lines = []
        while (line := await reader.readline()) not in (b".\r\n", b""):
            lines.append(line[1:] if line.startswith(b"..") else line)
        return b"".join(lines)


class WebhookReceiver:
    """An HTTP server on 127.0.0.1:0 that records each POSTed JSON body and answers
    `statuses` in turn (200 once they are used up; a 3xx with `Location: location`).
    `hosts` has the Host header of every request that arrived, whatever its answer."""

    def __init__(self, statuses: list[int] | None = None) -> None:
        self.posts: list[dict[str, Any]] = []
        self.paths: list[str] = []
        self.hosts: list[str] = []
        self.statuses = list(statuses or [])
        self.location = ""
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                receiver.hosts.append(self.headers.get("Host", ""))
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                status = receiver.statuses.pop(0) if receiver.statuses else 200
                if status == 200:
                    receiver.posts.append(json.loads(body))
                    receiver.paths.append(self.path)
                self.send_response(status)
                if 300 <= status < 400:
                    self.send_header("Location", receiver.location)
                self.send_header("Content-Length", "0")
                self.end_headers()

            do_GET = do_POST  # a redirect followed as a GET would land here too

            def log_message(self, format: str, *args: Any) -> None:
                pass  # quiet: the test reads `posts`

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self._server.server_address[1]
        # shutdown() waits for the loop's next poll: half a second at the default, a test's
        # teardown each time
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.02}, daemon=True)
        self._thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)
