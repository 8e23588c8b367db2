#!/usr/bin/env python3
"""A webhook receiver for kiln's handoff tests, sharing no code with kiln.

    webhook_receiver.py ADDR DIR [--token T] [--fail-first N] [--always-fail NODE]

Listens on ADDR (host, port 0: a free port, printed as `port N`), saves each
POSTed body as DIR/NODE.N.json (NODE from the record), answers 503 to the
first N requests per node, always 503 for NODE given by --always-fail,
401 without the bearer token, and otherwise 200 with a ticket.
"""
import argparse
import json
import os
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

args = argparse.ArgumentParser()
args.add_argument("addr")
args.add_argument("dir")
args.add_argument("--token")
args.add_argument("--fail-first", type=int, default=0)
args.add_argument("--always-fail", action="append", default=[])
opts = args.parse_args()
seen = {}
lock = threading.Lock()


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *a):
        sys.stderr.write("receiver: " + (a[0] % a[1:]) + "\n")

    def answer(self, code, body):
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self):
        length = int(self.headers.get("Content-Length", "0"))
        body = self.rfile.read(length)
        if opts.token and self.headers.get("Authorization") != "Bearer " + opts.token:
            return self.answer(401, {"error": "bad token"})
        try:
            doc = json.loads(body)
            node = doc["record"]["node"]
        except Exception as e:  # noqa: BLE001
            return self.answer(400, {"error": str(e)})
        with lock:
            n = seen.get(node, 0) + 1
            seen[node] = n
        with open(os.path.join(opts.dir, f"{node}.{n}.json"), "wb") as f:
            f.write(body)
        if node in opts.always_fail or n <= opts.fail_first:
            return self.answer(503, {"error": "intake busy"})
        self.answer(200, {"ticket": f"T-{node}-{n}", "verdict": doc["record"]["verdict"]})


host, port = opts.addr.rsplit(":", 1)
server = ThreadingHTTPServer((host, int(port)), Handler)
print(f"port {server.server_address[1]}", flush=True)
server.serve_forever()
