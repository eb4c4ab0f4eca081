"""An upstream for tests that run inside a network namespace (the transparent listener's): answers
every request with 200 and a JSON echo of its method, path and headers, over TLS on --port and
plain HTTP on --http-port, bound to --bind (`::` for IPv6 and IPv4).

Usage: echo_https.py --bind ADDR --port N --http-port M --cert CERT --key KEY
"""

import argparse
import http.server
import json
import socket
import socketserver
import ssl
import threading


class Echo(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def _answer(self):
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length).decode("utf-8", "replace") if length else ""
        echo = json.dumps({
            "method": self.command,
            "path": self.path,
            "headers": [[k.lower(), v] for k, v in self.headers.items()],
            "body": body,
        }).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(echo)))
        self.end_headers()
        self.wfile.write(echo)

    do_GET = do_POST = do_PUT = _answer

    def log_message(self, *args):
        pass


class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True


class Server6(Server):
    """`--bind ::` takes IPv6 and, dual-stack, IPv4 too."""

    address_family = socket.AF_INET6


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--bind", required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--http-port", type=int, required=True)
    p.add_argument("--cert", required=True)
    p.add_argument("--key", required=True)
    a = p.parse_args()
    kind = Server6 if ":" in a.bind else Server
    tls = kind((a.bind, a.port), Echo)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(a.cert, a.key)
    tls.socket = context.wrap_socket(tls.socket, server_side=True)
    plain = kind((a.bind, a.http_port), Echo)
    threading.Thread(target=plain.serve_forever, daemon=True).start()
    print("ready", flush=True)
    tls.serve_forever()


if __name__ == "__main__":
    main()
