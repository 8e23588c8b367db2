#!/usr/bin/env python3
"""Static HTTPS Redfish server for one mockup folder (stdlib only).

    serve_mockup.py redfish-mockups/dmtf-public-rackmount1 [--port 0]

Serves `<dir>/redfish/v1/<path>/index.json` at GET `/redfish/v1/<path>`
(trailing slash optional), plus `/redfish`, and generates the two documents the
mockups do not carry: `/redfish/v1/$metadata` (CSDL EDMX) and
`/redfish/v1/odata` (OData service document). The generation rules are in
tests/interop/README.md; the Rust simulator implements the same ones.

Prints `listening on https://127.0.0.1:PORT` on stdout once it accepts
connections (with `--port 0` the port is picked by the OS). Basic auth with
any user/password (or any X-Auth-Token) is accepted; requests for resources
other than /redfish, the service root, $metadata and odata without one get 401.
Only GET and HEAD; everything else answers 405. `@Redfish.Copyright` (a
mockup-only annotation) is removed from the payloads.

A throwaway self-signed certificate for 127.0.0.1/localhost is made with the
`openssl` command at startup unless --cert/--key are given (or --http).

    serve_mockup.py DIR --print-metadata   # write $metadata to stdout and exit
    serve_mockup.py DIR --print-odata      # write the odata document and exit
"""

import argparse
import base64
import json
import os
import re
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ROOT = "/redfish/v1"
DMTF_SCHEMA_BASE = "http://redfish.dmtf.org/schemas/v1/"
TYPE_RE = re.compile(r"^#([A-Za-z0-9_]+)(?:\.(v\d+_\d+_\d+))?\.([A-Za-z0-9_]+)$")


def _version_key(ns):
    """Sort key for a versioned namespace `Name.vX_Y_Z`: numeric (X, Y, Z)."""
    return tuple(int(p) for p in ns.rsplit(".v", 1)[1].split("_"))


def collect_types(payload, out, in_oem=False):
    """Collects every @odata.type string in payload, skipping `Oem` subtrees."""
    if isinstance(payload, dict):
        odata_type = payload.get("@odata.type")
        if isinstance(odata_type, str) and not in_oem:
            out.add(odata_type)
        for key, value in payload.items():
            collect_types(value, out, in_oem or key == "Oem")
    elif isinstance(payload, list):
        for value in payload:
            collect_types(value, out, in_oem)


def tree_payloads(base):
    """Yields the parsed JSON of every index.json under base/redfish/v1."""
    top = os.path.join(base, "redfish", "v1")
    for dirpath, dirnames, filenames in os.walk(top):
        dirnames.sort()
        if "index.json" in filenames:
            with open(os.path.join(dirpath, "index.json"), encoding="utf-8") as f:
                yield json.load(f)


def generate_metadata(types, service_root_type):
    """Builds the $metadata CSDL document from the set of @odata.type values."""
    namespaces = {}  # schema name -> set of versioned namespaces
    for odata_type in types:
        m = TYPE_RE.match(odata_type)
        if not m:
            continue
        name, version = m.group(1), m.group(2)
        namespaces.setdefault(name, set())
        if version:
            namespaces[name].add(name + "." + version)
    m = TYPE_RE.match(service_root_type or "")
    root_version = m.group(2) if m and m.group(2) else "v1_0_0"
    namespaces.setdefault("ServiceRoot", set()).add("ServiceRoot." + root_version)

    order = ["ServiceRoot"] + sorted(n for n in namespaces if n != "ServiceRoot")
    lines = [
        '<?xml version="1.0" encoding="UTF-8"?>',
        '<edmx:Edmx xmlns:edmx="http://docs.oasis-open.org/odata/ns/edmx" Version="4.0">',
    ]
    for name in order:
        lines.append('  <edmx:Reference Uri="{}{}_v1.xml">'.format(DMTF_SCHEMA_BASE, name))
        lines.append('    <edmx:Include Namespace="{}"/>'.format(name))
        for ns in sorted(namespaces[name], key=_version_key):
            lines.append('    <edmx:Include Namespace="{}"/>'.format(ns))
        lines.append("  </edmx:Reference>")
    lines += [
        '  <edmx:Reference Uri="{}RedfishExtensions_v1.xml">'.format(DMTF_SCHEMA_BASE),
        '    <edmx:Include Namespace="RedfishExtensions.v1_0_0" Alias="Redfish"/>',
        "  </edmx:Reference>",
        "  <edmx:DataServices>",
        '    <Schema xmlns="http://docs.oasis-open.org/odata/ns/edm" Namespace="Service">',
        '      <EntityContainer Name="Service" Extends="ServiceRoot.{}.ServiceContainer"/>'.format(root_version),
        "    </Schema>",
        "  </edmx:DataServices>",
        "</edmx:Edmx>",
    ]
    return "\n".join(lines) + "\n"


def generate_odata(service_root):
    """Builds the OData service document from the service root's links."""
    value = [{"name": "Service", "kind": "Singleton", "url": ROOT + "/"}]
    for key, link in service_root.items():
        if key.startswith("@") or key in ("Links", "Oem"):
            continue
        if isinstance(link, dict) and set(link) == {"@odata.id"} and isinstance(link["@odata.id"], str):
            value.append({"name": key, "kind": "Singleton", "url": link["@odata.id"]})
    return {"@odata.context": ROOT + "/$metadata", "value": value}


class Mockup:
    def __init__(self, base):
        base = os.path.abspath(base)
        if not os.path.isfile(os.path.join(base, "redfish", "v1", "index.json")):
            raise SystemExit("serve_mockup.py: {} has no redfish/v1/index.json".format(base))
        self.base = base
        with open(os.path.join(base, "redfish", "v1", "index.json"), encoding="utf-8") as f:
            self.service_root = json.load(f)
        types = set()
        for payload in tree_payloads(base):
            collect_types(payload, types)
        self.metadata = generate_metadata(types, self.service_root.get("@odata.type")).encode()
        self.odata = json.dumps(generate_odata(self.service_root), indent=4).encode()

    def resource(self, path):
        """Returns the JSON bytes for a request path under /redfish/v1, or None."""
        rel = path[len(ROOT):].strip("/")
        parts = [p for p in rel.split("/") if p]
        if any(p in (".", "..") or "\\" in p for p in parts):
            return None
        file = os.path.join(self.base, "redfish", "v1", *parts, "index.json")
        if not os.path.isfile(file):
            return None
        with open(file, encoding="utf-8") as f:
            payload = json.load(f)
        if isinstance(payload, dict):
            payload.pop("@Redfish.Copyright", None)
        return json.dumps(payload, indent=4).encode()


def error_body(status, message):
    return json.dumps(
        {
            "error": {
                "code": "Base.1.8.GeneralError",
                "message": message,
                "@Message.ExtendedInfo": [],
            }
        },
        indent=4,
    ).encode()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "kiln-serve-mockup"
    sys_version = ""
    mockup = None  # set on the subclass
    verbose = False

    def log_message(self, fmt, *args):
        if self.verbose:
            sys.stderr.write("%s - %s\n" % (self.address_string(), fmt % args))

    def _send(self, status, body, content_type="application/json;charset=utf-8", extra=None):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("OData-Version", "4.0")
        self.send_header("Cache-Control", "no-cache")
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _authorized(self):
        auth = self.headers.get("Authorization", "")
        if auth.startswith("Basic "):
            try:
                return ":" in base64.b64decode(auth[6:].strip()).decode("utf-8", "replace")
            except ValueError:
                return False
        return bool(self.headers.get("X-Auth-Token"))

    def do_GET(self):
        path = urllib.parse.unquote(urllib.parse.urlsplit(self.path).path)
        norm = path.rstrip("/") or "/"
        if norm == "/redfish":
            return self._send(200, json.dumps({"v1": ROOT + "/"}).encode())
        if norm == ROOT + "/$metadata":
            return self._send(200, self.mockup.metadata, "application/xml;charset=utf-8")
        if norm == ROOT + "/odata":
            return self._send(200, self.mockup.odata)
        if norm != ROOT and not norm.startswith(ROOT + "/"):
            return self._send(404, error_body(404, "Not found: " + path))
        if norm != ROOT and not self._authorized():
            return self._send(
                401, error_body(401, "Authentication required"), extra={"WWW-Authenticate": 'Basic realm="Redfish"'}
            )
        body = self.mockup.resource(norm)
        if body is None:
            return self._send(404, error_body(404, "Resource not found: " + path))
        return self._send(200, body)

    do_HEAD = do_GET

    def _not_allowed(self):
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        self._send(405, error_body(405, "Read-only mockup"), extra={"Allow": "GET, HEAD"})

    do_POST = do_PATCH = do_PUT = do_DELETE = _not_allowed


def make_cert(tmpdir):
    openssl = shutil.which("openssl")
    if openssl is None:
        raise SystemExit(
            "serve_mockup.py: no `openssl` command to make a self-signed certificate; "
            "pass --cert/--key, or --http"
        )
    cert, key = os.path.join(tmpdir, "cert.pem"), os.path.join(tmpdir, "key.pem")
    subprocess.run(
        [openssl, "req", "-x509", "-nodes", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-keyout", key, "-out", cert, "-days", "2", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
        check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    return cert, key


def _stop(signum, frame):
    raise KeyboardInterrupt


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("dir", help="mockup folder holding redfish/v1/index.json")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0, help="0 picks a free port (default)")
    ap.add_argument("--cert", help="PEM certificate (default: throwaway self-signed)")
    ap.add_argument("--key", help="PEM private key for --cert")
    ap.add_argument("--http", action="store_true", help="plain HTTP, no TLS")
    ap.add_argument("--port-file", help="write the chosen port to this file once listening")
    ap.add_argument("--verbose", action="store_true", help="log each request to stderr")
    ap.add_argument("--print-metadata", action="store_true", help="print $metadata and exit")
    ap.add_argument("--print-odata", action="store_true", help="print the odata document and exit")
    args = ap.parse_args()

    mockup = Mockup(args.dir)
    if args.print_metadata or args.print_odata:
        sys.stdout.buffer.write(mockup.metadata if args.print_metadata else mockup.odata + b"\n")
        return

    handler = type("MockupHandler", (Handler,), {"mockup": mockup, "verbose": args.verbose})
    server = ThreadingHTTPServer((args.host, args.port), handler)
    server.daemon_threads = True
    scheme = "http"
    with tempfile.TemporaryDirectory(prefix="kiln-mockup-tls-") as tmpdir:
        if not args.http:
            cert, key = (args.cert, args.key) if args.cert else make_cert(tmpdir)
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(cert, key)
            server.socket = ctx.wrap_socket(server.socket, server_side=True)
            scheme = "https"
        port = server.server_address[1]
        if args.port_file:
            tmp = args.port_file + ".tmp"
            with open(tmp, "w") as f:
                f.write("%d\n" % port)
            os.replace(tmp, args.port_file)
        signal.signal(signal.SIGTERM, _stop)
        print("listening on {}://{}:{}".format(scheme, args.host, port), flush=True)
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass
        finally:
            server.server_close()


if __name__ == "__main__":
    main()
