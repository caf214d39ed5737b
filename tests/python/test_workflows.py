"""Realistic assistant workflows through the real server against the gateway simulator
(`ibkr-mcp sim`, HTTPS with a self-signed certificate), driven by the Python `mcp` SDK:
find a contract, quote it, read the portfolio, preview then place an order and answer IBKR's
questions (explicitly, and through elicitation), see the fill in the positions, and place and
cancel a working order. The simulator's control API shows what really reached the "gateway".
"""

from __future__ import annotations

import json

import anyio
from mcp import ClientSession, types
from mcp.client.streamable_http import streamable_http_client

ACCOUNT = "DU1234567"


def serve_on(start_server, sim, *flags):
    return start_server(
        "--gateway-url", sim.gateway_url, "--toolsets", "all", *flags,
        env={"IBKR_MCP_SESSION_KEEPALIVE": "true"},
    )


async def session_for(url, fn, elicitation_callback=None):
    async with streamable_http_client(url) as (read, write):
        async with ClientSession(read, write, elicitation_callback=elicitation_callback) as s:
            await s.initialize()
            return await fn(s)


def ok(result):
    assert not result.is_error, result.content[0].text
    return result.structured_content


def items(result):
    return ok(result)["items"]


def position(portfolio_items, conid):
    return next((p["position"] for p in portfolio_items if p["conid"] == conid), 0.0)


def test_find_quote_and_read_the_portfolio(start_server, sim):
    server = serve_on(start_server, sim)

    async def go(s):
        accounts = ok(await s.call_tool("list_accounts", {}))
        found = items(await s.call_tool("search_secdef", {"symbol": "AAPL"}))
        conid = found[0]["conid"]
        quote = items(await s.call_tool("get_market_data_snapshot", {"conids": str(conid), "fields": "31,84,86,55"}))
        positions = items(await s.call_tool("list_positions", {"accountId": ACCOUNT, "pageId": "0"}))
        summary = ok(await s.call_tool("get_portfolio_summary", {"accountId": ACCOUNT}))
        return accounts, conid, quote, positions, summary

    accounts, conid, quote, positions, summary = anyio.run(session_for, server.url, go)
    assert ACCOUNT in accounts["accounts"]
    assert str(conid) == "265598"
    # Prices in the first call, although the simulator's first answer per contract is empty.
    assert float(quote[0]["31"]) > 0 and quote[0]["55"] == "AAPL"
    assert any(p["conid"] == 265598 for p in positions)
    assert "netliquidation" in summary


def test_preview_place_answer_questions_and_see_the_fill(start_server, sim):
    server = serve_on(start_server, sim, "--allow-trading")
    before = next(a for a in sim.state()["accounts"] if a["id"] == ACCOUNT)
    order = {"conid": 265598, "orderType": "MKT", "side": "BUY", "quantity": 5, "tif": "DAY", "cOID": "e2e-buy-1"}
    body = {"orders": [order]}

    async def go(s):
        held = position(items(await s.call_tool("list_positions", {"accountId": ACCOUNT, "pageId": "0"})), 265598)
        preview = ok(await s.call_tool("get_order_preview", {"accountId": ACCOUNT, "body": body}))
        placed = await s.call_tool("place_orders", {"accountId": ACCOUNT, "body": body})
        assert placed.is_error, "the simulator asks about market orders"
        question = placed.structured_content["error"]["question"]
        confirmed = await s.call_tool(
            "reply_order_question", {"replyId": question["reply_id"], "body": {"confirmed": True}}
        )
        while confirmed.is_error and confirmed.structured_content["error"]["kind"] == "order_question":
            question = confirmed.structured_content["error"]["question"]
            confirmed = await s.call_tool(
                "reply_order_question", {"replyId": question["reply_id"], "body": {"confirmed": True}}
            )
        after = position(items(await s.call_tool("list_positions", {"accountId": ACCOUNT, "pageId": "0"})), 265598)
        return held, preview, placed, confirmed, after

    held, preview, placed, confirmed, after = anyio.run(session_for, server.url, go)
    assert "amount" in preview
    assert "o403" in placed.content[0].text or "o354" in placed.content[0].text
    confirmation = items(confirmed)
    assert confirmation[0]["order_id"]
    assert after == held + 5
    state = sim.state()
    booked = [o for o in state["orders"] if o["coid"] == "e2e-buy-1"]
    assert len(booked) == 1 and booked[0]["status"] == "Filled"
    assert state["counters"]["per_endpoint"]["POST /iserver/account/{accountId}/orders"] == 1
    cash_after = next(a for a in state["accounts"] if a["id"] == ACCOUNT)["cash"]["USD"]
    assert cash_after < before["cash"]["USD"]


def test_place_and_cancel_a_working_order(start_server, sim):
    server = serve_on(start_server, sim, "--allow-trading", "--auto-confirm-question-ids", "o163")
    sim.control("PUT", "/questions", {"mode": "chain", "message_ids": ["o163"]})
    quote_price = sim.control("GET", "/market/265598")["price"]
    low = round(quote_price * 0.8, 2)  # far below the market: it rests
    body = {"orders": [{"conid": 265598, "orderType": "LMT", "price": low, "side": "BUY",
                        "quantity": 2, "tif": "GTC", "cOID": "e2e-rest-1"}]}

    async def go(s):
        placed = items(await s.call_tool("place_orders", {"accountId": ACCOUNT, "body": body}))
        order_id = placed[0]["order_id"]
        live = ok(await s.call_tool("list_orders", {}))
        await anyio.sleep(5.5)  # IBKR allows one live-orders request per 5 s
        cancelled = ok(await s.call_tool("cancel_iserver_order", {"accountId": ACCOUNT, "orderId": str(order_id)}))
        return order_id, live, cancelled

    order_id, live, cancelled = anyio.run(session_for, server.url, go)
    assert any(str(o["orderId"]) == str(order_id) for o in live["orders"]), live
    assert str(cancelled["order_id"]) == str(order_id)
    booked = [o for o in sim.state()["orders"] if o["coid"] == "e2e-rest-1"]
    assert len(booked) == 1 and booked[0]["status"] == "Cancelled" and booked[0]["filled"] == 0


def test_questions_go_to_the_human_through_elicitation(start_server, sim):
    server = serve_on(start_server, sim, "--allow-trading")
    sim.control("PUT", "/questions", {"mode": "chain", "message_ids": ["o163", "o451"]})
    asked = []

    async def yes(context, params):
        asked.append(params.message)
        return types.ElicitResult(action="accept", content={"confirm": True})

    async def no(context, params):
        asked.append(params.message)
        return types.ElicitResult(action="decline")

    def order(coid):
        return {"accountId": ACCOUNT, "body": {"orders": [
            {"conid": 8314, "orderType": "MKT", "side": "BUY", "quantity": 1, "tif": "DAY", "cOID": coid}]}}

    async def place(s, coid):
        return await s.call_tool("place_orders", order(coid))

    confirmed = anyio.run(lambda: session_for(server.url, lambda s: place(s, "e2e-human-yes"), yes))
    assert not confirmed.is_error, confirmed.content[0].text
    assert len(asked) == 2 and "IBKR asks" in asked[0]
    text = "\n".join(c.text for c in confirmed.content)
    assert "confirmed by the user" in text

    declined = anyio.run(lambda: session_for(server.url, lambda s: place(s, "e2e-human-no"), no))
    assert declined.is_error and declined.structured_content["error"]["kind"] == "declined"
    booked = {o["coid"]: o for o in sim.state()["orders"]}
    assert "e2e-human-yes" in booked and "e2e-human-no" not in booked


def test_read_only_server_refuses_orders_and_the_simulator_sees_none(start_server, sim):
    server = serve_on(start_server, sim)

    async def go(s):
        tools = {t.name for t in (await s.list_tools()).tools}
        refused = await s.call_tool("place_orders", {"accountId": ACCOUNT, "body": {"orders": [
            {"conid": 265598, "orderType": "MKT", "side": "BUY", "quantity": 1}]}})
        return tools, refused

    tools, refused = anyio.run(session_for, server.url, go)
    assert "place_orders" not in tools and "cancel_iserver_order" not in tools
    assert refused.is_error and refused.structured_content["error"]["kind"] == "trading_disabled"
    counters = sim.state()["counters"]["per_endpoint"]
    assert "POST /iserver/account/{accountId}/orders" not in counters
    assert json.dumps(counters)  # the log is readable


def test_stateless_client_answers_questions_through_input_required(start_server, sim):
    """MCP 2026-07-28 has no server-to-client requests: the server returns an
    InputRequiredResult, the client asks its human and calls again; the order is sent once."""
    from mcp import Client

    server = serve_on(start_server, sim, "--allow-trading")
    sim.control("PUT", "/questions", {"mode": "chain", "message_ids": ["o163", "o451"]})
    asked = []

    async def yes(context, params):
        asked.append(params.message)
        return types.ElicitResult(action="accept", content={"confirm": True})

    order = {"accountId": ACCOUNT, "body": {"orders": [
        {"conid": 8314, "orderType": "MKT", "side": "BUY", "quantity": 1, "tif": "DAY", "cOID": "e2e-mrtr"}]}}

    async def go():
        async with Client(server.url, elicitation_callback=yes) as c:
            version = c.session.protocol_version
            return version, await c.call_tool("place_orders", order)

    version, result = anyio.run(go)
    assert version == "2026-07-28"
    assert not result.is_error, result.content[0].text
    assert len(asked) == 2 and "IBKR asks" in asked[0]
    state = sim.state()
    assert [o["coid"] for o in state["orders"]].count("e2e-mrtr") == 1
    assert state["counters"]["per_endpoint"]["POST /iserver/account/{accountId}/orders"] == 1


def test_a_previewed_live_order_is_confirmed_by_a_stateless_client_and_sent_once(start_server, gateway):
    """--require-preview with --confirm-live-orders and a 2026-07-28 client: the preview token is
    checked before the user is asked, used up only once they said yes, and the order goes out
    once (the client's second call brings the token again)."""
    from mcp import Client

    httpserver, base = gateway
    live = "U7654321"
    httpserver.expect_request("/v1/api/iserver/accounts", method="GET").respond_with_json(
        {"accounts": [live], "selectedAccount": live, "isPaper": False})
    httpserver.expect_request(f"/v1/api/iserver/account/{live}/orders/whatif", method="POST").respond_with_json(
        {"amount": {"amount": "189 USD", "commission": "1.00 USD", "total": "190 USD"}})
    httpserver.expect_oneshot_request(f"/v1/api/iserver/account/{live}/orders", method="POST").respond_with_json(
        [{"order_id": "77", "order_status": "Submitted"}])
    server = start_server("--gateway-url", base, "--toolsets", "all", "--allow-trading",
                          "--allow-live-trading", "--require-preview")
    asked = []

    async def yes(context, params):
        asked.append(params.message)
        return types.ElicitResult(action="accept", content={"confirm": True})

    order = {"accountId": live, "body": {"orders": [
        {"conid": 265598, "orderType": "LMT", "price": 150, "side": "BUY", "quantity": 1, "tif": "DAY"}]}}

    async def go():
        async with Client(server.url, elicitation_callback=yes) as c:
            preview = await c.call_tool("get_order_preview", order)
            note = next(b.text for b in preview.content if "previewToken" in b.text)
            token = note.split("previewToken ")[1].split()[0]
            placed = await c.call_tool("place_orders", {**order, "previewToken": token})
            again = await c.call_tool("place_orders", {**order, "previewToken": token})
            return placed, again

    placed, again = anyio.run(go)
    assert not placed.is_error, placed.content[0].text
    assert len(asked) == 1 and "LIVE" in asked[0], asked
    sent = [r for r, _ in httpserver.log if r.path.endswith(f"/{live}/orders") and r.method == "POST"]
    assert len(sent) == 1, sent
    # The token was used once: the same order again is refused before the user is asked.
    assert again.is_error and again.structured_content["error"]["rule"] == "preview", again.content[0].text
    assert len(asked) == 1
