"""A small OpenAI-compatible HTTP server on 127.0.0.1 for the API baseline's tests: deterministic answers, injected
429s and 500s, every request body kept. A test double (no API is reachable here); no mocked client objects."""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


def answer(prompt: str) -> str:
    return f"  answer {hashlib.sha256(prompt.encode()).hexdigest()[:8]}. And more text."


class FakeOpenAI:
    """Counts requests; every 4th request gets a 429 and every 7th a 500 (a failure is never repeated forever)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.requests = 0
        self.failures = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self.bodies: list[dict[str, Any]] = []
        self.auth: set[str] = set()
        self.fail = True
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with outer.lock:
                    outer.requests += 1
                    n = outer.requests
                    outer.in_flight += 1
                    outer.max_in_flight = max(outer.max_in_flight, outer.in_flight)
                    outer.auth.add(self.headers.get("Authorization", ""))
                try:
                    time.sleep(0.01)
                    status = 429 if n % 4 == 0 else 500 if n % 7 == 0 else 200
                    if not outer.fail:
                        status = 200
                    data = b""
                    if status == 200:
                        if self.path.endswith("/chat/completions"):
                            prompt = body["messages"][0]["content"]
                            out: dict[str, Any] = {
                                "choices": [{"message": {"role": "assistant", "content": answer(prompt)}}]}
                        else:
                            out = {"choices": [{"text": answer(body["prompt"])}]}
                        data = json.dumps(out).encode()
                finally:  # before the answer is sent: once the client has it, it may send its next request at once
                    with outer.lock:
                        outer.in_flight -= 1
                        if status == 200:
                            outer.bodies.append(body)
                        else:
                            outer.failures += 1
                self.send_response(status)
                if data:
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"


@contextmanager
def serving() -> Iterator[FakeOpenAI]:
    """A FakeOpenAI answering on its own thread until the block ends."""
    fake = FakeOpenAI()
    thread = threading.Thread(target=fake.server.serve_forever, daemon=True)
    thread.start()
    try:
        yield fake
    finally:
        fake.server.shutdown()
        fake.server.server_close()
