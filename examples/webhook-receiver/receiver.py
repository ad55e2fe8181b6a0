#!/usr/bin/env python3
"""A jobforge webhook receiver: verifies the signature and deduplicates deliveries.

jobforge delivers every webhook event AT LEAST ONCE: after a leader failover (or a lost answer)
the same event is sent again with the same `X-Jobforge-Delivery` id and the same body. A receiver
therefore:

1. verifies `X-Jobforge-Signature: sha256=<hex HMAC-SHA256(key, raw body)>` over the raw bytes,
   with a constant-time comparison, and answers 401 when it does not match;
2. deduplicates on `X-Jobforge-Delivery`: a delivery id already processed is answered 200 again
   (so jobforge stops sending it) without being processed twice;
3. answers 2xx only once the event is safely stored; any other answer (or none within 10 s)
   makes jobforge retry (5xx and 429 with backoff, others are final).

Events of one request are sent in the order they happened, but a duplicate may arrive after a
later event; order by the body's `request.generation`, `attempt` and `occurredAt` if it matters.

Standard library only. Usage:

    JOBFORGE_WEBHOOK_SECRET=hmac-key python3 receiver.py --port 8080 [--state seen.txt]

Each processed event is printed as one JSON line on stdout. The set of seen delivery ids is kept
in memory and, with --state, appended to a file so that it survives a restart (a real receiver
keeps it in its database, in the same transaction as the effect of the event).
"""

import argparse
import hashlib
import hmac
import json
import os
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MAX_BODY = 1 << 20


def expected_signature(key: bytes, body: bytes) -> str:
    """`sha256=<hex>` as jobforge computes it."""
    return "sha256=" + hmac.new(key, body, hashlib.sha256).hexdigest()


class Seen:
    """Delivery ids already processed (memory, optionally backed by an append-only file)."""

    def __init__(self, path=None):
        self.lock = threading.Lock()
        self.ids = set()
        self.path = path
        if path and os.path.exists(path):
            with open(path, encoding="utf-8") as f:
                self.ids.update(line.rstrip("\n") for line in f if line.strip())

    def first_time(self, delivery_id: str) -> bool:
        """Records `delivery_id`; False when it was already there."""
        with self.lock:
            if delivery_id in self.ids:
                return False
            self.ids.add(delivery_id)
            if self.path:
                with open(self.path, "a", encoding="utf-8") as f:
                    f.write(delivery_id + "\n")
            return True


def make_handler(key, seen):
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            length = int(self.headers.get("Content-Length") or 0)
            if length > MAX_BODY:
                return self.answer(413, "body too large")
            body = self.rfile.read(length)
            if key is not None:
                got = self.headers.get("X-Jobforge-Signature", "")
                if not hmac.compare_digest(got, expected_signature(key, body)):
                    return self.answer(401, "bad signature")
            delivery = self.headers.get("X-Jobforge-Delivery")
            if not delivery:
                return self.answer(400, "no X-Jobforge-Delivery")
            if not seen.first_time(delivery):
                return self.answer(200, "duplicate")
            event = json.loads(body)
            print(json.dumps({"delivery": delivery, "event": event.get("event"),
                              "request": event.get("request"), "phase": event.get("phase")}),
                  flush=True)
            return self.answer(200, "ok")

        def answer(self, code, text):
            data = (text + "\n").encode()
            self.send_response(code)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, fmt, *args):
            sys.stderr.write("receiver: " + (fmt % args) + "\n")

    return Handler


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8080)
    ap.add_argument("--state", help="file of processed delivery ids (survives restarts)")
    args = ap.parse_args()
    secret = os.environ.get("JOBFORGE_WEBHOOK_SECRET")
    key = secret.encode() if secret else None
    if key is None:
        sys.stderr.write("receiver: JOBFORGE_WEBHOOK_SECRET unset: signatures are NOT checked\n")
    server = ThreadingHTTPServer((args.host, args.port), make_handler(key, Seen(args.state)))
    sys.stderr.write(f"receiver: listening on {args.host}:{server.server_address[1]}\n")
    sys.stderr.flush()
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
