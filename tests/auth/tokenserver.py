#!/usr/bin/env python3
"""A minimal Docker-registry token server for tests: Basic-authenticated GET /token issues
an RS256 JWT (signed with openssl, certificate in the x5c header) granting the scope asked.

    tokenserver.py PORT KEY.pem CERT.pem USER PASSWORD SERVICE ISSUER
"""
import base64
import http.server
import json
import os
import subprocess
import sys
import time
import urllib.parse

port, key, cert, user, password, service, issuer = sys.argv[1:8]


def b64(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def cert_der():
    pem = open(cert).read()
    body = "".join(l for l in pem.splitlines() if "CERTIFICATE" not in l)
    return body  # already standard base64 DER, as x5c wants


def token(scope):
    actions = []
    if scope:
        kind, name, acts = scope.split(":", 2)
        actions = [{"type": kind, "name": name, "actions": acts.split(",")}]
    now = int(time.time())
    header = {"alg": "RS256", "typ": "JWT", "x5c": [cert_der()]}
    claims = {"iss": issuer, "sub": user, "aud": service, "exp": now + 600, "nbf": now - 60,
              "iat": now, "jti": b64(os.urandom(12)), "access": actions}
    signing = b64(json.dumps(header).encode()) + "." + b64(json.dumps(claims).encode())
    sig = subprocess.run(["openssl", "dgst", "-sha256", "-sign", key], input=signing.encode(),
                         capture_output=True, check=True).stdout
    return signing + "." + b64(sig)


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        url = urllib.parse.urlparse(self.path)
        want = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
        if url.path != "/token" or self.headers.get("Authorization") != want:
            self.send_response(401)
            self.end_headers()
            return
        scope = urllib.parse.parse_qs(url.query).get("scope", [""])[0]
        body = json.dumps({"token": token(scope), "expires_in": 600}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


http.server.ThreadingHTTPServer(("127.0.0.1", int(port)), Handler).serve_forever()
