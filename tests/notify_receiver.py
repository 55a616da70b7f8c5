"""A webhook receiver process for the notification tests (127.0.0.1 only).

``python -m tests.notify_receiver PORT SECRET LOG [--fail-first N] [--hold-first S]``: every
request is verified with the PyPI ``standardwebhooks`` library and appended to LOG as one
JSON line ``{"id", "verified", "status", "payload"}``; the first N requests are answered 500
on purpose, and the very first one is held S seconds before answering (a window in which the
test kills the sender).
"""

from __future__ import annotations

import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from standardwebhooks.webhooks import Webhook, WebhookVerificationError


def main() -> None:
    port, secret, log_path = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    args = sys.argv[4:]
    fail_first = int(args[args.index("--fail-first") + 1]) if "--fail-first" in args else 0
    hold_first = float(args[args.index("--hold-first") + 1]) if "--hold-first" in args else 0.0
    hook = Webhook(secret)
    lock = threading.Lock()
    seen = [0]

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length", "0")))
            headers = {k.lower(): v for k, v in self.headers.items()}
            try:
                payload = hook.verify(body, headers)
                verified = True
            except WebhookVerificationError:
                payload, verified = None, False
            with lock:
                seen[0] += 1
                n = seen[0]
            status = 500 if n <= fail_first or not verified else 200
            with lock, open(log_path, "a", encoding="utf-8") as log:
                log.write(json.dumps({"id": headers.get("webhook-id"), "verified": verified,
                                      "status": status, "payload": payload}) + "\n")  # fmt: skip
                log.flush()
            if n == 1 and hold_first:
                time.sleep(hold_first)
            self.send_response(status)
            self.send_header("content-length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, format: str, *a: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    print("ready", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
