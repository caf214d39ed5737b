"""The MCP Inspector CLI (npm `@modelcontextprotocol/inspector`, on Node.js 22 from
tests/inspector) as a second, independent MCP client: it lists the tools (also in `--strict`
mode, which flags schemas that strict clients would have trouble with) and calls one."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

from conftest import BIN, ROOT

INSPECTOR_BIN = ROOT / "tests" / "inspector" / "node_modules" / ".bin"


def inspector(*args: str) -> subprocess.CompletedProcess:
    exe = INSPECTOR_BIN / "mcp-inspector"
    assert exe.exists(), f"{exe} is missing: run scripts/test-tools"
    env = {**os.environ, "PATH": f"{INSPECTOR_BIN}{os.pathsep}{os.environ['PATH']}",
           "MCP_CATALOG_PATH": str(Path(os.environ.get("TMPDIR", "/tmp")) / "ibkr-mcp-inspector.json")}
    node = shutil.which("node", path=env["PATH"])
    version = subprocess.run([node, "--version"], capture_output=True, text=True, env=env).stdout
    assert int(version.lstrip("v").split(".")[0]) >= 22, f"the Inspector CLI needs node >= 22.19, got {version}"
    return subprocess.run([str(exe), "--cli", *args], capture_output=True, text=True, env=env, timeout=120)


def test_inspector_lists_all_tools_strictly_clean_and_calls_one(start_server, gateway):
    httpserver, base = gateway
    httpserver.expect_request("/v1/api/iserver/marketdata/snapshot", method="GET",
                              query_string={"conids": "265598", "fields": "31,6509"}).respond_with_json(
        [{"conid": 265598, "conidEx": "265598", "31": "189.10"}]
    )
    server = start_server("--gateway-url", base, "--toolsets", "all", "--allow-trading",
                          "--allow-question-suppression")

    listed = inspector(server.url, "--method", "tools/list")
    assert listed.returncode == 0, listed.stderr
    tools = json.loads(listed.stdout)["tools"]
    # 95 generated from IBKR's operations, plus the server's own: the task tools and
    # get_session_status.
    catalog = json.loads(subprocess.run([str(BIN), "tools", "--format", "json"], check=True,
                                        capture_output=True, text=True).stdout)
    own = {t["name"] for t in catalog if not t["operation_id"]}
    assert "get_session_status" in own and "get_price_snapshot" in own
    assert len(tools) == 95 + len(own)
    assert sum(1 for t in tools if t["name"] not in own) == 95

    strict = inspector(server.url, "--method", "tools/list", "--strict")
    assert strict.returncode == 0, strict.stderr
    combined = strict.stdout + strict.stderr
    assert "warnings across" not in combined and "Warning:" not in combined, combined[-3000:]

    called = inspector(server.url, "--method", "tools/call", "--tool-name", "get_market_data_snapshot",
                       "--tool-arg", "conids=265598", "fields=31")
    assert called.returncode == 0, called.stderr
    result = json.loads(called.stdout)
    assert result.get("isError") is False, result
    assert result["structuredContent"] == {"items": [{"conid": 265598, "conidEx": "265598", "31": "189.10"}]}
    httpserver.check_assertions()

    # A task tool through the Inspector: its structured result fits its output schema.
    httpserver.expect_request("/v1/api/iserver/secdef/search", method="GET",
                              query_string={"symbol": "AAPL"}).respond_with_json(
        [{"conid": "265598", "symbol": "AAPL", "companyName": "APPLE INC", "description": "NASDAQ",
          "sections": [{"secType": "STK"}, {"secType": "OPT", "months": "JAN27;FEB27"}]}]
    )
    found = inspector(server.url, "--method", "tools/call", "--tool-name", "search_contracts",
                      "--tool-arg", "query=AAPL")
    assert found.returncode == 0, found.stderr
    result = json.loads(found.stdout)
    assert result.get("isError") is False, result
    sc = result["structuredContent"]
    assert sc["columns"][:2] == ["conid", "symbol"]
    assert sc["rows"] == [[265598, "AAPL", "APPLE INC", "NASDAQ", "STK", ["JAN27", "FEB27"], []]]
