//! `scripts/fetch-spec` against a real HTTP server on loopback.
//!
//! Each test starts a small `std::net` server on `127.0.0.1:0` with canned responses: IBKR's
//! documents read at test time from `../shared/ibkr-spec/` (never copied into the repository),
//! a garbage body, and 404 for everything else. It then runs the script as a child process and
//! checks its exit status, its verdict and the file it wrote (or did not write).

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;

use ibkr_mcp::spec::pin::pinned;
use ibkr_mcp::spec::repair::sha256_hex;

/// The pinned version and its sha256, from `spec/ibkr-openapi.lock` (the one place the pin lives).
fn pin() -> (&'static str, &'static str) {
    (&pinned().version, &pinned().sha256)
}

/// sha256 of the 2.27.0 document, listed under `[known]` in the lock.
fn known_2_27_0_sha256() -> &'static str {
    pinned()
        .known
        .get("2.27.0")
        .expect("2.27.0 is listed under [known] in the lock")
}

fn manifest_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn shared_spec_path(version: &str) -> PathBuf {
    manifest_dir()
        .join("../shared/ibkr-spec")
        .join(version)
        .join("openapi.json")
}

/// Reads one of IBKR's documents from beside the checkout. Missing input is a failure, not a skip.
fn shared_spec(version: &str) -> Vec<u8> {
    let path = shared_spec_path(version);
    std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "cannot read {}: {e}. These tests need IBKR's unmodified OpenAPI document {version} \
             beside the checkout (../shared/ibkr-spec/{version}/openapi.json); by design it is \
             not in the repository.",
            path.display()
        )
    })
}

/// One canned response, served for an exact request path.
struct Route {
    path: &'static str,
    status: u16,
    content_type: &'static str,
    body: Vec<u8>,
}

impl Route {
    fn ok(path: &'static str, content_type: &'static str, body: Vec<u8>) -> Self {
        Self {
            path,
            status: 200,
            content_type,
            body,
        }
    }
}

/// A loopback HTTP server that answers every unknown path with 404.
struct Server {
    base_url: String,
    requests: Arc<AtomicUsize>,
}

impl Server {
    fn start(routes: Vec<Route>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
        let port = listener.local_addr().expect("local address").port();
        let routes = Arc::new(routes);
        let requests = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&requests);
        // The thread lives until the test process exits; each connection gets its own thread.
        thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                counter.fetch_add(1, Ordering::SeqCst);
                let routes = Arc::clone(&routes);
                thread::spawn(move || {
                    // A client that hangs up early is not the server's problem.
                    let _ = serve_one(stream, &routes);
                });
            }
        });
        Self {
            base_url: format!("http://127.0.0.1:{port}"),
            requests,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url)
    }

    fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

fn serve_one(mut stream: TcpStream, routes: &[Route]) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header)? == 0 || header.trim_end().is_empty() {
            break;
        }
    }
    let path = request_line.split_whitespace().nth(1).unwrap_or("/");
    let (status, reason, content_type, body) = match routes.iter().find(|r| r.path == path) {
        Some(route) => (
            route.status,
            "Canned",
            route.content_type,
            route.body.as_slice(),
        ),
        None => (
            404,
            "Not Found",
            "text/plain",
            b"no such document".as_slice(),
        ),
    };
    write!(
        stream,
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )?;
    stream.write_all(body)?;
    stream.flush()
}

/// A fresh, uniquely named directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        let path = std::env::temp_dir().join(format!(
            "ibkr-mcp-fetch-spec-{}-{tag}-{n}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
        Self(path)
    }

    fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// What one run of the script did.
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Run {
    fn describe(&self) -> String {
        format!(
            "exit status {:?}\n--- stdout\n{}--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }

    fn assert_code(&self, expected: i32) {
        assert_eq!(
            self.code,
            Some(expected),
            "unexpected exit status;\n{}",
            self.describe()
        );
    }

    fn assert_stdout_contains(&self, needle: &str) {
        assert!(
            self.stdout.contains(needle),
            "stdout lacks {needle:?};\n{}",
            self.describe()
        );
    }

    fn assert_stderr_contains(&self, needle: &str) {
        assert!(
            self.stderr.contains(needle),
            "stderr lacks {needle:?};\n{}",
            self.describe()
        );
    }
}

fn fetch_spec(args: &[&str], cwd: &Path) -> Run {
    let script = manifest_dir().join("scripts/fetch-spec");
    let mut command = Command::new(&script);
    command.args(args).current_dir(cwd);
    // Loopback must not go through whatever proxy the environment has configured.
    for var in [
        "HTTPS_PROXY",
        "https_proxy",
        "HTTP_PROXY",
        "http_proxy",
        "ALL_PROXY",
        "all_proxy",
    ] {
        command.env_remove(var);
    }
    // `--check` finds the pinned document the way the build does; a developer's override of the
    // build input must not change what these tests compare.
    command.env_remove("IBKR_OPENAPI_SPEC");
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
    Run {
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

fn path_arg(path: &Path) -> &str {
    path.to_str().expect("temp paths are UTF-8")
}

/// Serves `routes` on loopback and runs `fetch-spec --url <server><url_path> --out <tmp>/x.json`.
fn fetch_over_http(
    label: &str,
    routes: Vec<Route>,
    url_path: &str,
) -> (Server, TempDir, PathBuf, Run) {
    let server = Server::start(routes);
    let dir = TempDir::new(label);
    let out = dir.join("x.json");
    let run = fetch_spec(
        &["--url", &server.url(url_path), "--out", path_arg(&out)],
        &dir.0,
    );
    assert_eq!(
        server.requests(),
        1,
        "the script should have fetched once;\n{}",
        run.describe()
    );
    (server, dir, out, run)
}

/// Asserts that a failed run left no output file.
fn assert_no_output(out: &Path, run: &Run) {
    assert!(
        !out.exists(),
        "no output file expected;\n{}",
        run.describe()
    );
}

#[test]
fn fetch_spec_pinned_document_over_http_matches_pin() {
    let document = shared_spec(pin().0);
    let route = Route::ok("/v3/api-docs", "application/json", document.clone());
    let (_server, _dir, out, run) = fetch_over_http("pinned", vec![route], "/v3/api-docs");

    run.assert_code(0);
    run.assert_stdout_contains(&format!(
        "matches the pinned version {} (sha256 verified)",
        pin().0
    ));
    run.assert_stdout_contains(pin().1);
    let written = std::fs::read(&out).unwrap_or_else(|e| panic!("read {}: {e}", out.display()));
    assert_eq!(
        sha256_hex(&written),
        pin().1,
        "written file differs from the pin"
    );
    assert!(
        written == document,
        "written file differs from the served document"
    );
}

#[test]
fn fetch_spec_newer_known_document_is_named_known_version() {
    let route = Route::ok("/v3/api-docs", "application/json", shared_spec("2.27.0"));
    let (_server, _dir, out, run) = fetch_over_http("known", vec![route], "/v3/api-docs");

    run.assert_code(0);
    run.assert_stdout_contains("known version 2.27.0");
    run.assert_stdout_contains(&format!("not the pinned {}", pin().0));
    let written = std::fs::read(&out).unwrap_or_else(|e| panic!("read {}: {e}", out.display()));
    assert_eq!(sha256_hex(&written), known_2_27_0_sha256());
}

#[test]
fn fetch_spec_garbage_body_exits_2_without_output() {
    let garbage = b"<html><body>Please log in</body></html>".to_vec();
    let route = Route::ok("/v3/api-docs", "text/html", garbage);
    let (_server, _dir, out, run) = fetch_over_http("garbage", vec![route], "/v3/api-docs");

    run.assert_code(2);
    run.assert_stderr_contains("not JSON");
    run.assert_stderr_contains("--url");
    assert_no_output(&out, &run);
}

#[test]
fn fetch_spec_http_404_exits_2_without_output() {
    let (_server, _dir, out, run) = fetch_over_http("404", Vec::new(), "/no/such/api-docs");

    run.assert_code(2);
    run.assert_stderr_contains("HTTP 404");
    run.assert_stderr_contains("check the URL");
    assert_no_output(&out, &run);
}

#[test]
fn fetch_spec_file_url_matches_pin() {
    let source = shared_spec_path(pin().0);
    let document = shared_spec(pin().0);
    let source = std::fs::canonicalize(&source)
        .unwrap_or_else(|e| panic!("canonicalize {}: {e}", source.display()));
    let dir = TempDir::new("file-url");
    let out = dir.join("x.json");
    let url = format!("file://{}", source.display());

    let run = fetch_spec(&["--url", &url, "--out", path_arg(&out)], &dir.0);

    run.assert_code(0);
    run.assert_stdout_contains(&format!(
        "matches the pinned version {} (sha256 verified)",
        pin().0
    ));
    let written = std::fs::read(&out).unwrap_or_else(|e| panic!("read {}: {e}", out.display()));
    assert!(
        written == document,
        "written file differs from the source document"
    );
}

#[test]
fn fetch_spec_plain_local_path_matches_pin() {
    let source = shared_spec_path(pin().0);
    let document = shared_spec(pin().0);
    let dir = TempDir::new("plain-path");
    let out = dir.join("x.json");

    let run = fetch_spec(
        &["--url", path_arg(&source), "--out", path_arg(&out)],
        &dir.0,
    );

    run.assert_code(0);
    run.assert_stdout_contains(&format!(
        "matches the pinned version {} (sha256 verified)",
        pin().0
    ));
    let written = std::fs::read(&out).unwrap_or_else(|e| panic!("read {}: {e}", out.display()));
    assert!(
        written == document,
        "written file differs from the source document"
    );
}

#[test]
fn fetch_spec_unreachable_url_exits_2_with_advice() {
    let dir = TempDir::new("unreachable");
    let out = dir.join("x.json");

    let run = fetch_spec(
        &["--url", "http://127.0.0.1:1/", "--out", path_arg(&out)],
        &dir.0,
    );

    run.assert_code(2);
    run.assert_stderr_contains("failed");
    run.assert_stderr_contains("--url");
    assert_no_output(&out, &run);
}

#[test]
fn fetch_spec_existing_different_file_is_kept_without_force() {
    let document = shared_spec(pin().0);
    let server = Server::start(vec![Route::ok(
        "/v3/api-docs",
        "application/json",
        document.clone(),
    )]);
    let dir = TempDir::new("no-force");
    let out = dir.join("x.json");
    let url = server.url("/v3/api-docs");
    let previous = b"{\"an\": \"older download\"}".to_vec();
    std::fs::write(&out, &previous).expect("write the previous file");

    let refused = fetch_spec(&["--url", &url, "--out", path_arg(&out)], &dir.0);

    refused.assert_code(1);
    refused.assert_stderr_contains("--force");
    let kept = std::fs::read(&out).expect("previous file still there");
    assert!(
        kept == previous,
        "the existing file must not change without --force"
    );

    let forced = fetch_spec(&["--url", &url, "--out", path_arg(&out), "--force"], &dir.0);

    forced.assert_code(0);
    let written = std::fs::read(&out).expect("replaced file");
    assert!(
        written == document,
        "--force should replace the file with the download"
    );
}

/// Runs `fetch-spec --check` against `url` with this build's binary and `extra` arguments.
fn check(url: &str, extra: &[&str], cwd: &Path) -> Run {
    let mut args = vec![
        "--check",
        "--url",
        url,
        "--bin",
        env!("CARGO_BIN_EXE_ibkr-mcp"),
    ];
    args.extend_from_slice(extra);
    fetch_spec(&args, cwd)
}

#[test]
fn fetch_spec_check_reports_what_a_newer_document_changes_for_the_tools() {
    let server = Server::start(vec![Route::ok(
        "/v3/api-docs",
        "application/json",
        shared_spec("2.27.0"),
    )]);
    let dir = TempDir::new("check-newer");
    let report = dir.join("report");
    let run = check(
        &server.url("/v3/api-docs"),
        &["--report", path_arg(&report)],
        &dir.0,
    );

    run.assert_code(1);
    run.assert_stdout_contains("known version 2.27.0");
    // The diff it prints is exactly `spec diff pinned 2.27.0`, pinned by tests/spec_diff.rs.
    let golden =
        std::fs::read_to_string(manifest_dir().join("tests/snapshots/spec-diff-2.20.0-2.27.0.txt"))
            .expect("the golden diff");
    let start = run
        .stdout
        .find("spec diff ")
        .unwrap_or_else(|| panic!("no diff printed;\n{}", run.describe()));
    let printed = &run.stdout[start..];
    let printed = printed
        .strip_suffix(&format!("report written to {}\n", path_arg(&report)))
        .unwrap_or_else(|| panic!("the report location is said last;\n{}", run.describe()));
    assert!(
        printed == golden,
        "printed diff differs from the golden;\n{}",
        run.describe()
    );

    let read = |name: &str| {
        std::fs::read_to_string(report.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
    };
    let verdict: serde_json::Value = serde_json::from_str(&read("check.json")).unwrap();
    assert_eq!(verdict["identical"], false);
    assert_eq!(verdict["tools_affected"], true);
    assert_eq!(verdict["fetched"]["version"], "2.27.0");
    assert_eq!(verdict["fetched"]["sha256"], known_2_27_0_sha256());
    assert_eq!(verdict["pinned"]["sha256"], pin().1);
    assert_eq!(verdict["breaking"], 46, "{verdict}");
    assert!(read("diff.txt") == golden);
    let diff: serde_json::Value = serde_json::from_str(&read("diff.json")).unwrap();
    assert_eq!(diff["new"]["version"], "2.27.0");
    let summary = read("summary.md");
    assert!(summary.contains("**46 breaking for a model**"), "{summary}");
    assert!(
        summary.contains("| get_alert | `GET /iserver/account/alert/{alertId}` | argument_type path alertId: string/int64 → integer/int64 |"),
        "{summary}"
    );
    assert!(summary.len() < 65_536);
}

#[test]
fn fetch_spec_check_of_the_pinned_document_is_no_drift_and_runs_no_diff() {
    let server = Server::start(vec![Route::ok(
        "/v3/api-docs",
        "application/json",
        shared_spec(pin().0),
    )]);
    let dir = TempDir::new("check-same");
    let report = dir.join("report");
    // A binary that does not exist: the check must not need it when nothing changed.
    let run = fetch_spec(
        &[
            "--check",
            "--url",
            &server.url("/v3/api-docs"),
            "--bin",
            path_arg(&dir.join("no-such-binary")),
            "--report",
            path_arg(&report),
        ],
        &dir.0,
    );
    run.assert_code(0);
    run.assert_stdout_contains("no drift");
    let verdict: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(report.join("check.json")).unwrap()).unwrap();
    assert_eq!(verdict["identical"], true);
    assert_eq!(verdict["tools_affected"], false);
    assert!(!report.join("diff.txt").exists());
}

#[test]
fn fetch_spec_check_fails_clearly_without_a_document_or_a_pinned_copy() {
    let server = Server::start(vec![
        Route::ok("/v3/api-docs", "application/json", shared_spec("2.7.0")),
        Route::ok("/login", "text/html", b"<html>log in</html>".to_vec()),
    ]);
    let dir = TempDir::new("check-fail");

    let garbage = check(&server.url("/login"), &[], &dir.0);
    garbage.assert_code(2);
    garbage.assert_stderr_contains("not JSON");

    let missing = dir.join("missing.json");
    let no_pin = check(
        &server.url("/v3/api-docs"),
        &["--pinned", path_arg(&missing)],
        &dir.0,
    );
    no_pin.assert_code(2);
    no_pin.assert_stderr_contains("`ibkr-mcp spec diff` failed");
    no_pin.assert_stderr_contains("missing.json");

    let misuse = fetch_spec(&["--report", path_arg(&dir.join("r"))], &dir.0);
    misuse.assert_code(2);
    misuse.assert_stderr_contains("only applies with --check");
    assert!(!dir.join("r").exists());
}
