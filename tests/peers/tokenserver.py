#!/usr/bin/env python3
"""Test-only Docker registry token server (https://distribution.github.io/distribution/spec/auth/token/).

NOT production code: it exists so integration tests can run the CNCF registry (`docker-registry`) with
`auth.token` against real clients (skopeo, dockerd, containerd, regauth). Runs with `.venv-moto/bin/python`
(needs `cryptography`, which tests/install-peers.sh installs).

Commands:
  keygen --out-dir DIR
      Writes DIR/signer.key (P-256, PKCS#8 PEM, 0600) and DIR/signer.crt (self-signed). The certificate is the
      registry's `auth.token.rootcertbundle`.
  serve --port PORT --key signer.key --cert signer.crt [--host 127.0.0.1] [--user NAME:PASS]...
        [--users-file FILE] [--service test-registry] [--issuer test-issuer] [--log FILE]
        [--anonymous pull|none] [--fields both|token|access_token]
      GET  /token?service=..&scope=..[&scope=..][&offline_token=true]   (Basic auth or anonymous)
      POST /token  grant_type=password|refresh_token (OAuth2 form, as containerd sends)
      Authenticated users get every requested action; anonymous clients get only `pull` on repositories
      (`--anonymous none`: nothing, so the registry answers them 401 like a private repository).
      Wrong credentials give 401. `--fields` picks which of `token` / `access_token` the JSON answer
      carries (default both). The token is an ES256 JWT whose header carries `x5c` = [signer cert].
      Each token request appends one line to --log (method, status, user, requested scopes, granted access),
      which tests count. Secrets are never logged.

--users-file: one `name:password` per line (plain text: this is a test peer).
--grants-file: JSON {"user": ["team-a/*", ...]}, re-read on every token request (so a test can revoke):
      a user named there gets only `pull`, and only on repositories matching one of its patterns
      (fnmatch); users not named there keep every action.
"""

import argparse
import base64
import datetime
import fnmatch
import hmac
import json
import os
import secrets
import sys
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import NameOID

TOKEN_TTL = 300


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def keygen(out_dir: str) -> None:
    os.makedirs(out_dir, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "regauth-test-token-signer")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    key_path = os.path.join(out_dir, "signer.key")
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    with open(os.path.join(out_dir, "signer.crt"), "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))


def parse_scope(scope: str):
    """`repository:test/busybox:pull,push` -> ("repository", "test/busybox", ["pull", "push"])."""
    typ, sep, rest = scope.partition(":")
    name, sep2, actions = rest.rpartition(":")
    if not sep or not sep2 or not typ or not name:
        return None
    return typ, name, [a for a in actions.split(",") if a]


class Issuer:
    def __init__(self, args):
        with open(args.key, "rb") as f:
            self.key = serialization.load_pem_private_key(f.read(), password=None)
        with open(args.cert, "rb") as f:
            cert = x509.load_pem_x509_certificate(f.read())
        self.x5c = [base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode("ascii")]
        self.service = args.service
        self.anonymous_pull = args.anonymous == "pull"
        self.issuer = args.issuer
        self.fields = args.fields
        self.users = {}
        for spec in args.user or []:
            self.add_user(spec)
        if args.users_file:
            with open(args.users_file, encoding="utf-8") as f:
                for line in f:
                    line = line.rstrip("\r\n")
                    if line and not line.startswith("#"):
                        self.add_user(line)
        self.refresh_tokens = {}
        self.lock = threading.Lock()
        self.log_file = open(args.log, "a", encoding="utf-8") if args.log else None
        self.grants_file = args.grants_file

    def grants(self):
        if not self.grants_file:
            return {}
        try:
            with open(self.grants_file, encoding="utf-8") as f:
                return json.load(f)
        except (OSError, ValueError):
            return {}

    def add_user(self, spec: str) -> None:
        name, sep, password = spec.partition(":")
        if not sep or not name:
            raise SystemExit(f"tokenserver: bad user entry (want NAME:PASSWORD) for user {name!r}")
        self.users[name] = password

    def check(self, user: str, password: str) -> bool:
        want = self.users.get(user)
        return want is not None and hmac.compare_digest(want.encode(), password.encode())

    def grant(self, user, scopes):
        access = []
        for scope in scopes:
            parsed = parse_scope(scope)
            if parsed is None:
                continue
            typ, name, actions = parsed
            if user is None:
                allowed = typ == "repository" and self.anonymous_pull
                actions = [a for a in actions if a == "pull"] if allowed else []
            else:
                grants = self.grants()
                if user in grants:
                    allowed = typ == "repository" and any(fnmatch.fnmatchcase(name, p) for p in grants[user])
                    actions = [a for a in actions if a == "pull"] if allowed else []
            if actions:
                access.append({"type": typ, "name": name, "actions": actions})
        return access

    def sign(self, user, access) -> dict:
        now = int(time.time())
        header = {"typ": "JWT", "alg": "ES256", "x5c": self.x5c}
        claims = {
            "iss": self.issuer,
            "sub": user or "",
            "aud": self.service,
            "exp": now + TOKEN_TTL,
            "nbf": now - 10,
            "iat": now,
            "jti": secrets.token_hex(16),
            "access": access,
        }
        signing_input = (
            b64url(json.dumps(header, separators=(",", ":")).encode())
            + "."
            + b64url(json.dumps(claims, separators=(",", ":")).encode())
        )
        der = self.key.sign(signing_input.encode("ascii"), ec.ECDSA(hashes.SHA256()))
        r, s = decode_dss_signature(der)
        token = signing_input + "." + b64url(r.to_bytes(32, "big") + s.to_bytes(32, "big"))
        issued = datetime.datetime.fromtimestamp(now, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        answer = {"expires_in": TOKEN_TTL, "issued_at": issued}
        # The spec lets a token server send `token`, `access_token` (OAuth2) or both; clients must take either.
        if self.fields in ("both", "token"):
            answer["token"] = token
        if self.fields in ("both", "access_token"):
            answer["access_token"] = token
        return answer

    def new_refresh_token(self, user: str) -> str:
        tok = secrets.token_urlsafe(24)
        with self.lock:
            self.refresh_tokens[tok] = user
        return tok

    def refresh_user(self, tok: str):
        with self.lock:
            return self.refresh_tokens.get(tok)

    def log(self, method, status, user, scopes, access) -> None:
        if self.log_file is None:
            return
        granted = ";".join(f"{a['type']}:{a['name']}:{','.join(a['actions'])}" for a in access) or "-"
        line = (
            f"{time.strftime('%H:%M:%S')} {method} status={status} user={user or '-'} "
            f"scopes={' '.join(scopes) or '-'} granted={granted}\n"
        )
        with self.lock:
            self.log_file.write(line)
            self.log_file.flush()


def make_handler(issuer: Issuer):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *_args):  # our own one-line log replaces the default access log
            pass

        def reply(self, status: int, body: dict, extra_headers=()) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for k, v in extra_headers:
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(data)

        def unauthorized(self, method, user, scopes) -> None:
            issuer.log(method, 401, user, scopes, [])
            self.reply(
                401,
                {"errors": [{"code": "UNAUTHORIZED", "message": "authentication required"}]},
                [("WWW-Authenticate", 'Basic realm="regauth-test-token"')],
            )

        def basic_user(self):
            """(user, ok): user is None for anonymous; ok is False for wrong/garbled credentials."""
            auth = self.headers.get("Authorization")
            if not auth:
                return None, True
            scheme, _, value = auth.partition(" ")
            if scheme.lower() != "basic":
                return None, False
            try:
                user, sep, password = base64.b64decode(value.strip(), validate=True).decode().partition(":")
            except (ValueError, UnicodeDecodeError):
                return None, False
            if not sep:
                return user, False
            return user, issuer.check(user, password)

        def do_GET(self):
            url = urllib.parse.urlsplit(self.path)
            if url.path != "/token":
                self.reply(404, {"errors": [{"code": "NOT_FOUND", "message": url.path}]})
                return
            q = urllib.parse.parse_qs(url.query)
            scopes = [s for v in q.get("scope", []) for s in v.split(" ") if s]
            user, ok = self.basic_user()
            if not ok:
                self.unauthorized("GET", user, scopes)
                return
            access = issuer.grant(user, scopes)
            body = issuer.sign(user, access)
            if user is not None and q.get("offline_token", [""])[0] == "true":
                body["refresh_token"] = issuer.new_refresh_token(user)
            issuer.log("GET", 200, user, scopes, access)
            self.reply(200, body)

        def do_POST(self):
            url = urllib.parse.urlsplit(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            form = urllib.parse.parse_qs(self.rfile.read(length).decode("utf-8", "replace"))
            if url.path != "/token":
                self.reply(404, {"errors": [{"code": "NOT_FOUND", "message": url.path}]})
                return
            scopes = [s for v in form.get("scope", []) for s in v.split(" ") if s]
            grant_type = form.get("grant_type", [""])[0]
            if grant_type == "password":
                user = form.get("username", [""])[0]
                if not issuer.check(user, form.get("password", [""])[0]):
                    self.unauthorized("POST", user, scopes)
                    return
            elif grant_type == "refresh_token":
                user = issuer.refresh_user(form.get("refresh_token", [""])[0])
                if user is None:
                    self.unauthorized("POST", None, scopes)
                    return
            else:
                issuer.log("POST", 400, None, scopes, [])
                self.reply(400, {"error": "unsupported_grant_type"})
                return
            access = issuer.grant(user, scopes)
            body = issuer.sign(user, access)
            if form.get("access_type", [""])[0] == "offline":
                body["refresh_token"] = issuer.new_refresh_token(user)
            issuer.log("POST", 200, user, scopes, access)
            self.reply(200, body)

    return Handler


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="Test-only Docker registry token server (ES256 JWT with x5c).")
    sub = p.add_subparsers(dest="cmd", required=True)
    k = sub.add_parser("keygen", help="write signer.key + signer.crt (the registry's rootcertbundle)")
    k.add_argument("--out-dir", required=True)
    s = sub.add_parser("serve", help="serve /token")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, required=True)
    s.add_argument("--key", required=True)
    s.add_argument("--cert", required=True)
    s.add_argument("--user", action="append", help="NAME:PASSWORD (repeatable)")
    s.add_argument("--users-file", help="file of NAME:PASSWORD lines")
    s.add_argument("--grants-file", help="JSON {user: [repository patterns]}, re-read per request")
    s.add_argument("--service", default="test-registry")
    s.add_argument("--issuer", default="test-issuer")
    s.add_argument("--log", help="append one line per token request to this file")
    s.add_argument("--anonymous", choices=["pull", "none"], default="pull", help="what anonymous clients may do")
    s.add_argument(
        "--fields",
        choices=["both", "token", "access_token"],
        default="both",
        help="which of `token` / `access_token` the answer carries",
    )
    args = p.parse_args(argv)
    if args.cmd == "keygen":
        keygen(args.out_dir)
        return 0
    server = ThreadingHTTPServer((args.host, args.port), make_handler(Issuer(args)))
    server.daemon_threads = True
    print(f"tokenserver: listening on http://{args.host}:{args.port}/token", file=sys.stderr, flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
