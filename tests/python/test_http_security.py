"""The locked-down MCP endpoint, seen from outside: off-loopback needs a token, tokens and
Host/Origin are checked, bodies are bounded in size and time, slow clients are cut off, and
no secret (token, gateway cookie, full account id) reaches the logs or tool results."""

from __future__ import annotations

import json
import socket
import subprocess
import time
import urllib.error
import urllib.request

import anyio
import httpx2
import pytest
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client
from werkzeug import Response

from conftest import BIN, free_port

TOKEN = "t0k3n-" + "x7" * 20  # 46 characters
INIT = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
    "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}}).encode()
MCP_HEADERS = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}


def post(url, data=INIT, headers=None):
    req = urllib.request.Request(url, data=data, headers={**MCP_HEADERS, **(headers or {})}, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.read().decode(errors="replace")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(errors="replace")


def test_non_loopback_listen_without_a_token_refuses_to_start():
    port = free_port()
    out = subprocess.run([str(BIN), "serve", "--listen", f"0.0.0.0:{port}"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode != 0
    assert "IBKR_MCP_AUTH_TOKEN" in out.stderr and "--insecure-no-auth" in out.stderr


def test_insecure_override_starts_and_warns(gateway, tmp_path):
    _, base = gateway
    port = free_port()
    log = tmp_path / "insecure.log"
    with open(log, "wb") as f:
        proc = subprocess.Popen([str(BIN), "serve", "--listen", f"0.0.0.0:{port}", "--insecure-no-auth",
                                 "--gateway-url", base, "--session-keepalive", "false"],
                                stdout=f, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while "MCP endpoint" not in log.read_text():
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        assert "INSECURE" in log.read_text()
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_bearer_token_is_required_and_checked(start_server, gateway):
    httpserver, base = gateway
    httpserver.expect_request("/v1/api/portfolio/accounts").respond_with_json([{"id": "DU1234567"}])
    server = start_server("--gateway-url", base, env={"IBKR_MCP_AUTH_TOKEN": TOKEN})
    status, body = post(server.url)
    assert status == 401 and "Bearer" in body
    status, _ = post(server.url, headers={"Authorization": "Bearer " + TOKEN[:-1] + "y"})
    assert status == 401
    # Health needs no token (container health checks); readiness does.
    with urllib.request.urlopen(f"{server.base}/healthz") as r:
        assert r.status == 200
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(f"{server.base}/readyz")
    assert e.value.code == 401

    async def go():
        client = httpx2.AsyncClient(headers={"Authorization": f"Bearer {TOKEN}"})
        async with streamable_http_client(server.url, http_client=client) as (read, write):
            async with ClientSession(read, write) as s:
                await s.initialize()
                return await s.call_tool("list_portfolio_accounts", {})

    result = anyio.run(go)
    assert not result.is_error
    assert TOKEN not in server.log()


def test_foreign_origin_is_refused_and_allowed_origins_pass(start_server, gateway):
    _, base = gateway
    server = start_server("--gateway-url", base, "--allowed-origins", "http://localhost:6274")
    status, body = post(server.url, headers={"Origin": "https://evil.example"})
    assert status == 403 and "Origin" in body
    status, _ = post(server.url, headers={"Origin": "http://localhost:6274"})
    assert status == 200
    status, _ = post(server.url)  # non-browser clients send no Origin
    assert status == 200


def test_oversized_bodies_are_refused(start_server, gateway):
    _, base = gateway
    server = start_server("--gateway-url", base, "--max-request-bytes", "4096")
    big = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "ping", "params": {"pad": "x" * 10000}}).encode()
    status, body = post(server.url, data=big)
    assert status == 413 and "max-request-bytes" in body


def test_slow_clients_are_cut_off(start_server, gateway):
    _, base = gateway
    server = start_server("--gateway-url", base, "--client-timeout", "1")
    # Headers that never finish: the server closes the connection.
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
        s.sendall(b"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
        start = time.monotonic()
        data = s.recv(1024)  # hyper closes a connection whose headers time out, answering nothing
        assert time.monotonic() - start < 9
        assert data == b"", data[:200]
    # A body that never finishes: 408.
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
        s.sendall(b"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                  b"Accept: application/json, text/event-stream\r\nContent-Length: 500\r\n\r\n{\"jsonrpc\"")
        reply = s.recv(4096)
        assert reply.startswith(b"HTTP/1.1 408"), reply[:200]


def test_no_secret_reaches_logs_or_results(start_server, gateway):
    httpserver, base = gateway
    cookie = "SBID=c00k1e-s3cr3t-v4lue"
    httpserver.expect_request("/v1/api/iserver/accounts").respond_with_response(Response(
        json.dumps({"accounts": ["DU1234567"], "selectedAccount": "DU1234567"}),
        headers={"Set-Cookie": f"{cookie}; Path=/; Secure", "Content-Type": "application/json"}))
    httpserver.expect_request("/v1/api/iserver/account/DU1234567/summary").respond_with_json(
        {"accountcode": {"value": "DU1234567"}})
    # The most verbose logging there is.
    server = start_server("--gateway-url", base,
                          env={"IBKR_MCP_AUTH_TOKEN": TOKEN, "IBKR_MCP_LOG": "trace"})

    async def go():
        client = httpx2.AsyncClient(headers={"Authorization": f"Bearer {TOKEN}"})
        async with streamable_http_client(server.url, http_client=client) as (read, write):
            async with ClientSession(read, write) as s:
                await s.initialize()
                a = await s.call_tool("list_accounts", {})
                b = await s.call_tool("get_brokerage_account_summary", {"accountId": "DU1234567"})
                return a, b

    a, b = anyio.run(go)
    post(server.url, headers={"Authorization": "Bearer wrong-token"})  # a refused attempt, logged
    log = server.log()
    assert "get_brokerage_account_summary" in log, log[-2000:]  # the log did capture the calls
    for secret in [TOKEN, "c00k1e-s3cr3t-v4lue", "DU1234567"]:
        assert secret not in log, f"{secret!r} leaked into the log"
    for r in (a, b):
        assert "c00k1e" not in json.dumps(r.model_dump(mode="json"))
