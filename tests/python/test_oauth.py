"""`--auth oauth1`: IBKR's first-party OAuth 1.0a, against the simulator playing api.ibkr.com.

Not a circle: `IndependentClient` below computes everything (the decrypted "prepend", the
Diffie-Hellman challenge, the RSA-SHA256 token request, K's sign byte, the HMAC-SHA1 live
session token and its validation, HMAC-SHA256 request signatures) with the `cryptography`
package and Python's standard library from the same files the server reads, following the
facts file rather than our Rust code, and the simulator (whose checks use the Rust crate)
must accept it byte for byte and refuse its forgeries. The server is then driven by the
Python `mcp` SDK through a whole trading workflow with the token expiring mid-run, through a
proxy that tampers with or replays its signatures, and with a wrong key; every refusal must
come back as an actionable tool error, and no secret may reach a trace-level log.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import http.client
import http.server
import json
import secrets
import ssl
import subprocess
import threading
import time
import urllib.parse
from pathlib import Path

import anyio
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from mcp import ClientSession, types
from mcp.client.streamable_http import streamable_http_client

from conftest import BIN, free_port

ACCOUNT = "DU1234567"


# --- an independent OAuth 1.0a client --------------------------------------------------------


def pct(s: str) -> str:
    """Percent-encoding with the RFC 3986 unreserved set left alone."""
    return urllib.parse.quote(s, safe="-._~")


def base_string(method: str, url: str, params: dict[str, str], prepend: str = "") -> str:
    """IBKR's base string: query parameters merged into the sorted list, the URL without its
    query, the joined list percent-encoded once as a whole."""
    parts = urllib.parse.urlsplit(url)
    merged = dict(params)
    merged.update(urllib.parse.parse_qsl(parts.query, keep_blank_values=True))
    joined = "&".join(f"{k}={v}" for k, v in sorted(merged.items()))
    bare = f"{parts.scheme}://{parts.netloc}{parts.path}"
    return f"{prepend}{method}&{pct(bare)}&{pct(joined)}"


def java_bytes(k: int) -> bytes:
    """Java's BigInteger.toByteArray() for k > 0: a 0x00 in front when the top bit is set."""
    return k.to_bytes(k.bit_length() // 8 + 1, "big")


def dh_parameters(pem: str) -> tuple[int, int]:
    """(p, g) from `BEGIN DH PARAMETERS` (PKCS#3: SEQUENCE { INTEGER p, INTEGER g }), read
    here by hand: `cryptography` deprecates finite-field DH."""
    body = "".join(ln for ln in pem.splitlines() if ln and not ln.startswith("-----"))
    der = base64.b64decode(body)

    def tlv(at: int) -> tuple[int, int, int]:
        tag, length, at = der[at], der[at + 1], at + 2
        if length & 0x80:
            n = length & 0x7F
            length, at = int.from_bytes(der[at:at + n], "big"), at + n
        return tag, at, length

    tag, at, _ = tlv(0)
    assert tag == 0x30, "a SEQUENCE"
    values = []
    for _ in range(2):
        tag, at, length = tlv(at)
        assert tag == 0x02, "an INTEGER"
        values.append(int.from_bytes(der[at:at + length], "big"))
        at += length
    return values[0], values[1]


class IndependentClient:
    def __init__(self, creds: Path, base: str):
        self.base = base
        self.consumer_key = (creds / "consumer_key").read_text().strip()
        self.access_token = (creds / "access_token").read_text().strip()
        self.secret_b64 = (creds / "access_token_secret").read_text().strip()
        self.signing_key = serialization.load_pem_private_key(
            (creds / "private_signature.pem").read_bytes(), None)
        encryption = serialization.load_pem_private_key(
            (creds / "private_encryption.pem").read_bytes(), None)
        self.p, self.g = dh_parameters((creds / "dhparam.pem").read_text())
        self.secret = encryption.decrypt(base64.b64decode(self.secret_b64), padding.PKCS1v15())
        self.prepend = self.secret.hex()
        self.lst: bytes | None = None

    def oauth_params(self, method: str, consumer_key: str | None = None) -> dict[str, str]:
        return {
            "oauth_consumer_key": consumer_key or self.consumer_key,
            "oauth_nonce": secrets.token_hex(10),
            "oauth_signature_method": method,
            "oauth_timestamp": str(int(time.time())),
            "oauth_token": self.access_token,
        }

    @staticmethod
    def authorization(params: dict[str, str], signature: str, realm: str = "limited_poa") -> str:
        fields = {"realm": realm, **params, "oauth_signature": pct(signature)}
        return "OAuth " + ", ".join(f'{k}="{v}"' for k, v in fields.items())

    def send(self, method: str, url: str, headers: dict[str, str], body: bytes | None = None):
        parts = urllib.parse.urlsplit(url)
        if parts.scheme == "https":
            ctx = ssl.create_default_context()
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            conn = http.client.HTTPSConnection(parts.hostname, parts.port, context=ctx, timeout=30)
        else:
            conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        conn.request(method, target, body=body,
                     headers={"User-Agent": "independent-check", **headers})
        r = conn.getresponse()
        text = r.read().decode()
        conn.close()
        return r.status, (json.loads(text) if text.strip() else None)

    def live_session_token(self, signing_key=None, consumer_key=None, realm="limited_poa"):
        a = secrets.randbits(256)
        params = self.oauth_params("RSA-SHA256", consumer_key)
        params["diffie_hellman_challenge"] = format(pow(self.g, a, self.p), "x")
        url = f"{self.base}/oauth/live_session_token"
        text = base_string("POST", url, params, prepend=self.prepend)
        key = signing_key or self.signing_key
        signature = base64.b64encode(
            key.sign(text.encode(), padding.PKCS1v15(), hashes.SHA256())).decode()
        status, body = self.send("POST", url,
                                 {"Authorization": self.authorization(params, signature, realm)})
        if status != 200:
            return status, body
        k = pow(int(body["diffie_hellman_response"], 16), a, self.p)
        lst = hmac.new(java_bytes(k), self.secret, hashlib.sha1).digest()
        check = hmac.new(lst, self.consumer_key.encode(), hashlib.sha1).hexdigest()
        assert check == body["live_session_token_signature"], "the token validates"
        self.lst = lst
        return status, body

    def sign(self, method: str, url: str, signed_url: str | None = None) -> dict[str, str]:
        params = self.oauth_params("HMAC-SHA256")
        text = base_string(method, signed_url or url, params)
        signature = base64.b64encode(hmac.new(self.lst, text.encode(), hashlib.sha256).digest())
        return {"Authorization": self.authorization(params, signature.decode())}

    def call(self, method: str, path: str, body=None, headers=None):
        url = f"{self.base}{path}"
        data = None if body is None else json.dumps(body).encode()
        h = dict(headers or self.sign(method, url))
        if data is not None:
            h["Content-Type"] = "application/json"
        return self.send(method, url, h, data)


# --- the simulator in OAuth mode ---------------------------------------------------------------


class OAuthSim:
    def __init__(self, proc, port, scheme, creds, log_path):
        self.proc, self.port, self.scheme, self.creds, self.log_path = (
            proc, port, scheme, creds, log_path)

    @property
    def base(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}/v1/api"

    def control(self, method: str, path: str, body: dict | None = None):
        client = IndependentClient.__new__(IndependentClient)
        data = None if body is None else json.dumps(body).encode()
        status, reply = IndependentClient.send(
            client, method, f"{self.scheme}://127.0.0.1:{self.port}/sim{path}",
            {"Content-Type": "application/json"}, data)
        assert status == 200, (path, status, reply)
        return reply

    def stats(self) -> dict:
        return self.control("GET", "/oauth/stats")

    def server_flags(self) -> list[str]:
        c = self.creds
        return [
            "--auth", "oauth1", "--gateway-url", self.base,
            "--oauth-consumer-key", (c / "consumer_key").read_text().strip(),
            "--oauth-access-token-file", str(c / "access_token"),
            "--oauth-access-token-secret-file", str(c / "access_token_secret"),
            "--oauth-signature-key", str(c / "private_signature.pem"),
            "--oauth-encryption-key", str(c / "private_encryption.pem"),
            "--oauth-dh-params", str(c / "dhparam.pem"),
        ]


@pytest.fixture
def oauth_sim(tmp_path):
    started = []

    def start(plain_http: bool = False, pacing: bool = True) -> OAuthSim:
        port = free_port()
        creds = tmp_path / f"oauth-{port}"
        log_path = tmp_path / f"sim-{port}.log"
        args = [str(BIN), "sim", "--listen", f"127.0.0.1:{port}", "--seed", "7",
                "--oauth-dir", str(creds)]
        if plain_http:
            args.append("--plain-http")
        if not pacing:
            args += ["--pacing", "false"]
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        s = OAuthSim(proc, port, "http" if plain_http else "https", creds, log_path)
        started.append(s)
        deadline = time.monotonic() + 60
        while True:
            try:
                s.stats()
                return s
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"simulator did not start:\n{log_path.read_text()}")
                time.sleep(0.1)

    yield start
    for s in started:
        s.proc.terminate()
        try:
            s.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            s.proc.kill()


# --- 1. the independent client against the simulator ----------------------------------------


def test_an_independent_client_is_accepted_and_its_forgeries_refused(oauth_sim):
    sim = oauth_sim(pacing=False)
    c = IndependentClient(sim.creds, sim.base)
    assert len(c.prepend) == 64 and c.prepend == c.prepend.lower()
    assert c.p.bit_length() == 2048 and c.g == 2

    status, body = c.live_session_token()
    assert status == 200, body
    assert body["live_session_token_expiration"] > time.time() * 1000

    # With only a token: /portfolio works, /iserver has no bridge until ssodh/init.
    status, accounts = c.call("GET", "/portfolio/accounts")
    assert status == 200 and ACCOUNT in {a["id"] for a in accounts}, accounts
    status, body = c.call("GET", "/iserver/accounts")
    assert (status, body) == (400, {"error": "Bad Request: no bridge", "statusCode": 400})
    status, body = c.call("POST", "/iserver/auth/ssodh/init", {"publish": True, "compete": True})
    assert status == 200 and body["authenticated"] is True, body
    status, body = c.call("GET", "/iserver/accounts")
    assert status == 200 and ACCOUNT in body["accounts"], body

    # Query parameters are signed (IBKR's documented form): leaving them out is refused.
    path = "/iserver/marketdata/snapshot?conids=265598&fields=31,84"
    status, body = c.call("GET", path)
    assert status == 200, body
    url = f"{sim.base}{path}"
    bare = url.split("?")[0]
    status, body = c.call("GET", path, headers=c.sign("GET", url, signed_url=bare))
    assert status == 401, body

    # A tampered signature: one character changed.
    headers = c.sign("GET", f"{sim.base}/portfolio/accounts")
    auth = headers["Authorization"]
    at = auth.index('oauth_signature="') + len('oauth_signature="')
    flipped = "B" if auth[at] != "B" else "C"
    status, body = c.call("GET", "/portfolio/accounts",
                          headers={"Authorization": auth[:at] + flipped + auth[at + 1:]})
    assert status == 401 and body["error"].startswith("id: 3931, error: "), body
    # The untampered one is accepted, and the same header again is a reused nonce.
    assert c.call("GET", "/portfolio/accounts", headers=headers)[0] == 200
    status, body = c.call("GET", "/portfolio/accounts", headers=headers)
    assert status == 401 and "nonce" in body["error"], body

    # A token request signed with a key IBKR does not have, and an unknown consumer key.
    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    status, body = c.live_session_token(signing_key=stranger)
    assert status == 401, body
    status, body = c.live_session_token(consumer_key="NOTMYKEY1")
    assert (status, body) == (401, {"error": "id: 3931, error: invalid consumer",
                                    "statusCode": 401})
    status, body = c.live_session_token(realm="test_realm")
    assert (status, body) == (401, {"error": "id: 3931, error: invalid consumer",
                                    "statusCode": 401})

    stats = sim.stats()
    assert stats["tokens_issued"] == 1, stats
    assert stats["accepted"] == 6, stats
    assert stats["refused"]["bad_signature"] == 3, stats  # query left out, tampered, stranger key
    assert stats["refused"]["nonce_reused"] == 1, stats
    assert stats["refused"]["invalid_consumer"] == 2, stats
    assert stats["refused_total"] == 6, stats


# --- 2. the server, driven by the MCP SDK --------------------------------------------------------


async def _session(url, fn, elicitation_callback=None):
    async with streamable_http_client(url) as (read, write):
        async with ClientSession(read, write, elicitation_callback=elicitation_callback) as s:
            await s.initialize()
            return await fn(s)


def ok(result):
    assert not result.is_error, result.content[0].text
    return result.structured_content


def table(result):
    v = ok(result)
    return [dict(zip(v["columns"], row, strict=True)) for row in v["rows"]]


def secrets_of(creds: Path, c: IndependentClient) -> dict[str, str]:
    """What must never appear in a log: token, secret (all three forms), key material."""
    found = {
        "access token": c.access_token,
        "access token secret": c.secret_b64,
        "prepend": c.prepend,
    }
    for name in ("private_signature.pem", "private_encryption.pem"):
        lines = [ln for ln in (creds / name).read_text().splitlines() if not ln.startswith("-")]
        found[f"{name} line 2"] = lines[1]
    return found


def test_trading_workflow_over_oauth_survives_token_expiry_and_logs_no_secret(
        start_server, oauth_sim):
    sim = oauth_sim()
    server = start_server(*sim.server_flags(), "--toolsets", "default", "--allow-trading",
                          env={"IBKR_MCP_SESSION_KEEPALIVE": "true", "IBKR_MCP_LOG": "trace"})
    asked = []

    async def user_confirms(context, params):
        asked.append(params.message)
        return types.ElicitResult(action="accept", content={"confirm": True})

    async def go(s):
        out = {"calls": []}

        async def call(name, args):
            r = await s.call_tool(name, args)
            out["calls"].append((name, r))
            return r

        out["status_before"] = ok(await call("get_session_status", {}))
        out["summary"] = table(await call("get_account_summary", {}))
        out["quote"] = table(await call("get_price_snapshot", {"symbols": ["AAPL"]}))
        # IBKR ends the token mid-run; the next calls must not fail.
        out["expired"] = sim.control("POST", "/oauth/expire")
        out["positions"] = table(await call("get_account_positions", {"limit": 3}))
        # 5 % below last: IBKR asks whether the price is right (o163), the "user" confirms.
        out["order"] = ok(await call("place_order", {
            "account": ACCOUNT, "symbol": "AAPL", "side": "BUY", "quantity": 10,
            "type": "LMT", "offset_pct": -5}))
        order_id = out["order"]["rows"][0][0]
        out["cancel"] = table(await call("cancel_order", {"order_id": order_id}))
        out["status_after"] = ok(await call("get_session_status", {}))
        return out

    out = anyio.run(_session, server.url, go, user_confirms)
    for name, r in out["calls"]:
        assert not r.is_error, f"{name}: {r.content[0].text}"

    before, after = out["status_before"], out["status_after"]
    assert before["auth"]["mode"] == "oauth1" and before["auth"]["tokens_obtained"] == 1, before
    assert after["auth"]["tokens_obtained"] == 2 and after["auth"]["tokens_rejected"] == 1, after
    assert after["auth"]["last_refresh_error"] is None, after
    assert ACCOUNT in {a["account"] for a in out["summary"]}
    assert out["quote"][0]["last"] > 0
    assert out["expired"] == {"ok": True, "expired": True}
    assert asked and any("o163" in m or "price" in m.lower() for m in asked), asked
    order_id = out["order"]["rows"][0][0]
    orders = {str(o["order_id"]): o for o in sim.control("GET", "/state")["orders"]}
    assert orders[order_id]["status"] == "Cancelled", orders[order_id]

    stats = sim.stats()
    assert stats["tokens_issued"] == 2, stats
    assert stats["refused"]["expired_token"] >= 1, stats
    assert stats["refused_total"] == stats["refused"]["expired_token"], stats
    # After the new token the brokerage session was opened again before /iserver calls.
    log = sim.control("GET", "/requests")["entries"]
    paths = [(e["method"], e["path"], e["outcome"]) for e in log]
    refused_at = max(i for i, p in enumerate(paths) if p[2] == "oauth:expired_token")
    assert ("POST", "/iserver/auth/ssodh/init", "ok") in paths[refused_at:], paths[refused_at:]
    assert not any(p[2] == "no_bridge" for p in paths[refused_at:]), paths[refused_at:]

    text = server.log()
    assert "TRACE" in text, "the capture is at trace level"
    for what, value in secrets_of(sim.creds, IndependentClient(sim.creds, sim.base)).items():
        assert value not in text, f"the {what} is in the log"
    assert "oauth_signature" not in text and "OAuth realm" not in text


# --- 3. refusals surface as actionable errors ----------------------------------------------------


class Proxy:
    """Between the server and the simulator: passes requests on, or tampers with their
    signatures, or replays the first signed request seen for the same method and path."""

    def __init__(self, upstream_port: int):
        self.mode = "pass"
        self.recorded: dict[tuple[str, str], str] = {}
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _forward(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                headers = {("Authorization" if k.lower() == "authorization" else k): v
                           for k, v in self.headers.items()
                           if k.lower() not in ("connection", "content-length")}
                auth = headers.get("Authorization", "")
                key = (self.command, self.path)
                if proxy.mode == "pass" and "HMAC-SHA256" in auth:
                    proxy.recorded.setdefault(key, auth)
                elif proxy.mode == "tamper" and "oauth_signature=" in auth:
                    at = auth.index('oauth_signature="') + len('oauth_signature="')
                    headers["Authorization"] = (
                        auth[:at] + ("B" if auth[at] != "B" else "C") + auth[at + 1:])
                elif proxy.mode == "replay" and key in proxy.recorded:
                    headers["Authorization"] = proxy.recorded[key]
                conn = http.client.HTTPConnection("127.0.0.1", upstream_port, timeout=30)
                conn.request(self.command, self.path, body=body, headers=headers)
                r = conn.getresponse()
                data = r.read()
                conn.close()
                self.send_response(r.status)
                for k, v in r.getheaders():
                    if k.lower() not in ("transfer-encoding", "connection", "content-length"):
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_DELETE = do_PUT = _forward

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()


def assert_actionable(result, *must):
    assert result.is_error, result.content[0].text
    text = result.content[0].text
    for m in ("OAuth", "get_session_status", *must):
        assert m in text, f"{m!r} not in: {text}"
    return text


def test_tampered_replayed_and_wrong_key_signatures_are_refused_with_actionable_errors(
        start_server, oauth_sim, tmp_path):
    sim = oauth_sim(plain_http=True)
    proxy = Proxy(sim.port)
    try:
        flags = sim.server_flags()
        flags[flags.index("--gateway-url") + 1] = f"http://127.0.0.1:{proxy.port}/v1/api"
        server = start_server(*flags, "--toolsets", "default",
                              env={"IBKR_MCP_SESSION_KEEPALIVE": "true"})

        async def go(s):
            out = {}
            out["first"] = await s.call_tool("get_account_summary", {})
            proxy.mode = "tamper"
            out["tampered"] = await s.call_tool("get_price_snapshot", {"symbols": ["AAPL"]})
            out["tampered_stats"] = sim.stats()
            proxy.mode = "pass"
            proxy.recorded.clear()  # record requests signed with the token that is current now
            out["recovered"] = await s.call_tool("get_price_snapshot", {"symbols": ["AAPL"]})
            proxy.mode = "replay"
            out["replayed"] = await s.call_tool("get_price_snapshot", {"symbols": ["AAPL"]})
            out["replayed_stats"] = sim.stats()
            proxy.mode = "pass"
            out["status"] = await s.call_tool("get_session_status", {})
            return out

        out = anyio.run(_session, server.url, go)
    finally:
        proxy.close()

    ok(out["first"])
    # Refused on the request, then on the token request that followed (the proxy tampers
    # with every signature): either way the text says what IBKR answered and what to check.
    text = assert_actionable(out["tampered"], "401", "id: 3931", "check the OAuth settings")
    assert out["tampered_stats"]["refused"]["bad_signature"] >= 2, out["tampered_stats"]
    ok(out["recovered"])
    assert_actionable(out["replayed"], "401")
    assert out["replayed_stats"]["refused"]["nonce_reused"] >= 1, out["replayed_stats"]
    auth = ok(out["status"])["auth"]
    assert auth["tokens_rejected"] >= 2, auth

    # A signature key IBKR does not have: no token, so nothing is sent, and the error says so.
    stranger = tmp_path / "stranger.pem"
    stranger.write_bytes(rsa.generate_private_key(public_exponent=65537, key_size=2048)
                         .private_bytes(serialization.Encoding.PEM,
                                        serialization.PrivateFormat.PKCS8,
                                        serialization.NoEncryption()))
    flags = sim.server_flags()
    flags[flags.index("--oauth-signature-key") + 1] = str(stranger)
    before = sim.stats()["refused"]["bad_signature"]
    wrong = start_server(*flags, "--toolsets", "default",
                         env={"IBKR_MCP_SESSION_KEEPALIVE": "true"})

    async def go_wrong(s):
        return (await s.call_tool("get_account_summary", {}),
                await s.call_tool("get_session_status", {}))

    result, status = anyio.run(_session, wrong.url, go_wrong)
    text = assert_actionable(result, "Not sent", "live session token request", "signature key")
    assert sim.stats()["refused"]["bad_signature"] > before
    auth = ok(status)["auth"]
    assert auth["tokens_obtained"] == 0 and "401" in auth["last_refresh_error"], auth


def test_missing_or_malformed_oauth_settings_stop_the_server_with_their_names(tmp_path):
    bad = tmp_path / "bad.pem"
    bad.write_text("not a key")
    run = subprocess.run(
        [str(BIN), "serve", "--auth", "oauth1", "--oauth-signature-key", str(bad),
         "--oauth-dh-prime", "xyz", "--listen", f"127.0.0.1:{free_port()}"],
        capture_output=True, text=True, timeout=60,
        env={"PATH": "/usr/bin:/bin", "IBKR_MCP_AUDIT_LOG": str(tmp_path / "a.jsonl")})
    assert run.returncode != 0
    for name in ("IBKR_MCP_OAUTH_CONSUMER_KEY", "IBKR_MCP_OAUTH_ACCESS_TOKEN",
                 "IBKR_MCP_OAUTH_ACCESS_TOKEN_SECRET", "IBKR_MCP_OAUTH_ENCRYPTION_KEY",
                 "IBKR_MCP_OAUTH_SIGNATURE_KEY", "IBKR_MCP_OAUTH_DH_PRIME", "bad.pem"):
        assert name in run.stderr, f"{name} not in: {run.stderr}"
