"""A webhook receiver for the suite (on PORT, else a free loopback port): it keeps every delivery as it came and verifies them
with the Standard Webhooks reference library (an implementation independent of the
service's). Prints its loopback port, then serves until killed.

POST /<anything>   keeps the delivery; answers 500 to the first FAIL_FIRST deliveries, 200
                   after; POST /redirect answers 307 to /elsewhere instead; POST /slow
                   keeps it only after SLOW_SECONDS (default 5), then answers 200.
GET /verify?secret=whsec_...&secret=...   each delivery in order: its webhook-id, and the
                   type and data the library returns when some secret given verifies it.
"""
import json
import os
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

from standardwebhooks.webhooks import Webhook

FAIL_FIRST = int(os.environ.get("FAIL_FIRST", "0"))
SLOW_SECONDS = float(os.environ.get("SLOW_SECONDS", "5"))
received = []
lock = threading.Lock()


class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        length = int(self.headers.get("content-length", "0"))
        body = self.rfile.read(length).decode()
        if self.path == "/redirect":
            self.send_response(307)
            self.send_header("location", "/elsewhere")
            self.end_headers()
            return
        if self.path == "/slow":
            time.sleep(SLOW_SECONDS)
        with lock:
            received.append(
                {"headers": {k.lower(): v for k, v in self.headers.items()}, "body": body, "path": self.path}
            )
            count = len(received)
        self.send_response(500 if count <= FAIL_FIRST else 200)
        self.send_header("content-length", "0")
        self.end_headers()

    def do_GET(self):
        secrets = parse_qs(urlparse(self.path).query).get("secret", [])
        with lock:
            deliveries = list(received)
        out = []
        for delivery in deliveries:
            result = {"id": delivery["headers"].get("webhook-id"), "path": delivery["path"], "verified_with": None}
            for n, secret in enumerate(secrets):
                try:
                    payload = Webhook(secret).verify(delivery["body"], delivery["headers"])
                except Exception:
                    continue
                result.update(verified_with=n, type=payload.get("type"), data=payload.get("data"))
                break
            out.append(result)
        body = json.dumps(out).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


server = ThreadingHTTPServer(("127.0.0.1", int(os.environ.get("PORT", "0"))), Handler)
print(server.server_address[1], flush=True)
server.serve_forever()
