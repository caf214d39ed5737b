"""Live events through the official Python `mcp` SDK: resource subscriptions fed by IBKR's
WebSocket, against `serve --demo` (the simulator plays IBKR's side of the socket; its `/sim/ws`
statistics are the independent witness of what the server subscribed).

Both protocol generations: `resources/subscribe` on 2025-11-25 sessions, `subscriptions/listen`
on 2026-07-28.
"""

from __future__ import annotations

import json
import re
import ssl
import time
import urllib.request

import anyio
import pytest
from mcp import Client, ClientSession
from mcp.client.streamable_http import streamable_http_client
import mcp.types as types

ACCOUNT = "DU1234567"
AAPL = 265598
DEMO = {"IBKR_MCP_SESSION_KEEPALIVE": "true", "IBKR_MCP_TOOLSETS": "default,live"}

# The 2025-11-25 methods are deprecated in the SDK (2026-07-28 replaces them), not gone.
pytestmark = pytest.mark.filterwarnings("ignore:resources/")


def run(fn, *args):
    return anyio.run(fn, *args)


class Demo:
    def __init__(self, server):
        self.server = server
        deadline = time.monotonic() + 30
        while True:
            m = re.search(r"control=(\S+)/sim", server.log())
            if m:
                self.sim = m.group(1)
                break
            assert time.monotonic() < deadline, server.log()
            time.sleep(0.1)

    def control(self, method: str, path: str, body: dict | None = None):
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.sim + path, method=method, data=data,
                                     headers={"content-type": "application/json"})
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        with urllib.request.urlopen(req, context=ctx, timeout=10) as r:
            raw = r.read()
        return json.loads(raw) if raw else None

    def ws(self) -> dict:
        return self.control("GET", "/sim/ws")

    def price(self, conid: int) -> float:
        return self.control("GET", f"/sim/market/{conid}")["price"]

    def set_price(self, conid: int, price: float) -> None:
        self.control("PUT", f"/sim/market/{conid}", {"price": price})


@pytest.fixture
def demo(start_server):
    def start(*flags: str, env: dict | None = None) -> tuple:
        server = start_server("--demo", *flags, env={**DEMO, **(env or {})})
        return server, Demo(server)
    return start


class Notes:
    """Collects `notifications/resources/updated` of a 2025-11-25 session, with arrival times."""

    def __init__(self):
        self.updates: list[tuple[float, str]] = []
        self.event = anyio.Event()

    async def __call__(self, message):
        if isinstance(message, types.ResourceUpdatedNotification):
            self.updates.append((time.monotonic(), str(message.params.uri)))
            self.event.set()
            self.event = anyio.Event()

    def of(self, uri: str) -> list[float]:
        return [t for t, u in self.updates if u == uri]

    async def wait(self, pred, timeout: float = 15.0):
        with anyio.fail_after(timeout):
            while not pred():
                await self.event.wait()


async def read(s, uri: str) -> dict:
    r = await s.read_resource(uri)
    return json.loads(r.contents[0].text)


def rows(table: dict) -> list[dict]:
    return [dict(zip(table["columns"], r)) for r in table["rows"]]


async def eventually(fn, timeout: float = 10.0, step: float = 0.1):
    with anyio.fail_after(timeout):
        while True:
            v = fn()
            if v:
                return v
            await anyio.sleep(step)


def test_orders_subscription_sees_submitted_then_filled_then_the_fill(demo):
    server, sim = demo("--allow-trading", "--live-coalesce-ms", "100")
    notes = Notes()

    async def go():
        async with streamable_http_client(server.url) as (r, w):
            async with ClientSession(r, w, message_handler=notes) as s:
                init = await s.initialize()
                assert init.capabilities.resources.subscribe is True
                await s.subscribe_resource("ibkr://orders")
                await s.subscribe_resource("ibkr://trades")
                await eventually(lambda: sim.ws()["active"].get("sor") == 1)
                before = rows((await read(s, "ibkr://trades"))["trades"])
                last = sim.price(AAPL)
                placed = await s.call_tool("place_order", {
                    "account": ACCOUNT, "symbol": "AAPL", "side": "BUY", "type": "LMT",
                    "limit_price": round(last * 0.99, 2), "quantity": 3})
                assert not placed.is_error, placed.content[0].text
                order_id = placed.structured_content["rows"][0][0]
                # Submitted: a notification, and the resource says so.
                await notes.wait(lambda: len(notes.of("ibkr://orders")) >= 1)
                seen = []
                async def statuses():
                    book = await read(s, "ibkr://orders")
                    assert book["source"] == "stream"
                    mine = [c for c in rows(book["changes"]) if c["order_id"] == order_id]
                    seen.append([c["status"] for c in mine])
                    return mine
                with anyio.fail_after(10):
                    while not any(c["status"] == "Submitted" for c in await statuses()):
                        await anyio.sleep(0.1)
                n_orders = len(notes.of("ibkr://orders"))
                n_trades = len(notes.of("ibkr://trades"))
                sim.set_price(AAPL, round(last * 0.97, 2))
                await notes.wait(lambda: len(notes.of("ibkr://orders")) > n_orders)
                with anyio.fail_after(10):
                    while not any(c["status"] == "Filled" for c in await statuses()):
                        await anyio.sleep(0.1)
                mine = await statuses()
                # In order: Submitted first, then Filled, with increasing sequence numbers.
                assert [c["status"] for c in mine] == ["Submitted", "Filled"], mine
                assert mine[0]["seq"] < mine[1]["seq"]
                assert mine[1]["filled"] == 3 and mine[1]["remaining"] == 0
                order = [o for o in rows((await read(s, "ibkr://orders"))["orders"])
                         if o["order_id"] == order_id]
                assert order and order[0]["status"] == "Filled"
                # Then the fill, in ibkr://trades, with its own notification.
                await notes.wait(lambda: len(notes.of("ibkr://trades")) > n_trades)
                after = rows((await read(s, "ibkr://trades"))["trades"])
                new = [t for t in after if t not in before]
                assert [(t["order_id"], t["symbol"], t["size"]) for t in new] == [
                    (order_id, "AAPL", 3)], new
                assert new[0]["price"] <= round(last * 0.99, 2)
                return seen

    run(go)


def test_quote_listen_gets_at_least_three_coalesced_updates(demo):
    """2026-07-28: `subscriptions/listen`. The simulator moves prices every 500 ms; with a
    1.2 s coalescing window the notifications come no closer than that, and each read gives
    the latest quote from the stream."""
    server, sim = demo("--live-coalesce-ms", "1200")

    async def go():
        async with Client(server.url) as client:
            assert client.session.protocol_version == "2026-07-28"
            times, quotes = [], []
            async with client.listen(resource_subscriptions=["ibkr://quote/AAPL"]) as sub:
                assert list(sub.honored.resource_subscriptions) == ["ibkr://quote/AAPL"]
                with anyio.fail_after(20):
                    async for event in sub:
                        assert event.uri == "ibkr://quote/AAPL"
                        times.append(time.monotonic())
                        r = await client.read_resource("ibkr://quote/AAPL")
                        quotes.append(json.loads(r.contents[0].text))
                        if len(times) >= 4:
                            break
            return times, quotes

    times, quotes = run(go)
    gaps = [b - a for a, b in zip(times, times[1:])]
    assert len(times) >= 4
    # Coalesced: the simulator changes the price every 0.5 s, the server tells at most every 1.2 s.
    assert min(gaps) >= 0.9, gaps
    streamed = [q for q in quotes if q.get("source") == "stream"]
    assert len(streamed) >= 3, quotes
    assert all(q["conid"] == AAPL and isinstance(q["last"], float) for q in streamed)
    assert len({q["updated"] for q in streamed}) >= 3, streamed
    # The listen ended: so did the IBKR subscription.
    deadline = time.monotonic() + 10
    while sim.ws()["active"].get(f"smd+{AAPL}") and time.monotonic() < deadline:
        time.sleep(0.1)
    assert f"smd+{AAPL}" not in sim.ws()["active"]


def test_socket_drop_reconnects_resyncs_and_loses_no_final_state(demo):
    server, sim = demo("--allow-trading", "--live-coalesce-ms", "50")
    notes = Notes()

    async def go():
        async with streamable_http_client(server.url) as (r, w):
            async with ClientSession(r, w, message_handler=notes) as s:
                await s.initialize()
                await s.subscribe_resource("ibkr://orders")
                await eventually(lambda: sim.ws()["active"].get("sor") == 1)
                last = sim.price(AAPL)
                placed = await s.call_tool("place_order", {
                    "account": ACCOUNT, "symbol": "AAPL", "side": "BUY", "type": "LMT",
                    "limit_price": round(last * 0.99, 2), "quantity": 2})
                assert not placed.is_error, placed.content[0].text
                order_id = placed.structured_content["rows"][0][0]
                status = (await s.call_tool("get_session_status", {})).structured_content
                before = status["live_events"]
                # The socket drops, and the order fills while it is being reopened.
                assert sim.control("POST", "/sim/ws/drop")["dropped"] == 1
                sim.set_price(AAPL, round(last * 0.97, 2))

                async def filled():
                    book = await read(s, "ibkr://orders")
                    o = [x for x in rows(book["orders"]) if x["order_id"] == order_id]
                    return book, o and o[0]["status"] == "Filled"
                with anyio.fail_after(20):
                    while True:
                        book, done = await filled()
                        if done and book["source"] == "stream":
                            break
                        await anyio.sleep(0.1)
                status = (await s.call_tool("get_session_status", {})).structured_content
                return before, status["live_events"], book, order_id, sim.ws()

    before, after, book, order_id, stats = run(go)
    assert after["state"] == "ready"
    assert after["connections"] == before["connections"] + 1
    assert after["gaps"] >= before["gaps"] + 1
    assert after["resyncs"] > before["resyncs"]
    mine = [c for c in rows(book["changes"]) if c["order_id"] == order_id]
    assert mine[-1]["status"] == "Filled", mine
    assert stats["connections_total"] == 2 and stats["connections_open"] == 1
    assert stats["active"].get("sor") == 1
    # The server waited for the ready gate on the new socket too: nothing was dropped.
    assert stats["dropped_before_ready"] == 0


def test_unsubscribe_stops_the_ibkr_topic(demo):
    server, sim = demo()

    async def go():
        async with streamable_http_client(server.url) as (r, w):
            async with ClientSession(r, w) as s:
                await s.initialize()
                await s.subscribe_resource("ibkr://quote/AAPL")
                await s.subscribe_resource("ibkr://pnl")
                await eventually(lambda: sim.ws()["active"].get(f"smd+{AAPL}") == 1
                                 and sim.ws()["active"].get("spl") == 1)
                await s.unsubscribe_resource("ibkr://quote/AAPL")
                await eventually(lambda: f"smd+{AAPL}" not in sim.ws()["active"])
                # The other topic goes on.
                assert sim.ws()["active"].get("spl") == 1
                assert sim.ws()["unsubscribes"].get(f"smd+{AAPL}") == 1
                status = (await s.call_tool("get_session_status", {})).structured_content
                return status["live_events"]["topics"]

    topics = run(go)
    assert [t["key"] for t in topics] == ["spl"]
    # The session ended: its last subscription ends at IBKR too.
    deadline = time.monotonic() + 10
    while sim.ws()["active"].get("spl") and time.monotonic() < deadline:
        time.sleep(0.1)
    assert "spl" not in sim.ws()["active"]


def test_a_hundred_subscribers_cost_one_ibkr_subscription(demo):
    """Ten clients with ten `subscriptions/listen` streams each on the same quote (each stream is
    its own long-lived HTTP request, so ten per client stays within the SDK's connection pool)."""
    server, sim = demo("--live-coalesce-ms", "500")

    async def go():
        got: dict[int, int] = {}
        done = anyio.Event()
        out = {}

        async def listener(client, i, ready):
            async with client.listen(resource_subscriptions=["ibkr://quote/AAPL"]) as sub:
                ready.set()
                async for _ in sub:
                    got[i] = got.get(i, 0) + 1
                    if got[i] >= 2:
                        await done.wait()
                        return

        async def one_client(c, all_ready):
            async with Client(server.url) as client:
                async with anyio.create_task_group() as tg:
                    for j in range(10):
                        ready = anyio.Event()
                        tg.start_soon(listener, client, c * 10 + j, ready)
                        await ready.wait()
                    all_ready[c].set()
                    if c == 0:
                        await eventually(lambda: len([v for v in got.values() if v >= 2]) == 100,
                                         timeout=30)
                        out["stats"] = sim.ws()
                        status = await client.call_tool("get_session_status", {})
                        out["live"] = status.structured_content["live_events"]
                        done.set()

        all_ready = [anyio.Event() for _ in range(10)]
        async with anyio.create_task_group() as tg:
            for c in range(10):
                tg.start_soon(one_client, c, all_ready)
        return out["stats"], out["live"], got

    stats, live, got = run(go)
    assert len(got) == 100 and all(v >= 2 for v in got.values())
    assert stats["active"].get(f"smd+{AAPL}") == 1
    assert stats["subscribes"].get(f"smd+{AAPL}") == 1, stats
    assert stats["connections_total"] == 1
    assert [(t["key"], t["subscribers"]) for t in live["topics"]] == [(f"smd+{AAPL}", 100)]
    # Every stream closed: the subscription ended at IBKR.
    deadline = time.monotonic() + 10
    while sim.ws()["active"].get(f"smd+{AAPL}") and time.monotonic() < deadline:
        time.sleep(0.1)
    assert f"smd+{AAPL}" not in sim.ws()["active"]


def test_wait_tools_answer_from_the_stream_with_progress(demo):
    server, sim = demo("--allow-trading")
    progress: list[tuple[float, float | None, str | None]] = []

    async def on_progress(p, total, message):
        progress.append((p, total, message))

    async def go():
        async with streamable_http_client(server.url) as (r, w):
            async with ClientSession(r, w) as s:
                await s.initialize()
                last = sim.price(AAPL)
                placed = await s.call_tool("place_order", {
                    "account": ACCOUNT, "symbol": "AAPL", "side": "SELL", "type": "LMT",
                    "limit_price": round(last * 1.01, 2), "quantity": 1})
                assert not placed.is_error, placed.content[0].text
                order_id = placed.structured_content["rows"][0][0]
                out = {}

                async def wait_order():
                    out["order"] = await s.call_tool(
                        "wait_for_order_update", {"order_id": order_id, "timeout_seconds": 30},
                        progress_callback=on_progress)

                async with anyio.create_task_group() as tg:
                    tg.start_soon(wait_order)
                    await anyio.sleep(6.5)
                    sim.set_price(AAPL, round(last * 1.03, 2))
                # Already filled: answers at once.
                out["again"] = await s.call_tool(
                    "wait_for_order_update", {"order_id": order_id, "timeout_seconds": 30})
                out["price_met"] = await s.call_tool("wait_for_price", {
                    "symbol": "AAPL", "condition": "above", "price": round(last * 1.02, 2),
                    "timeout_seconds": 10})
                out["price_not_met"] = await s.call_tool("wait_for_price", {
                    "symbol": "AAPL", "condition": "below", "price": 1, "timeout_seconds": 2})
                out["unknown_order"] = await s.call_tool(
                    "wait_for_order_update", {"order_id": "999999999", "timeout_seconds": 2})
                out["hostile"] = await s.call_tool(
                    "wait_for_order_update", {"order_id": "1/../../logout", "timeout_seconds": 2})
                out["too_long"] = await s.call_tool(
                    "wait_for_order_update", {"order_id": order_id, "timeout_seconds": 600})
                return order_id, last, out

    order_id, last, out = run(go)
    o = out["order"]
    assert not o.is_error, o.content[0].text
    assert o.structured_content["changed"] is True
    assert o.structured_content["status"] == "Filled" and o.structured_content["final"] is True
    assert 5 <= o.structured_content["waited_seconds"] < 30
    assert [h["status"] for h in o.structured_content["history"]][-1] == "Filled"
    # At least one progress notification while it waited, saying what it waits for.
    assert progress and progress[0][1] == 30 and order_id in progress[0][2], progress
    a = out["again"].structured_content
    assert a["changed"] is False and a["final"] is True and a["waited_seconds"] < 5
    p = out["price_met"].structured_content
    assert p["met"] is True and p["last"] >= round(last * 1.02, 2)
    n = out["price_not_met"].structured_content
    assert n["met"] is False and n["last"] > 1
    assert "call again" in " ".join(c.text for c in out["price_not_met"].content)
    u = out["unknown_order"]
    assert u.is_error and "999999999" in u.content[0].text and "get_account_orders" in u.content[0].text
    for bad in ("hostile", "too_long"):
        assert out[bad].is_error, out[bad].content[0].text
    stats = sim.ws()
    assert stats["subscribes"].get("sor") == 1  # the three order waits shared it in turn


def test_hostile_resource_uris_are_refused_before_anything_is_sent(demo):
    server, sim = demo()

    async def go():
        out = {}
        async with streamable_http_client(server.url) as (r, w):
            async with ClientSession(r, w) as s:
                await s.initialize()
                for uri in ["ibkr://quote/AAPL%0Asmd+8314+{}", "ibkr://account/../logout/summary",
                            "ibkr://orders/../session", "ibkr://quote/" + "A" * 100,
                            "ibkr://account/DU9999999/summary", "ibkr://quote/NOSUCHSYMBOLX"]:
                    for what, call in (("read", s.read_resource), ("subscribe", s.subscribe_resource)):
                        try:
                            await call(uri)
                            out[(what, uri)] = None
                        except Exception as e:  # the SDK raises the JSON-RPC error
                            out[(what, uri)] = str(e)
        return out

    out = run(go)
    for (what, uri), error in out.items():
        assert error, f"{what} {uri} was accepted"
    assert "ibkr://quote/AAPL" in out[("read", "ibkr://quote/AAPL%0Asmd+8314+{}")]
    assert "DU9999999" in out[("subscribe", "ibkr://account/DU9999999/summary")]
    stats = sim.ws()
    # Nothing a URI says reached the socket: no topic beyond what the server builds itself.
    assert stats["errors"] == 0 and not stats["active"], stats
    assert set(stats["subscribes"]) <= {"sor", "str", "spl"} | {k for k in stats["subscribes"] if k.startswith("smd+")}


def test_live_events_work_headless_over_oauth(demo):
    server, sim = demo("--auth", "oauth1", "--live-coalesce-ms", "200")
    notes = Notes()

    async def go():
        async with streamable_http_client(server.url) as (r, w):
            async with ClientSession(r, w, message_handler=notes) as s:
                await s.initialize()
                await s.subscribe_resource("ibkr://quote/AAPL")
                await notes.wait(lambda: len(notes.of("ibkr://quote/AAPL")) >= 3, timeout=20)
                q = await read(s, "ibkr://quote/AAPL")
                status = (await s.call_tool("get_session_status", {})).structured_content
                return q, status

    q, status = run(go)
    assert q["source"] == "stream" and q["last"] > 0
    assert status["live_events"]["state"] == "ready"
    assert status["live_events"]["url"].startswith("wss://")
    assert sim.ws()["refused"] == 0
