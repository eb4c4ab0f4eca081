"""A deliberately hostile HTTPS upstream for keyswap's leak tests (SPEC §8).

It reflects the secret it receives (header `x-token`) through the encoders real server frameworks
use, stores it for later requests, and hides it in the parts of an answer a proxy may forget: the
status line's reason phrase, header names, a compressed body, ranges. Each answer is logged, with
exactly what was sent, to the file given by --log (one JSON object per line), so a test can check
that none of it reached the client. Python's own encoders are the real thing here (json, urllib,
html, base64); the PHP, Go and Gson JSON escapers are written out by their documented rules.

Usage: reflector.py --cert CERT --key KEY --port-file FILE --log FILE
"""

import argparse
import base64
import gzip
import html
import json
import quopri
import re
import ssl
import sys
import urllib.parse
import xml.sax.saxutils
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

STORED = {}


def lower_hex(s):
    return re.sub(r"%[0-9A-F]{2}", lambda m: m.group(0).lower(), s)


def go_json(v):
    # encoding/json: HTML-safe by default, non-ASCII kept.
    s = json.dumps(v, ensure_ascii=False)
    for c, e in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026")):
        s = s.replace(c, e)
    return s


def gson_json(v):
    s = json.dumps(v, ensure_ascii=False)
    for c, e in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"), ("=", "\\u003d"), ("'", "\\u0027")):
        s = s.replace(c, e)
    return s


def php_json(v):
    # json_encode: escapes "/" and non-ASCII (lower-case hex).
    return json.dumps(v).replace("/", "\\/")


def dotnet_json(v):
    # System.Text.Json's default JavaScriptEncoder: HTML-sensitive characters, + and ` and
    # non-ASCII as upper-case \uXXXX.
    out = []
    for c in v:
        if c in "<>&'\"+`" or ord(c) > 126:
            out.append("\\u%04X" % ord(c))
        elif c == "\\":
            out.append("\\\\")
        else:
            out.append(c)
    return '"' + "".join(out) + '"'


def php_json_hex_tag_amp(v):
    s = php_json(v)
    for c, e in (("<", "\\u003C"), (">", "\\u003E"), ("&", "\\u0026")):
        s = s.replace(c, e)
    return s


def java_urlencoder(v):
    return urllib.parse.quote_plus(v, safe="*").replace("~", "%7E")


def js_encode_uri_component(v):
    return urllib.parse.quote(v, safe="!~*'()")


def encodings(v):
    """Every spelling, by name: what a framework would put in a page, a JSON document or a URL."""
    b = v.encode()
    out = {
        "raw": v,
        "json_python": json.dumps(v),
        "json_unicode": json.dumps(v, ensure_ascii=False),
        "json_upper_hex": re.sub(r"\\u([0-9a-f]{4})", lambda m: "\\u" + m.group(1).upper(), go_json(v)),
        "json_php": php_json(v),
        "json_go": go_json(v),
        "json_gson": gson_json(v),
        "json_document": json.dumps({"received": {"token": v}}),
        "json_dotnet": dotnet_json(v),
        "json_php_hex_tag_amp": php_json_hex_tag_amp(v),
        "quote_twice": urllib.parse.quote(urllib.parse.quote(v, safe=""), safe=""),
        "jwt_php_json": base64.urlsafe_b64encode(('{"k":' + php_json(v) + "}").encode()).decode().rstrip("="),
        "html_of_json": html.escape(json.dumps(v)),
        "quoted_printable": quopri.encodestring(v.encode()).decode().strip(),
        "quote": urllib.parse.quote(v, safe=""),
        "quote_path": urllib.parse.quote(v),
        "quote_plus": urllib.parse.quote_plus(v),
        "quote_lower": lower_hex(urllib.parse.quote(v, safe="")),
        "java_urlencoder": java_urlencoder(v),
        "js_encodeuricomponent": js_encode_uri_component(v),
        "urlencode_form": urllib.parse.urlencode({"token": v, "x": "1"}),
        "html_escape": html.escape(v),
        "html_text": html.escape(v, quote=False),
        "xml_escape": xml.sax.saxutils.escape(v, {'"': "&quot;", "'": "&apos;"}),
        "html_numeric": "".join("&#%d;" % ord(c) if c in "&<>\"'" else c for c in v),
        "html_hex": "".join("&#x%x;" % ord(c) if c in "&<>\"'" else c for c in v),
        "html_go": html.escape(v).replace("&quot;", "&#34;").replace("&#x27;", "&#39;").replace("+", "&#43;"),
    }
    for prefix in (b"", b"u", b"us", b"user:", b"Bearer "):
        name = prefix.decode().strip(":").strip() or "none"
        out["base64_" + name] = base64.b64encode(prefix + b).decode()
        out["base64url_" + name] = base64.urlsafe_b64encode(prefix + b).decode().rstrip("=")
    return out


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def secret(self):
        return self.headers.get("x-token", "")

    def answer(self, status, reason, headers, body, sent):
        with open(self.server.log_path, "a") as log:
            log.write(json.dumps({"path": self.path, "sent": sent, "request_headers": dict(self.headers)}) + "\n")
        self.send_response(status, reason)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def do_GET(self):
        self.route()

    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        self.route()

    def route(self):
        path = self.path.split("?")[0]
        v = self.secret()
        if path == "/store":
            STORED["token"] = v
            return self.answer(200, "OK", [], b"stored\n", {})
        if path == "/stored":
            v = STORED.get("token", "")
        if path in ("/reflect", "/stored"):
            sent = encodings(v)
            body = "".join("%s\t%s\n" % kv for kv in sent.items()).encode()
            headers = [("X-Reflected", v), ("X-Reflected-B64", sent["base64_none"]),
                       ("X-Reflected-Json", sent["json_go"])]
            return self.answer(200, "OK " + v, headers, body, sent)
        if path == "/name":
            # The secret as a header name (frameworks that turn keys into headers) and a reason.
            return self.answer(200, "Token " + v, [("X-" + v, "1")], b"named\n", {"name": v})
        if path == "/gzip":
            body = gzip.compress(("token=" + STORED.get("token", v)).encode())
            return self.answer(200, "OK", [("Content-Encoding", "gzip")], body, {"gzip": v})
        if path == "/range":
            if "stored" in self.path:
                v = STORED.get("token", "")
            whole = ("token=" + v).encode()
            rng = self.headers.get("Range")
            if rng and rng.startswith("bytes="):
                start, _, end = rng[6:].partition("-")
                part = whole[int(start): int(end) + 1 if end else None]
                return self.answer(206, "Partial Content", [], part, {"range": rng})
            return self.answer(200, "OK", [], whole, {"raw": v})
        self.answer(404, "Not Found", [], b"", {})


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--cert", required=True)
    p.add_argument("--key", required=True)
    p.add_argument("--port-file", required=True)
    p.add_argument("--log", required=True)
    a = p.parse_args()
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.log_path = a.log
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(a.cert, a.key)
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    with open(a.port_file + ".tmp", "w") as f:
        f.write(str(server.server_address[1]))
    import os
    os.rename(a.port_file + ".tmp", a.port_file)
    server.serve_forever()


if __name__ == "__main__":
    sys.exit(main())
