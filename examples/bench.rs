//! Benchmark of the MCP server against the gateway simulator on loopback (run it with
//! `scripts/bench`, which builds both in release mode). Reports numbers; asserts nothing.
//!
//! In one run it measures:
//! - time from starting `ibkr-mcp serve` to its first accepted MCP request (`initialize`);
//! - tool-call latency (p50/p99) through the MCP server, against the same request sent straight
//!   to the simulator (the floor);
//! - tool calls per second with 32 concurrent MCP sessions;
//! - the server's CPU time per tool call (user + system, from `/proc`), sequential and under
//!   that load;
//! - the server's resident memory idle and under that load.
//!
//! The server runs with `--pacing false` (IBKR's 10 requests/s would otherwise be the
//! bottleneck, by design) and the simulator without pacing. The MCP client is a small
//! hand-written streamable-HTTP client (protocol 2025-11-25, one session each), so the
//! numbers measure the server rather than a client SDK.

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

const TOOL: &str = "get_contract_info";
const CONID: &str = "265598";

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A field of `/proc/<pid>/status` in KiB (`VmRSS`, `RssAnon`, `RssFile`).
fn status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.strip_prefix(field).is_some_and(|r| r.starts_with(':')))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

fn rss_kib(pid: u32) -> u64 {
    status_kib(pid, "VmRSS")
}

/// CPU time (user + system) the process has used so far, from `/proc/<pid>/stat`.
fn cpu_time(pid: u32) -> Duration {
    // The fields after the command name (which may hold spaces) start after its `)`.
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    // utime and stime are fields 14 and 15 of the whole line: 12 and 13 after the `)`.
    let ticks: u64 = [11, 12]
        .iter()
        .filter_map(|i| fields.get(*i).and_then(|v| v.parse::<u64>().ok()))
        .sum();
    // USER_HZ is 100 on Linux.
    Duration::from_millis(ticks * 10)
}

/// One MCP session over streamable HTTP.
struct Session {
    http: reqwest::Client,
    url: String,
    id: Option<String>,
    next: u64,
}

impl Session {
    async fn open(http: reqwest::Client, url: &str) -> Result<Self, String> {
        let mut s = Session {
            http,
            url: url.to_string(),
            id: None,
            next: 1,
        };
        let init = json!({"protocolVersion": "2025-11-25", "capabilities": {},
            "clientInfo": {"name": "ibkr-mcp-bench", "version": "1"}});
        s.request("initialize", init).await?;
        s.notify("notifications/initialized").await?;
        Ok(s)
    }

    fn post(&self, body: &Value) -> reqwest::RequestBuilder {
        let mut rb = self
            .http
            .post(&self.url)
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .json(body);
        if let Some(id) = &self.id {
            rb = rb
                .header("mcp-session-id", id)
                .header("mcp-protocol-version", "2025-11-25");
        }
        rb
    }

    async fn notify(&mut self, method: &str) -> Result<(), String> {
        self.post(&json!({"jsonrpc": "2.0", "method": method}))
            .send()
            .await
            .map_err(|e| e.to_string())?;
        Ok(())
    }

    async fn request(&mut self, method: &str, params: Value) -> Result<Value, String> {
        let id = self.next;
        self.next += 1;
        let resp = self
            .post(&json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}))
            .send()
            .await
            .map_err(|e| e.to_string())?;
        if let Some(sid) = resp.headers().get("mcp-session-id") {
            self.id = Some(sid.to_str().unwrap_or_default().to_string());
        }
        let status = resp.status();
        let text = resp.text().await.map_err(|e| e.to_string())?;
        if !status.is_success() {
            return Err(format!("HTTP {status}: {text}"));
        }
        // SSE: the answer is the `data:` line that parses as our response.
        for line in text.lines() {
            let data = line.strip_prefix("data:").map(str::trim).unwrap_or(line);
            if let Ok(v) = serde_json::from_str::<Value>(data)
                && v.get("id") == Some(&json!(id))
            {
                return Ok(v);
            }
        }
        Err(format!("no response in: {text}"))
    }

    async fn call(&mut self) -> Result<(), String> {
        let v = self
            .request(
                "tools/call",
                json!({"name": TOOL, "arguments": {"conid": CONID}}),
            )
            .await?;
        if v["result"]["isError"] == json!(true) {
            return Err(v["result"]["content"][0]["text"].to_string());
        }
        Ok(())
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

#[tokio::main]
async fn main() -> Result<(), String> {
    let bin = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "target/release/ibkr-mcp".into());
    let samples: usize = std::env::var("BENCH_SAMPLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let load_secs: u64 = std::env::var("BENCH_LOAD_SECONDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);

    let sim_port = free_port();
    let _sim = Proc(
        Command::new(&bin)
            .args(["sim", "--plain-http", "--pacing", "false", "--listen"])
            .arg(format!("127.0.0.1:{sim_port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start {bin} sim: {e}"))?,
    );
    let gateway = format!("http://127.0.0.1:{sim_port}/v1/api");
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(64)
        .build()
        .map_err(|e| e.to_string())?;
    let started = Instant::now();
    while http
        .get(format!("http://127.0.0.1:{sim_port}/sim/state"))
        .send()
        .await
        .is_err()
    {
        if started.elapsed() > Duration::from_secs(30) {
            return Err("the simulator did not start".into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Start to first accepted MCP request.
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}/mcp");
    let spawned = Instant::now();
    let server = Proc(
        Command::new(&bin)
            .args([
                "serve",
                "--pacing",
                "false",
                "--toolsets",
                "all",
                "--listen",
            ])
            .arg(format!("127.0.0.1:{port}"))
            .args(["--gateway-url", &gateway])
            .env("IBKR_MCP_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start {bin} serve: {e}"))?,
    );
    let pid = server.0.id();
    let mut first = loop {
        match Session::open(http.clone(), &url).await {
            Ok(s) => break s,
            Err(_) if spawned.elapsed() < Duration::from_secs(30) => {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            Err(e) => return Err(format!("server never accepted initialize: {e}")),
        }
    };
    let startup = spawned.elapsed();
    // Let the session manager settle (first tickle, accounts) before measuring.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_idle = rss_kib(pid);
    // Private memory, and pages mapped from the binary and libraries (shared, reclaimable; how
    // many the kernel maps depends on its read-ahead and page-cache folio sizes).
    let (anon_idle, file_idle) = (status_kib(pid, "RssAnon"), status_kib(pid, "RssFile"));

    // Warm up both paths (the simulator's first snapshot-like work, connection pools).
    for _ in 0..50 {
        first.call().await?;
    }
    let direct_url = format!("{gateway}/iserver/contract/{CONID}/info");
    let cpu_before_sequential = cpu_time(pid);
    let mut direct = Vec::with_capacity(samples);
    let mut via_mcp = Vec::with_capacity(samples);
    for _ in 0..samples {
        let t = Instant::now();
        let r = http
            .get(&direct_url)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        r.bytes().await.map_err(|e| e.to_string())?;
        direct.push(t.elapsed());
        let t = Instant::now();
        first.call().await?;
        via_mcp.push(t.elapsed());
    }
    let cpu_sequential = cpu_time(pid).saturating_sub(cpu_before_sequential);
    direct.sort();
    via_mcp.sort();

    // Throughput with 32 concurrent sessions, and memory under that load.
    let done = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(load_secs);
    let mut tasks = Vec::new();
    for _ in 0..32 {
        let (http, url, done, errors) = (http.clone(), url.clone(), done.clone(), errors.clone());
        tasks.push(tokio::spawn(async move {
            let mut s = match Session::open(http, &url).await {
                Ok(s) => s,
                Err(_) => {
                    errors.fetch_add(1, Ordering::Relaxed);
                    return;
                }
            };
            while Instant::now() < deadline {
                match s.call().await {
                    Ok(()) => done.fetch_add(1, Ordering::Relaxed),
                    Err(_) => errors.fetch_add(1, Ordering::Relaxed),
                };
            }
        }));
    }
    let load_start = Instant::now();
    let cpu_before_load = cpu_time(pid);
    let mut rss_peak = 0;
    while Instant::now() < deadline {
        rss_peak = rss_peak.max(rss_kib(pid));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for t in tasks {
        let _ = t.await;
    }
    let elapsed = load_start.elapsed().as_secs_f64();
    let cpu_load = cpu_time(pid).saturating_sub(cpu_before_load);
    let calls = done.load(Ordering::Relaxed);
    let per_call = |cpu: Duration, n: u64| cpu.as_secs_f64() * 1000.0 / n.max(1) as f64;

    let report = format!(
        "ibkr-mcp benchmark ({} {}; tool `{TOOL}` via MCP vs GET /iserver/contract/{CONID}/info direct; \
         loopback, simulator without pacing, server --pacing false)\n\
         | measure | value |\n|---|---|\n\
         | start to first accepted MCP request | {} |\n\
         | latency direct to simulator p50 / p99 ({samples} calls) | {} / {} |\n\
         | latency through MCP p50 / p99 ({samples} calls) | {} / {} |\n\
         | added by the server, p50 | {:.3} ms |\n\
         | server CPU per call, sequential / 32 sessions | {:.3} ms / {:.3} ms |\n\
         | tool calls per second, 32 concurrent MCP sessions ({load_secs} s) | {:.0} ({} errors) |\n\
         | server RSS idle / peak under load | {:.1} MiB / {:.1} MiB |\n\
         | server RSS idle: private (anon) / mapped files (binary, libraries) | {:.1} MiB / {:.1} MiB |\n",
        std::env::consts::ARCH,
        std::env::consts::OS,
        ms(startup),
        ms(percentile(&direct, 0.5)),
        ms(percentile(&direct, 0.99)),
        ms(percentile(&via_mcp, 0.5)),
        ms(percentile(&via_mcp, 0.99)),
        (percentile(&via_mcp, 0.5).as_secs_f64() - percentile(&direct, 0.5).as_secs_f64()) * 1000.0,
        per_call(cpu_sequential, samples as u64),
        per_call(cpu_load, calls),
        calls as f64 / elapsed,
        errors.load(Ordering::Relaxed),
        rss_idle as f64 / 1024.0,
        rss_peak as f64 / 1024.0,
        anon_idle as f64 / 1024.0,
        file_idle as f64 / 1024.0,
    );
    print!("{report}");
    let _ = std::fs::create_dir_all("target");
    let _ = std::fs::write("target/bench.md", &report);
    Ok(())
}
