"""The everyday requests a trader makes, answered by the default (task) tools through the real
server against the gateway simulator, driven by the Python `mcp` SDK: one call per request
(two for "what is my portfolio worth and what are my biggest positions"), answers checked
against what the simulator holds, and every structured result validated by the SDK against
the tool's output schema. The simulator's request log shows what reached the "gateway".
"""

from __future__ import annotations

import json
from datetime import datetime

import anyio
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client


def serve_default(start_server, sim, *flags):
    return start_server(
        "--gateway-url", sim.gateway_url, "--toolsets", "default", *flags,
        env={"IBKR_MCP_SESSION_KEEPALIVE": "true"},
    )


def table(result):
    """A task tool's table as one dict per row."""
    assert not result.is_error, result.content[0].text
    v = result.structured_content
    return [dict(zip(v["columns"], row, strict=True)) for row in v["rows"]]


def test_everyday_requests_each_in_one_call(start_server, sim):
    server = serve_default(start_server, sim)
    calls = []

    async def go(s):
        async def call(name, args):
            r = await s.call_tool(name, args)
            calls.append((name, args, r))
            return r

        tools = {t.name for t in (await s.list_tools()).tools}
        out = {"tools": tools}
        # 1. What is my portfolio worth, and what are my biggest positions?
        out["summary"] = table(await call("get_account_summary", {}))
        out["positions"] = table(await call("get_account_positions", {"limit": 3}))
        # 2. Quote three symbols.
        out["quotes"] = table(await call("get_price_snapshot", {"symbols": ["AAPL", "MSFT", "SPY"]}))
        # 3. An option chain around the money.
        chain = await call("get_option_data", {"symbol": "AAPL", "strikes": 3})
        out["chain"] = (chain.structured_content, table(chain))
        # 4. A month of daily bars.
        out["bars"] = (await call("get_price_history", {"symbol": "AAPL", "period": "1m", "bar": "1d"})).structured_content
        # 5. Today's top % gainers.
        out["gainers"] = table(await call("scan_market", {"scan": "top_gainers", "limit": 5}))
        # 6. This month's performance.
        out["mtd"] = table(await call("get_pa_performance_all_periods", {"period": "MTD"}))
        return out

    out = anyio.run(_session, server.url, go)
    state = sim.state()

    # No generated tool is needed for any of it: the default lists only task tools.
    assert "get_market_data_snapshot" not in out["tools"] and "get_account_summary" in out["tools"]
    assert len(calls) == 7
    for name, args, r in calls:
        assert not r.is_error, f"{name} {args}: {r.content[0].text}"

    accounts = {a["id"] for a in state["accounts"]}
    assert {a["account"] for a in out["summary"]} == accounts
    for a in out["summary"]:
        assert isinstance(a["net_liquidation"], (int, float)) and a["net_liquidation"] > 0
        assert isinstance(a["daily_pnl"], (int, float))

    sizes = [abs(p["notional"] if p["notional"] is not None else p["market_value"]) for p in out["positions"]]
    assert len(sizes) == 3 and sizes == sorted(sizes, reverse=True)

    assert [q["symbol"] for q in out["quotes"]] == ["AAPL", "MSFT", "SPY"]
    assert [q["conid"] for q in out["quotes"]] == [265598, 272093, 756733]
    for q in out["quotes"]:
        assert q["data_status"] == "live"
        assert q["bid"] <= q["last"] + 0.5 and q["ask"] >= q["bid"]
        assert abs(q["last"] - q["prior_close"] - q["change"]) < 0.02, q

    meta, rows = out["chain"]
    assert len(rows) == 6 and {r["right"] for r in rows} == {"C", "P"}
    price = meta["underlying_price"]
    strikes = sorted({r["strike"] for r in rows})
    assert strikes[0] <= price + 10 and strikes[-1] >= price - 10, (strikes, price)
    datetime.fromisoformat(meta["expiry"])
    for r in rows:
        assert r["iv"] > 1 and (0 <= r["delta"] <= 1 if r["right"] == "C" else -1 <= r["delta"] <= 0)

    bars = out["bars"]
    assert bars["columns"] == ["time", "open", "high", "low", "close", "volume"]
    assert 18 <= len(bars["rows"]) <= 31
    times = [datetime.fromisoformat(r[0].replace("Z", "+00:00")) for r in bars["rows"]]
    assert times == sorted(times) and all(t.tzinfo is not None for t in times)

    gains = [g["value"] for g in out["gainers"]]
    assert len(gains) == 5 and gains == sorted(gains, reverse=True)

    assert {r["period"] for r in out["mtd"]} == {"MTD"}
    assert {r["account"] for r in out["mtd"]} == accounts

    # What the calls cost the model, for the report (tokens are counted by the Rust test of
    # the same requests, which has the o200k tokenizer).
    text = sum(len(c.text) for _, _, r in calls for c in r.content)
    print(json.dumps({"calls": len(calls), "result_chars": text}))


def test_a_bad_symbol_is_an_actionable_error_and_nothing_is_quoted(start_server, sim):
    server = serve_default(start_server, sim)

    async def go(s):
        return await s.call_tool("get_price_snapshot", {"symbols": ["AAPL", "NOSUCHSYM", "ES Jan20"]})

    snapshot = "GET /iserver/marketdata/snapshot"
    before = sim.state()["counters"]["per_endpoint"].get(snapshot, 0)
    r = anyio.run(_session, server.url, go)
    assert r.is_error
    text = r.content[0].text
    assert "symbols[1]" in text and "NOSUCHSYM" in text
    assert "symbols[2]" in text and "listed: ES" in text
    assert "Fix them and call again" in text
    # AAPL resolved, but nothing was quoted: the model fixes the list and asks once.
    assert sim.state()["counters"]["per_endpoint"].get(snapshot, 0) == before


async def _session(url, fn):
    async with streamable_http_client(url) as (read, write):
        async with ClientSession(read, write) as s:
            await s.initialize()
            return await fn(s)
