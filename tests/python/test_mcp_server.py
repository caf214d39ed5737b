"""The MCP server driven by the official Python `mcp` SDK against a mock gateway on loopback.

Covers both streamable HTTP protocol generations (2025-11-25 with sessions, 2026-07-28 without)
and stdio, the tool inventory, tool calls across toolsets whose arguments must arrive where
IBKR's document puts them, and bad arguments that must never reach the gateway.
"""

from __future__ import annotations

import json
import subprocess
import urllib.error
import urllib.request

import anyio
import pytest
from mcp import Client, ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamable_http_client
from werkzeug import Response

from conftest import BIN

ALL = ("--toolsets", "all", "--allow-trading", "--allow-question-suppression")


def catalog() -> list[dict]:
    out = subprocess.run([str(BIN), "tools", "--format", "json"], check=True, capture_output=True)
    return json.loads(out.stdout)


async def with_session(url: str, fn):
    async with streamable_http_client(url) as (read, write):
        async with ClientSession(read, write) as session:
            init = await session.initialize()
            return init, await fn(session)


def run(coro_fn, *args):
    return anyio.run(coro_fn, *args)


def test_initialize_over_http_lists_the_default_tools_and_explains_the_workflow(start_server, gateway):
    _, base = gateway
    server = start_server("--gateway-url", base, "--toolsets", "default")

    async def go(session):
        return await session.list_tools()

    init, tools = run(with_session, server.url, go)
    assert init.protocol_version == "2025-11-25"
    assert init.server_info.name == "ibkr-mcp"
    assert "get_price_snapshot" in init.instructions and "search_contracts" in init.instructions
    assert "read-only" in init.instructions
    names = {t.name for t in tools.tools}
    # The default is the task toolset: what a trader asks, one call each.
    expected = {t["name"] for t in catalog() if t["read_only"] and t["toolset"] == "tasks"}
    assert names == expected
    assert {"get_account_summary", "get_price_snapshot", "get_option_data"} <= names
    assert "place_orders" not in names and "list_orders" not in names
    for t in tools.tools:
        # 2020-12 is MCP's default dialect: no `$schema` line repeated in every tool.
        assert "$schema" not in t.input_schema
        assert t.annotations.read_only_hint is True
        assert t.output_schema and t.output_schema.get("properties"), t.name


def test_all_toolsets_with_trading_list_95_ibkr_tools_with_annotations(start_server, gateway):
    _, base = gateway
    server = start_server("--gateway-url", base, *ALL)

    async def go(session):
        return await session.list_tools()

    _, tools = run(with_session, server.url, go)
    by_name = {t.name: t for t in tools.tools}
    # Every trading operation of the pinned document, plus the server's own tools.
    tasks = [t for t in catalog() if t["toolset"] in ("tasks", "live")]
    assert len(tools.tools) == 95 + len(tasks) and "get_session_status" in by_name
    assert len([t for t in catalog() if t["operation_id"]]) == 95
    # POSTs that only read are read-only; a cancel is destructive. Hints equal to MCP's
    # defaults are left out (absent destructiveHint means destructive, absent
    # idempotentHint means not idempotent).
    assert by_name["get_order_preview"].annotations.read_only_hint is True
    assert by_name["get_contract_rules"].annotations.read_only_hint is True
    assert by_name["cancel_iserver_order"].annotations.read_only_hint is not True
    assert by_name["cancel_iserver_order"].annotations.destructive_hint is not False
    assert not by_name["place_orders"].annotations.idempotent_hint
    assert by_name["create_iserver_watchlist"].annotations.destructive_hint is False


# One call per line: tool, arguments, expected request (method, path, query, json body), reply.
CALLS = [
    ("get_auth_status", {}, ("POST", "/iserver/auth/status", None, {}),
     {"authenticated": True, "connected": True, "competing": False}),
    ("list_accounts", {}, ("GET", "/iserver/accounts", None, None),
     {"accounts": ["DU1234567"], "selectedAccount": "DU1234567", "isPaper": True}),
    ("get_brokerage_account_summary", {"accountId": "DU1234567"},
     ("GET", "/iserver/account/DU1234567/summary", None, None), {"accountType": "DEMO"}),
    ("list_positions", {"accountId": "DU1234567", "pageId": "0", "sort": "name", "direction": "a"},
     ("GET", "/portfolio/DU1234567/positions/0", {"sort": "name", "direction": "a"}, None),
     [{"conid": 265598, "position": 10.0}]),
    ("search_secdef", {"symbol": "AAPL", "secType": "STK"},
     ("GET", "/iserver/secdef/search", {"symbol": "AAPL", "secType": "STK"}, None),
     [{"conid": "265598", "symbol": "AAPL"}]),
    ("get_contract_info", {"conid": 265598},
     ("GET", "/iserver/contract/265598/info", None, None), {"con_id": 265598, "symbol": "AAPL"}),
    ("get_market_data_snapshot", {"conids": "265598", "fields": "31,84,86"},
     ("GET", "/iserver/marketdata/snapshot", {"conids": "265598", "fields": "31,84,86,6509"}, None),
     [{"conid": 265598, "31": "189.10"}]),
    ("get_market_data_history", {"conid": "265598", "period": "1w", "bar": "1d", "outsideRth": False},
     ("GET", "/iserver/marketdata/history",
      {"conid": "265598", "period": "1w", "bar": "1d", "outsideRth": "false"}, None),
     {"symbol": "AAPL", "data": [{"o": 1, "c": 2, "h": 3, "l": 0.5, "v": 10, "t": 1700000000000}]}),
    ("list_orders", {"filters": "Submitted,Filled"},
     ("GET", "/iserver/account/orders", {"filters": "Submitted,Filled"}, None),
     {"orders": [], "snapshot": True}),
    ("get_order_preview",
     {"accountId": "DU1234567",
      "body": {"orders": [{"conid": 265598, "orderType": "MKT", "side": "BUY", "quantity": 1, "tif": "DAY"}]}},
     ("POST", "/iserver/account/DU1234567/orders/whatif", None,
      {"orders": [{"conid": 265598, "orderType": "MKT", "side": "BUY", "quantity": 1, "tif": "DAY"}]}),
     {"amount": {"commission": "1.00 USD"}}),
    ("list_alerts", {"accountId": "DU1234567"},
     ("GET", "/iserver/account/DU1234567/alerts", None, None), []),
    ("list_watchlists", {"SC": "USER_WATCHLIST"},
     ("GET", "/iserver/watchlists", {"SC": "USER_WATCHLIST"}, None),
     {"data": {"user_lists": []}, "action": "content", "MID": "1"}),
    ("get_scanner_results",
     {"body": {"instrument": "STK", "type": "TOP_PERC_GAIN", "location": "STK.US.MAJOR", "filter": []}},
     ("POST", "/iserver/scanner/run", None,
      {"instrument": "STK", "type": "TOP_PERC_GAIN", "location": "STK.US.MAJOR", "filter": []}),
     {"contracts": []}),
    ("get_fyi_unread_count", {}, ("GET", "/fyi/unreadnumber", None, None), {"BN": 4}),
    ("cancel_iserver_order", {"accountId": "DU1234567", "orderId": "1234"},
     ("DELETE", "/iserver/account/DU1234567/order/1234", None, None),
     {"msg": "Request was submitted", "order_id": 1234, "conid": 265598, "account": "DU1234567"}),
]


def test_tools_across_toolsets_send_arguments_where_the_document_says(start_server, gateway):
    httpserver, base = gateway
    for _, _, (method, path, query, body), reply in CALLS:
        kw = {"method": method}
        if query is not None:
            kw["query_string"] = query
        if body is not None:
            kw["json"] = body
        httpserver.expect_oneshot_request(f"/v1/api{path}", **kw).respond_with_json(reply)
    server = start_server("--gateway-url", base, *ALL)
    toolsets = {t["name"]: t["toolset"] for t in catalog()}

    async def go(session):
        results = []
        for name, arguments, _, _ in CALLS:
            results.append(await session.call_tool(name, arguments))
        return results

    _, results = run(with_session, server.url, go)
    for (name, _, _, reply), result in zip(CALLS, results):
        assert not result.is_error, f"{name}: {result.content}"
        expected = reply if isinstance(reply, dict) else {"items": reply}
        assert result.structured_content == expected, name
        assert json.loads(result.content[0].text) == expected, name
    httpserver.check_assertions()
    assert len(httpserver.log) == len(CALLS)
    assert len({toolsets[c[0]] for c in CALLS}) >= 8


def test_bad_arguments_are_tool_errors_and_nothing_is_sent(start_server, gateway):
    httpserver, base = gateway
    server = start_server("--gateway-url", base, *ALL)
    bad = [
        ("get_market_data_snapshot", {"fields": "31"}, "conids"),
        ("get_contract_info", {"conid": "265598", "extra": 1}, "`extra`: unknown argument"),
        ("place_orders", {"accountId": "DU1", "body": {"orders": [{"conid": "AAPL", "side": "BUY", "orderType": "MKT", "quantity": 1}]}},
         "body.orders[0].conid"),
        ("get_market_data_history", {"conid": "1", "period": "1d", "bar": "1h", "outsideRth": "sometimes"}, "outsideRth"),
    ]

    async def go(session):
        return [await session.call_tool(name, args) for name, args, _ in bad]

    _, results = run(with_session, server.url, go)
    for (name, _, words), result in zip(bad, results):
        assert result.is_error, name
        text = result.content[0].text
        assert words in text and "nothing was sent" in text, text
        assert result.structured_content["error"]["kind"] == "invalid_arguments"
    assert httpserver.log == []


def test_unknown_tool_is_a_protocol_error(start_server, gateway):
    _, base = gateway
    server = start_server("--gateway-url", base)

    async def go(session):
        with pytest.raises(Exception) as e:
            await session.call_tool("no_such_tool", {})
        return str(e.value)

    _, message = run(with_session, server.url, go)
    assert "unknown tool" in message


def test_client_negotiating_2026_07_28_is_served_without_sessions(start_server, gateway):
    httpserver, base = gateway
    httpserver.expect_request("/v1/api/iserver/accounts", method="GET").respond_with_json(
        {"accounts": ["DU7654321"], "selectedAccount": "DU7654321"}
    )
    server = start_server("--gateway-url", base)

    async def go():
        async with Client(server.url) as client:
            version = client.session.protocol_version
            tools = await client.list_tools()
            result = await client.call_tool("list_accounts", {})
            return version, tools, result

    version, tools, result = run(go)
    assert version == "2026-07-28"
    assert any(t.name == "list_accounts" for t in tools.tools)
    assert not result.is_error
    assert result.structured_content["selectedAccount"] == "DU7654321"


def test_stdio_transport_serves_the_same_tools(gateway):
    httpserver, base = gateway
    httpserver.expect_request("/v1/api/portfolio/accounts", method="GET").respond_with_json(
        [{"id": "DU1234567", "accountId": "DU1234567", "currency": "USD"}]
    )
    params = StdioServerParameters(
        command=str(BIN),
        args=["serve", "--transport", "stdio", "--gateway-url", base, "--toolsets", "tasks,portfolio"],
        env={"IBKR_MCP_LOG": "ibkr_mcp=info", "IBKR_MCP_SESSION_KEEPALIVE": "false"},
    )

    async def go():
        async with stdio_client(params) as (read, write):
            async with ClientSession(read, write) as session:
                init = await session.initialize()
                tools = await session.list_tools()
                result = await session.call_tool("list_portfolio_accounts", {})
                return init, tools, result

    init, tools, result = run(go)
    assert init.server_info.name == "ibkr-mcp"
    assert "list_portfolio_accounts" in {t.name for t in tools.tools}
    assert not result.is_error
    assert result.structured_content == {"items": [{"id": "DU1234567", "accountId": "DU1234567", "currency": "USD"}]}


def test_mcp_path_with_trailing_slash_and_health_endpoints(start_server, gateway):
    httpserver, base = gateway
    httpserver.expect_request("/v1/api/iserver/auth/status", method="POST").respond_with_json(
        {"authenticated": True, "connected": True, "competing": False}
    )
    server = start_server("--gateway-url", base)

    async def go(session):
        return await session.list_tools()

    _, tools = run(with_session, server.url + "/", go)
    assert tools.tools
    with urllib.request.urlopen(f"{server.base}/healthz") as r:
        assert json.load(r)["status"] == "ok"
    with urllib.request.urlopen(f"{server.base}/readyz") as r:
        ready = json.load(r)
        assert r.status == 200 and ready["ready"] is True


def test_readyz_is_503_with_a_reason_when_the_session_is_not_authenticated(start_server, gateway):
    httpserver, base = gateway
    httpserver.expect_request("/v1/api/iserver/auth/status", method="POST").respond_with_json(
        {"authenticated": False, "connected": True, "competing": False}
    )
    server = start_server("--gateway-url", base)
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(f"{server.base}/readyz")
    assert e.value.code == 503
    body = json.load(e.value)
    assert body["ready"] is False and "ssodh/init" in body["reason"]


def test_server_starts_and_lists_tools_while_the_gateway_is_down(start_server):
    server = start_server("--gateway-url", "http://127.0.0.1:9/v1/api")

    async def go(session):
        tools = await session.list_tools()
        result = await session.call_tool("list_accounts", {})
        return tools, result

    _, (tools, result) = run(with_session, server.url, go)
    assert len(tools.tools) > 10
    assert result.is_error
    assert "http://127.0.0.1:9/v1/api" in result.content[0].text
    assert result.structured_content["error"]["kind"] == "gateway_unreachable"


def test_foreign_host_header_is_refused(start_server, gateway):
    _, base = gateway
    server = start_server("--gateway-url", base)
    req = urllib.request.Request(
        server.url,
        data=b'{"jsonrpc":"2.0","id":1,"method":"ping"}',
        headers={"Host": "evil.example", "Content-Type": "application/json",
                 "Accept": "application/json, text/event-stream"},
        method="POST",
    )
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(req)
    assert e.value.code == 403


def test_gateway_failure_reaches_the_model_as_an_actionable_error(start_server, gateway):
    httpserver, base = gateway
    httpserver.expect_request("/v1/api/iserver/accounts").respond_with_response(
        Response("not authenticated", status=401)
    )
    server = start_server("--gateway-url", base, "--gateway-login-url", "https://localhost:5000/")

    async def go(session):
        return await session.call_tool("list_accounts", {})

    _, result = run(with_session, server.url, go)
    assert result.is_error
    assert "log in at https://localhost:5000/" in result.content[0].text
