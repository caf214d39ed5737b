"""Faults a real deployment meets, through the real binary and the Python `mcp` SDK (issue 10):
a disk that fills up under the audit log (items 6), closing a session (item 15), a traversal
payload from a prompt injection (item 1), and the kill switch thrown from another terminal
(item 11).
"""

from __future__ import annotations

import json
import logging
import os
import ssl
import subprocess
import time
import urllib.request

import anyio
import pytest
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client

from conftest import BIN, Server, free_port, wait_http

ACCOUNT = "DU1234567"


async def session_for(url, fn):
    async with streamable_http_client(url) as (read, write):
        async with ClientSession(read, write) as s:
            await s.initialize()
            return await fn(s)


def sim_state(gateway_url: str) -> dict:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    url = gateway_url.replace("/v1/api", "/sim/state")
    with urllib.request.urlopen(url, context=ctx, timeout=10) as r:
        return json.loads(r.read())


def start_limited(tmp_path, kib: int, *flags: str) -> Server:
    """`serve --demo` with files limited to `kib` KiB (RLIMIT_FSIZE, as a full disk would stop
    writes mid-line); SIGXFSZ ignored so a write fails with EFBIG instead of killing it."""
    port = free_port()
    log_path = tmp_path / f"server-{port}.log"
    cmd = " ".join([
        f"ulimit -f {kib};", "trap '' XFSZ;", "exec", str(BIN), "serve", "--demo",
        "--listen", f"127.0.0.1:{port}", *flags,
    ])
    env = {**os.environ, "IBKR_MCP_LOG": "ibkr_mcp=info", "IBKR_MCP_TOOLSETS": "all",
           "IBKR_MCP_KILL_SWITCH_FILE": str(tmp_path / "HALT")}
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(["bash", "-c", cmd], stdout=log, stderr=subprocess.STDOUT, env=env)
    server = Server(proc, port, log_path)
    wait_http(f"{server.base}/healthz", proc, log_path)
    return server


ORDER_CALLS = {
    # The generated tool, as IBKR's document has it ...
    "place_orders": {"accountId": ACCOUNT, "body": {"orders": [
        {"conid": 265598, "side": "BUY", "orderType": "LMT", "price": 50, "tif": "DAY",
         "quantity": 1}]}},
    # ... and the task tool, which plans the same call through the same write path.
    "place_order": {"account": ACCOUNT, "symbol": "265598", "side": "BUY", "type": "LMT",
                    "limit_price": 50, "quantity": 1},
}


@pytest.mark.parametrize("tool", sorted(ORDER_CALLS))
def test_a_full_disk_stops_orders_before_they_are_sent_and_leaves_no_half_line(tmp_path, tool):
    audit = tmp_path / "audit.jsonl"
    server = start_limited(
        tmp_path, 8, "--allow-trading", "--audit-log", str(audit),
        "--auto-confirm-question-ids", "o163,o354,o383,o403,o451",
    )
    try:
        async def go(s):
            status = (await s.call_tool("get_session_status", {})).structured_content
            outcomes = []
            for _ in range(30):
                r = await s.call_tool(tool, ORDER_CALLS[tool])
                kind = (r.structured_content or {}).get("error", {}).get("kind") if r.is_error else "ok"
                outcomes.append((kind, r.content[0].text))
                if kind == "audit_unavailable" and len(outcomes) > 2 and outcomes[-2][0] == "audit_unavailable":
                    break
            return status["gateway_url"], outcomes

        gateway_url, outcomes = anyio.run(session_for, server.url, go)
        # The demo simulator lives in the server's process: read what it booked before stopping.
        booked = [o for o in sim_state(gateway_url)["orders"] if o["account"] == ACCOUNT]
    finally:
        server.stop()
    kinds = [k for k, _ in outcomes]
    assert "ok" in kinds, outcomes
    assert kinds[-1] == "audit_unavailable", outcomes
    refusal = outcomes[-1][1]
    assert "Not sent" in refusal and "IBKR_MCP_AUDIT_LOG" in refusal, refusal
    raw = audit.read_bytes()
    assert 0 < len(raw) <= 8 * 1024
    assert raw.endswith(b"\n"), raw[-200:]
    lines = [json.loads(line) for line in raw.decode().splitlines()]  # every line is whole JSON
    # (a task tool's call is recorded as `place_order/place_orders`)
    intents = [line for line in lines if line.get("phase") == "intent" and line["tool"].endswith("place_orders")]
    # Every order the gateway booked had its intent on disk first; the refused ones reached nothing.
    assert len(booked) == kinds.count("ok"), (booked, outcomes)
    assert len(booked) <= len(intents), (len(booked), len(intents))


def test_closing_a_session_draws_no_termination_warning_from_the_python_sdk(start_server, gateway, caplog):
    _, base = gateway
    server = start_server("--gateway-url", base)

    async def go(s):
        return len((await s.list_tools()).tools)

    with caplog.at_level(logging.DEBUG):
        assert anyio.run(session_for, server.url, go) > 0
    assert "Session termination failed" not in caplog.text, caplog.text


def test_a_traversal_payload_from_a_prompt_injection_reaches_nothing(start_server, sim):
    server = start_server("--gateway-url", sim.gateway_url, "--toolsets", "all", "--allow-trading",
                          env={"IBKR_MCP_SESSION_KEEPALIVE": "true"})
    before = sim.state()["counters"]["per_endpoint"]

    async def go(s):
        return [
            await s.call_tool("search_dynamic_accounts", {"searchPattern": "..\\..\\..\\logout"}),
            await s.call_tool("get_order_status", {"orderId": "..\\..\\marketdata\\unsubscribeall"}),
            await s.call_tool("cancel_iserver_order", {"accountId": "DU1234567", "orderId": "..\\..\\DU7654321\\order\\1"}),
        ]

    results = anyio.run(session_for, server.url, go)
    for r in results:
        assert r.is_error and r.structured_content["error"]["kind"] == "invalid_arguments", r
    after = sim.state()
    assert after["session"]["logged_in"] and after["session"]["authenticated"]
    for endpoint in ("POST /logout", "GET /logout", "GET /iserver/marketdata/unsubscribeall",
                     "DELETE /iserver/account/{accountId}/order/{orderId}"):
        assert after["counters"]["per_endpoint"].get(endpoint, 0) == before.get(endpoint, 0), endpoint


def test_the_kill_switch_thrown_from_another_terminal_stops_orders_at_once(tmp_path, sim, start_server):
    switch = tmp_path / "HALT-switch"
    server = start_server("--gateway-url", sim.gateway_url, "--allow-trading",
                          env={"IBKR_MCP_SESSION_KEEPALIVE": "true",
                               "IBKR_MCP_KILL_SWITCH_FILE": str(switch)})
    order = {"accountId": ACCOUNT, "body": {"orders": [
        {"conid": 265598, "side": "BUY", "orderType": "LMT", "price": 50, "tif": "DAY", "quantity": 1}]}}
    halt = subprocess.run([str(BIN), "halt", "--reason", "leaving for lunch"],
                          env={**os.environ, "IBKR_MCP_KILL_SWITCH_FILE": str(switch)},
                          capture_output=True, text=True, timeout=30)
    assert halt.returncode == 0, halt.stderr
    before = len(sim.state()["orders"])

    async def go(s):
        refused = await s.call_tool("place_orders", order)
        status = (await s.call_tool("get_session_status", {})).structured_content
        return refused, status

    refused, status = anyio.run(session_for, server.url, go)
    assert refused.is_error and refused.structured_content["error"]["rule"] == "kill_switch"
    assert "leaving for lunch" in refused.content[0].text
    assert status["kill_switch"]["engaged"] is True
    assert len(sim.state()["orders"]) == before
    resume = subprocess.run([str(BIN), "resume"],
                            env={**os.environ, "IBKR_MCP_KILL_SWITCH_FILE": str(switch)},
                            capture_output=True, text=True, timeout=30)
    assert resume.returncode == 0 and "lifted" in resume.stdout
    time.sleep(0.1)
    status = anyio.run(session_for, server.url,
                       lambda s: s.call_tool("get_session_status", {}))
    assert status.structured_content["kill_switch"]["engaged"] is False
