//! Full account ids never reach the log at the default level (issue 10, item 10): failed
//! requests (whose transport errors name the URL, and the URL holds the account id) and
//! refusals are logged with ids masked. Its own test binary: it installs the global subscriber.

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};

use common::{args, server};
use serde_json::json;

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn full_account_ids_stay_out_of_the_default_log() {
    let capture = Capture::default();
    let writer = capture.clone();
    tracing_subscriber::fmt()
        .with_env_filter(ibkr_mcp::telemetry::filter(
            ibkr_mcp::config::DEFAULT_LOG_FILTER,
        ))
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .init();
    // Nothing listens on port 9: every request fails to connect.
    let s = server(
        "http://127.0.0.1:9/v1/api",
        &["--allow-trading", "--read-retries", "0"],
    );
    for (tool, a) in [
        (
            "get_brokerage_account_summary",
            json!({"accountId": "DU1234567"}),
        ),
        (
            "list_positions",
            json!({"accountId": "U7654321", "pageId": 0}),
        ),
        (
            "place_orders",
            json!({"accountId": "U7654321", "body": {"orders": [{"conid": 265598, "side": "BUY", "orderType": "LMT", "price": 1, "tif": "DAY", "quantity": 1}]}}),
        ),
    ] {
        let r = s.call(tool, args(a)).await.unwrap();
        assert_eq!(r.is_error, Some(true));
    }
    let log = String::from_utf8(capture.0.lock().unwrap().clone()).unwrap();
    // The control: the failures were logged, at WARN, with the masked ids.
    assert!(log.contains("gateway request failed"), "{log}");
    assert!(log.contains("/iserver/account/DU****567/summary"), "{log}");
    for id in ["DU1234567", "U7654321", "1234567", "7654321"] {
        assert!(!log.contains(id), "`{id}` in the log:\n{log}");
    }
}
