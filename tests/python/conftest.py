"""Fixtures for driving the real `ibkr-mcp` binary with real MCP clients.

The binary is `$IBKR_MCP_BIN` (scripts/test sets it) or `target/debug/ibkr-mcp`. Each server
runs on a free loopback port and is stopped at the end of the test; its log (stderr) is kept in
the test's temporary folder and attached to failures.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(os.environ.get("IBKR_MCP_BIN", ROOT / "target" / "debug" / "ibkr-mcp"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Server:
    """A running `ibkr-mcp serve` process."""

    proc: subprocess.Popen
    port: int
    log_path: Path
    args: list[str] = field(default_factory=list)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"{self.base}/mcp"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def wait_http(url: str, proc: subprocess.Popen, log_path: Path, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}:\n{log_path.read_text()}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer within {timeout} s:\n{log_path.read_text()}")


@pytest.fixture
def start_server(tmp_path):
    """Starts `ibkr-mcp serve` with the given flags; returns a `Server`."""
    assert BIN.exists(), f"{BIN} is missing: build it with `cargo build` (scripts/test does)"
    started: list[Server] = []

    def start(*flags: str, env: dict[str, str] | None = None) -> Server:
        # The free port can be taken before the server binds it (with --demo, by the server's
        # own simulator, which binds an ephemeral port first): then try another one.
        for attempt in range(3):
            try:
                return start_once(*flags, env=env)
            except RuntimeError as e:
                if "Address already in use" not in str(e) or attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def start_once(*flags: str, env: dict[str, str] | None = None) -> Server:
        port = free_port()
        log_path = tmp_path / f"server-{port}.log"
        args = [str(BIN), "serve", "--listen", f"127.0.0.1:{port}", *flags]
        full_env = {**os.environ, "IBKR_MCP_LOG": "ibkr_mcp=debug,rmcp=warn",
                    "IBKR_MCP_AUDIT_LOG": str(tmp_path / "audit.jsonl"),
                    # Never the user's kill switch: each server has its own (absent) one.
                    "IBKR_MCP_KILL_SWITCH_FILE": str(tmp_path / f"HALT-{port}"),
                    # Mock gateways manage no session; simulator tests turn this back on.
                    "IBKR_MCP_SESSION_KEEPALIVE": "false",
                    # Every toolset (tests drive the generated tools too); tests of the
                    # default pass --toolsets default.
                    "IBKR_MCP_TOOLSETS": "all", **(env or {})}
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=full_env)
        server = Server(proc, port, log_path, args)
        started.append(server)
        wait_http(f"{server.base}/healthz", proc, log_path)
        return server

    yield start
    for s in started:
        s.stop()


@pytest.fixture
def gateway(httpserver):
    """A mock Client Portal Gateway (pytest-httpserver) and its `/v1/api` base URL."""
    return httpserver, httpserver.url_for("/v1/api")


@dataclass
class Sim:
    """A running `ibkr-mcp sim` (HTTPS with a self-signed certificate, like the real gateway)."""

    proc: subprocess.Popen
    port: int
    log_path: Path

    @property
    def gateway_url(self) -> str:
        return f"https://127.0.0.1:{self.port}/v1/api"

    def control(self, method: str, path: str, body: dict | None = None):
        """Calls the simulator's control API (`/sim/...`) and returns the decoded JSON."""
        import json as _json
        import ssl

        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        data = None if body is None else _json.dumps(body).encode()
        req = urllib.request.Request(
            f"https://127.0.0.1:{self.port}/sim{path}", data=data, method=method,
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, context=ctx, timeout=10) as r:
            text = r.read().decode()
            return _json.loads(text) if text.strip() else None

    def state(self) -> dict:
        return self.control("GET", "/state")


@pytest.fixture
def sim(tmp_path):
    """`ibkr-mcp sim` on a free port with a fixed seed; stopped at the end of the test."""
    port = free_port()
    log_path = tmp_path / f"sim-{port}.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [str(BIN), "sim", "--listen", f"127.0.0.1:{port}", "--seed", "7"],
            stdout=log, stderr=subprocess.STDOUT,
        )
    s = Sim(proc, port, log_path)
    deadline = time.monotonic() + 60
    while True:
        try:
            s.state()
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"simulator did not start:\n{log_path.read_text()}")
            time.sleep(0.1)
    yield s
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
