"""A scripted OpenAI-compatible chat server on 127.0.0.1, for tests of failures as real providers fail.

LiteLLM reaches it over HTTP like any ``openai/...`` endpoint, so its errors go through LiteLLM's own
exception mapping (and whatever that prints), which an in-process fake provider skips.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

INVALID_JSON = b'{"id": "chatcmpl-1", "choices": [ this is not json'
STALL = None  # a reply that holds the request until the server closes: longer than any client timeout


def answer(body: dict, text: str) -> bytes:
    """A chat completion answering ``text``."""
    return json.dumps({
        "id": "chatcmpl-1", "object": "chat.completion", "created": 0, "model": body.get("model", "m"),
        "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": text}}],
        "usage": {"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6},
    }).encode()  # fmt: skip


class ScriptedServer:
    """Each request gets the next reply of the script, the last one repeating; every request is recorded.

    A reply is a ``str`` (answered with status 200), an ``int`` (that HTTP status, with an OpenAI error body),
    ``bytes`` (status 200 with that body as it is, e.g. :data:`INVALID_JSON`) or :data:`STALL`.
    """

    def __init__(self, *replies: str | int | bytes | None) -> None:
        self.replies = list(replies)
        self.seen: list[tuple[str, str | None, dict]] = []  # path, Authorization header, JSON body
        self._lock = threading.Lock()
        self._closing = threading.Event()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with server._lock:
                    server.seen.append((self.path, self.headers.get("Authorization"), body))
                    reply = server.replies.pop(0) if len(server.replies) > 1 else server.replies[0]
                if reply is STALL:
                    server._closing.wait(timeout=30)
                    return
                status, payload = 200, reply if isinstance(reply, bytes) else b""
                if isinstance(reply, int):
                    status = reply
                    payload = json.dumps({"error": {"message": f"scripted {reply}", "code": reply}}).encode()
                elif isinstance(reply, str):
                    payload = answer(body, reply)
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def __enter__(self) -> ScriptedServer:
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._closing.set()
        self.httpd.shutdown()
        self.httpd.server_close()
