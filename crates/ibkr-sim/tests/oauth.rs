//! OAuth 1.0a mode over real HTTP, with `ibkr_oauth` as the client: the token request and its
//! validation, signed requests, "no bridge" before `ssodh/init`, every refusal with its exact
//! body and counter, the control API, the WebSocket's admission, and the demo credentials'
//! directory round trip.
//!
//! One key set is generated per run (two 2048-bit RSA keys from a seeded generator, about a
//! second each in a debug build) and shared by every test here.

mod common;

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use ibkr_oauth::{
    Credentials, DhChallenge, EncryptionKey, LiveSessionToken, Prepend, SigningKey, Stamp,
    decrypt_prepend, generate_nonce, live_session_token, live_session_token_request, sign_request,
    unix_timestamp, validate_lst,
};
use ibkr_sim::oauth::{DemoOAuth, OAuthRefusal, SimOAuth};
use ibkr_sim::{SimConfig, SimHandle, Tls};
use rand::SeedableRng as _;
use serde_json::{Value, json};

/// The shared key set.
fn demo() -> &'static DemoOAuth {
    static DEMO: OnceLock<DemoOAuth> = OnceLock::new();
    DEMO.get_or_init(|| {
        let started = Instant::now();
        let mut rng = rand::rngs::StdRng::seed_from_u64(0x0A07_2048);
        let demo = DemoOAuth::generate_with_rng(&mut rng).expect("demo credentials generate");
        eprintln!("OAuth demo key set generated in {:?}", started.elapsed());
        demo
    })
}

fn oauth_config(oauth: SimOAuth) -> SimConfig {
    common::unpaced().with_oauth(oauth)
}

async fn start_oauth() -> SimHandle {
    common::start(oauth_config(demo().sim_oauth())).await
}

/// The exact 401 body of a refusal.
fn refusal(message: &str) -> Value {
    json!({ "error": format!("id: 3931, error: {message}"), "statusCode": 401 })
}

/// An OAuth client built only from what a user has (the demo's client half) and `ibkr_oauth`.
struct Client {
    http: reqwest::Client,
    creds: Credentials,
    signing: SigningKey,
    prepend: Prepend,
    dh: ibkr_oauth::DhParams,
    lst: Option<LiveSessionToken>,
}

impl Client {
    fn new(demo: &DemoOAuth) -> Self {
        let encryption = EncryptionKey::from_pem(demo.encryption_key_pem()).unwrap();
        Self {
            http: common::client(),
            creds: demo.credentials(),
            signing: SigningKey::from_pem(demo.signature_key_pem()).unwrap(),
            prepend: decrypt_prepend(demo.access_token_secret(), &encryption).unwrap(),
            dh: ibkr_oauth::DhParams::from_pem(&demo.dhparam_pem()).unwrap(),
            lst: None,
        }
    }

    fn with_credentials(mut self, creds: Credentials) -> Self {
        self.creds = creds;
        self
    }

    /// Requests a token with `stamp`; on 200 derives, validates and keeps it.
    async fn request_token_stamped(&mut self, sim: &SimHandle, stamp: &Stamp) -> (u16, Value) {
        let url = format!("{}/oauth/live_session_token", sim.base_url());
        let challenge = DhChallenge::generate(&self.dh);
        let signed = live_session_token_request(
            &self.creds,
            &url,
            &challenge,
            &self.prepend,
            &self.signing,
            stamp,
        )
        .unwrap();
        let resp = self
            .http
            .post(&url)
            .header("Authorization", signed.authorization())
            .header("User-Agent", "ibkr-sim-tests")
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        if status == 200 {
            let k = challenge
                .k_bytes(body["diffie_hellman_response"].as_str().unwrap())
                .unwrap();
            let lst = live_session_token(&k, &self.prepend);
            assert!(
                validate_lst(
                    &lst,
                    self.creds.consumer_key(),
                    body["live_session_token_signature"].as_str().unwrap()
                ),
                "the simulator's live_session_token_signature validates"
            );
            self.lst = Some(lst);
        }
        (status, body)
    }

    async fn request_token(&mut self, sim: &SimHandle) -> (u16, Value) {
        self.request_token_stamped(sim, &Stamp::fresh()).await
    }

    /// The `Authorization` header for `method url` (the URL is signed as given).
    fn authorization(&self, method: &str, url: &str, stamp: &Stamp) -> String {
        let lst = self.lst.as_ref().expect("a token first");
        sign_request(&self.creds, lst, method, url, &[], stamp)
            .unwrap()
            .authorization()
            .to_owned()
    }

    /// Sends `method path` (under `/v1/api`) with a JSON body and the given header.
    async fn send_with(
        &self,
        sim: &SimHandle,
        method: &str,
        path: &str,
        body: Option<Value>,
        authorization: Option<&str>,
    ) -> (u16, Value) {
        let url = format!("{}{}", sim.base_url(), path);
        let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut rb = self
            .http
            .request(m, &url)
            .header("User-Agent", "ibkr-sim-tests");
        if let Some(a) = authorization {
            rb = rb.header("Authorization", a);
        }
        if let Some(b) = body {
            rb = rb.json(&b);
        }
        let resp = rb.send().await.unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    /// Signs the URL as sent and sends it.
    async fn send(
        &self,
        sim: &SimHandle,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let url = format!("{}{}", sim.base_url(), path);
        let auth = self.authorization(method, &url, &Stamp::fresh());
        self.send_with(sim, method, path, body, Some(&auth)).await
    }

    async fn get(&self, sim: &SimHandle, path: &str) -> (u16, Value) {
        self.send(sim, "GET", path, None).await
    }

    async fn post(&self, sim: &SimHandle, path: &str, body: Value) -> (u16, Value) {
        self.send(sim, "POST", path, Some(body)).await
    }
}

fn stats(sim: &SimHandle) -> ibkr_sim::OAuthStats {
    sim.control().oauth_stats().expect("OAuth mode")
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

#[tokio::test]
async fn oauth_happy_path_token_portfolio_no_bridge_ssodh_init_iserver() {
    let lifetime = Duration::from_secs(600);
    let sim = common::start(oauth_config(demo().sim_oauth().with_lst_lifetime(lifetime))).await;
    let state = sim.control().state();
    assert!(
        !state.session.authenticated,
        "no brokerage session at start"
    );
    let mut client = Client::new(demo());

    let before = now_ms();
    let (s, v) = client.request_token(&sim).await;
    assert_eq!(s, 200, "{v}");
    let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        [
            "diffie_hellman_response",
            "live_session_token_signature",
            "live_session_token_expiration"
        ]
    );
    assert_eq!(
        v["live_session_token_signature"].as_str().unwrap().len(),
        40
    );
    let expiration = v["live_session_token_expiration"].as_i64().unwrap();
    let lifetime_ms = lifetime.as_millis() as i64;
    assert!(
        (before + lifetime_ms..=now_ms() + lifetime_ms).contains(&expiration),
        "{expiration} is issue time + lifetime in epoch ms"
    );

    let (s, v) = client.get(&sim, "/portfolio/accounts").await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v[0]["id"], "DU1234567");
    let (s, v) = client.post(&sim, "/tickle", json!({})).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["iserver"]["authStatus"]["authenticated"], false);

    let (s, v) = client.get(&sim, "/iserver/accounts").await;
    assert_eq!(
        (s, v),
        (
            400,
            json!({ "error": "Bad Request: no bridge", "statusCode": 400 })
        )
    );

    let (s, v) = client
        .post(
            &sim,
            "/iserver/auth/ssodh/init",
            json!({ "publish": true, "compete": true }),
        )
        .await;
    assert_eq!((s, v["authenticated"].as_bool()), (200, Some(true)), "{v}");
    let (s, v) = client.get(&sim, "/iserver/accounts").await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["accounts"][0], "DU1234567");
    // Query parameters are signed (merged into the sorted list).
    let (s, v) = client
        .get(
            &sim,
            "/iserver/marketdata/snapshot?conids=8314,265598&fields=31,84",
        )
        .await;
    assert_eq!(s, 200, "{v}");

    let st = stats(&sim);
    assert_eq!(st.tokens_issued, 1);
    assert_eq!(st.accepted, 6);
    assert_eq!(st.refused_total, 0);
    assert_eq!(st.token_expires_ms, Some(expiration));
    assert!(!st.token_expired);
    let log = sim.control().requests();
    let outcomes: Vec<(&str, u16, &str)> = log
        .iter()
        .map(|e| (e.path.as_str(), e.status, e.outcome.as_str()))
        .collect();
    assert_eq!(outcomes[0], ("/oauth/live_session_token", 200, "ok"));
    assert!(outcomes.contains(&("/iserver/accounts", 400, "no_bridge")));
    assert_eq!(outcomes.len(), 7);
    sim.shutdown().await;
}

#[tokio::test]
async fn oauth_unsigned_requests_are_refused_and_sim_controls_stay_open() {
    let sim = start_oauth().await;
    let client = Client::new(demo());
    let (s, v) = client
        .send_with(&sim, "GET", "/portfolio/accounts", None, None)
        .await;
    assert_eq!((s, v), (401, refusal("missing authorization header")));
    let (s, v) = client
        .send_with(&sim, "GET", "/portfolio/accounts", None, Some("Bearer abc"))
        .await;
    assert_eq!((s, v), (401, refusal("invalid authorization header")));
    // The token endpoint without a header, too.
    let (s, v) = client
        .send_with(&sim, "POST", "/oauth/live_session_token", None, None)
        .await;
    assert_eq!((s, v), (401, refusal("missing authorization header")));
    // Signed with a made-up token before any was issued.
    let mut made_up = Client::new(demo());
    made_up.lst = Some(LiveSessionToken::from_base64("YBWbLw+9RYP2nWrPQHxHZkBb1aM=").unwrap());
    let (s, v) = made_up.get(&sim, "/portfolio/accounts").await;
    assert_eq!((s, v), (401, refusal("no live session token")));

    let (s, state) = control(&sim, "GET", "/state").await;
    assert_eq!(s, 200, "/sim/* needs no signature");
    let st = stats(&sim);
    assert_eq!(state["oauth"], serde_json::to_value(&st).unwrap());
    assert_eq!(
        (
            st.refused.missing_header,
            st.refused.malformed_header,
            st.refused.no_token,
            st.refused_total,
            st.accepted,
            st.tokens_issued
        ),
        (2, 1, 1, 4, 0, 0)
    );
    assert_eq!(st.token_expires_ms, None);
    let outcomes: Vec<String> = sim
        .control()
        .requests()
        .into_iter()
        .map(|e| e.outcome)
        .collect();
    assert_eq!(
        outcomes,
        [
            "oauth:missing_header",
            "oauth:malformed_header",
            "oauth:missing_header",
            "oauth:no_token"
        ]
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn oauth_tampered_signature_is_refused_and_the_untampered_one_accepted() {
    let sim = start_oauth().await;
    let mut client = Client::new(demo());
    assert_eq!(client.request_token(&sim).await.0, 200);
    let url = format!("{}/portfolio/accounts", sim.base_url());
    let auth = client.authorization("GET", &url, &Stamp::fresh());
    let tampered = tamper_signature(&auth);
    assert_ne!(tampered, auth);
    let (s, v) = client
        .send_with(&sim, "GET", "/portfolio/accounts", None, Some(&tampered))
        .await;
    assert_eq!((s, v), (401, refusal("invalid signature")));
    // Control: the same request, untampered, with the same nonce (a refused nonce is not
    // remembered).
    let (s, _) = client
        .send_with(&sim, "GET", "/portfolio/accounts", None, Some(&auth))
        .await;
    assert_eq!(s, 200);
    let st = stats(&sim);
    assert_eq!(
        (st.refused.bad_signature, st.refused_total, st.accepted),
        (1, 1, 1)
    );

    // The token request with a tampered RSA signature.
    let url = format!("{}/oauth/live_session_token", sim.base_url());
    let signed = live_session_token_request(
        &client.creds,
        &url,
        &DhChallenge::generate(&client.dh),
        &client.prepend,
        &client.signing,
        &Stamp::fresh(),
    )
    .unwrap();
    let (s, v) = client
        .send_with(
            &sim,
            "POST",
            "/oauth/live_session_token",
            None,
            Some(&tamper_signature(signed.authorization())),
        )
        .await;
    assert_eq!((s, v), (401, refusal("invalid signature")));
    assert_eq!(stats(&sim).refused.bad_signature, 2);
    assert_eq!(stats(&sim).tokens_issued, 1);
    sim.shutdown().await;
}

/// Changes the first character of the base64 signature (staying valid base64 of the same
/// length).
fn tamper_signature(authorization: &str) -> String {
    let marker = "oauth_signature=\"";
    let start = authorization.find(marker).unwrap() + marker.len();
    let end = start + authorization[start..].find('"').unwrap();
    let encoded = &authorization[start..end];
    let signature = encoded
        .replace("%2B", "+")
        .replace("%2F", "/")
        .replace("%3D", "=");
    let replacement = if signature.starts_with('A') { "B" } else { "A" };
    let tampered = format!("{replacement}{}", &signature[1..]);
    format!(
        "{}{}{}",
        &authorization[..start],
        ibkr_oauth::percent_encode(&tampered),
        &authorization[end..]
    )
}

#[test]
fn tamper_signature_keeps_escaped_signatures_valid_base64() {
    assert_eq!(
        tamper_signature(r#"OAuth a="1", oauth_signature="%2Fbc%2B%3D", b="2""#),
        r#"OAuth a="1", oauth_signature="Abc%2B%3D", b="2""#
    );
    assert_eq!(
        tamper_signature(r#"OAuth oauth_signature="Axy%3D""#),
        r#"OAuth oauth_signature="Bxy%3D""#
    );
}

#[tokio::test]
async fn oauth_reused_nonce_is_refused() {
    let sim = start_oauth().await;
    let mut client = Client::new(demo());
    let token_stamp = Stamp::fresh();
    assert_eq!(
        client.request_token_stamped(&sim, &token_stamp).await.0,
        200
    );
    let url = format!("{}/portfolio/accounts", sim.base_url());
    let auth = client.authorization("GET", &url, &Stamp::fresh());
    let first = client
        .send_with(&sim, "GET", "/portfolio/accounts", None, Some(&auth))
        .await;
    assert_eq!(first.0, 200);
    let (s, v) = client
        .send_with(&sim, "GET", "/portfolio/accounts", None, Some(&auth))
        .await;
    assert_eq!((s, v), (401, refusal("nonce already used")));
    // A signed request reusing the token request's nonce, too.
    let reuse = client.authorization(
        "GET",
        &url,
        &Stamp::new(unix_timestamp(), token_stamp.nonce()),
    );
    let (s, _) = client
        .send_with(&sim, "GET", "/portfolio/accounts", None, Some(&reuse))
        .await;
    assert_eq!(s, 401);
    // Control: a fresh nonce passes.
    assert_eq!(client.get(&sim, "/portfolio/accounts").await.0, 200);
    let st = stats(&sim);
    assert_eq!(
        (st.refused.nonce_reused, st.refused_total, st.accepted),
        (2, 2, 2)
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn oauth_wrong_consumer_key_or_realm_is_an_invalid_consumer() {
    let sim = start_oauth().await;
    let d = demo();
    for creds in [
        Credentials::new("WRONGKEY9", d.access_token()),
        d.credentials().with_realm("test_realm"),
    ] {
        let mut wrong = Client::new(d).with_credentials(creds);
        let (s, v) = wrong.request_token(&sim).await;
        assert_eq!(
            (s, v),
            (
                401,
                json!({ "error": "id: 3931, error: invalid consumer", "statusCode": 401 })
            )
        );
    }
    // Control: the right credentials get a token; then a signed request with the wrong
    // consumer key is refused the same way.
    let mut client = Client::new(d);
    assert_eq!(client.request_token(&sim).await.0, 200);
    let mut wrong =
        Client::new(d).with_credentials(Credentials::new("WRONGKEY9", d.access_token()));
    wrong.lst = client.lst.clone();
    let (s, v) = wrong.get(&sim, "/portfolio/accounts").await;
    assert_eq!((s, v), (401, refusal("invalid consumer")));
    // A wrong access token is its own refusal.
    let mut other_token =
        Client::new(d).with_credentials(Credentials::new(d.consumer_key(), "00000000000000000000"));
    let (s, v) = other_token.request_token(&sim).await;
    assert_eq!((s, v), (401, refusal("invalid token")));
    let st = stats(&sim);
    assert_eq!(
        (
            st.refused.invalid_consumer,
            st.refused.invalid_token,
            st.refused_total,
            st.tokens_issued
        ),
        (3, 1, 4, 1)
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn oauth_stale_timestamp_is_refused_within_the_skew_it_is_not() {
    let skew = Duration::from_secs(120);
    let sim = common::start(oauth_config(demo().sim_oauth().with_clock_skew(skew))).await;
    let mut client = Client::new(demo());
    let stale = Stamp::new(unix_timestamp() - 600, generate_nonce());
    let (s, v) = client.request_token_stamped(&sim, &stale).await;
    assert_eq!((s, v), (401, refusal("invalid timestamp")));
    // Control: a minute off is inside the two-minute skew.
    let near = Stamp::new(unix_timestamp() - 60, generate_nonce());
    assert_eq!(client.request_token_stamped(&sim, &near).await.0, 200);
    let url = format!("{}/portfolio/accounts", sim.base_url());
    let future = client.authorization(
        "GET",
        &url,
        &Stamp::new(unix_timestamp() + 600, generate_nonce()),
    );
    let (s, v) = client
        .send_with(&sim, "GET", "/portfolio/accounts", None, Some(&future))
        .await;
    assert_eq!((s, v), (401, refusal("invalid timestamp")));
    assert_eq!(client.get(&sim, "/portfolio/accounts").await.0, 200);
    let st = stats(&sim);
    assert_eq!((st.refused.stale_timestamp, st.refused_total), (2, 2));
    sim.shutdown().await;
}

#[tokio::test]
async fn oauth_expired_token_is_refused_until_a_new_one() {
    let sim = start_oauth().await;
    let mut client = Client::new(demo());
    assert_eq!(client.request_token(&sim).await.0, 200);
    assert_eq!(client.get(&sim, "/portfolio/accounts").await.0, 200);
    assert!(sim.control().oauth_expire());
    let st = stats(&sim);
    assert!(st.token_expired);
    assert!(st.token_expires_ms.unwrap() <= now_ms());
    let (s, v) = client.get(&sim, "/portfolio/accounts").await;
    assert_eq!((s, v), (401, refusal("live session token expired")));
    let old = client.lst.clone();
    assert_eq!(client.request_token(&sim).await.0, 200);
    assert_eq!(client.get(&sim, "/portfolio/accounts").await.0, 200);
    // The new token replaced the old one.
    let mut stale_client = Client::new(demo());
    stale_client.lst = old;
    let (s, v) = stale_client.get(&sim, "/portfolio/accounts").await;
    assert_eq!((s, v), (401, refusal("invalid signature")));
    let st = stats(&sim);
    assert_eq!(
        (
            st.tokens_issued,
            st.accepted,
            st.refused.expired_token,
            st.refused.bad_signature,
            st.token_expired
        ),
        (2, 2, 1, 1, false)
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn oauth_query_parameters_are_signed_and_the_url_is_the_one_sent() {
    let sim = start_oauth().await;
    let mut client = Client::new(demo());
    assert_eq!(client.request_token(&sim).await.0, 200);
    let path = "/trsrv/stocks?symbols=IBM";
    // Signing the bare URL (query left out, as some clients do) is refused ...
    let bare = client.authorization(
        "GET",
        &format!("{}/trsrv/stocks", sim.base_url()),
        &Stamp::fresh(),
    );
    let (s, _) = client.send_with(&sim, "GET", path, None, Some(&bare)).await;
    assert_eq!(s, 401);
    // ... as is signing another host name than the one in the request ...
    let other_host = format!("http://localhost:{}/v1/api{path}", sim.addr().port());
    let auth = client.authorization("GET", &other_host, &Stamp::fresh());
    let (s, _) = client.send_with(&sim, "GET", path, None, Some(&auth)).await;
    assert_eq!(s, 401);
    // ... or another scheme.
    let other_scheme = format!("https://{}/v1/api{path}", sim.addr());
    let auth = client.authorization("GET", &other_scheme, &Stamp::fresh());
    let (s, _) = client.send_with(&sim, "GET", path, None, Some(&auth)).await;
    assert_eq!(s, 401);
    // Control: the URL as sent, query included.
    let (s, v) = client.get(&sim, path).await;
    assert_eq!(s, 200, "{v}");
    assert!(v["IBM"].is_array(), "{v}");
    // A request addressed to `localhost` and signed that way passes too.
    let auth = client.authorization("GET", &other_host, &Stamp::fresh());
    let resp = client
        .http
        .get(&other_host)
        .header("Authorization", auth)
        .header("User-Agent", "ibkr-sim-tests")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(stats(&sim).refused.bad_signature, 3);
    sim.shutdown().await;
}

#[tokio::test]
async fn oauth_form_fields_are_signed_json_bodies_are_not() {
    let sim = start_oauth().await;
    let mut client = Client::new(demo());
    assert_eq!(client.request_token(&sim).await.0, 200);
    let lst = client.lst.clone().unwrap();
    let url = format!("{}/iserver/auth/ssodh/init", sim.base_url());
    let send_form = |auth: String| {
        client
            .http
            .post(&url)
            .header("Authorization", auth)
            .header("Content-Type", "application/x-www-form-urlencoded")
            .header("User-Agent", "ibkr-sim-tests")
            .body("publish=true&compete=true")
            .send()
    };
    // Form fields left out of the signature: refused.
    let unsigned_fields = sign_request(&client.creds, &lst, "POST", &url, &[], &Stamp::fresh())
        .unwrap()
        .authorization()
        .to_owned();
    assert_eq!(send_form(unsigned_fields).await.unwrap().status(), 401);
    // Form fields signed: past the signature check; the handler then wants JSON (400).
    let signed = sign_request(
        &client.creds,
        &lst,
        "POST",
        &url,
        &[("publish", "true"), ("compete", "true")],
        &Stamp::fresh(),
    )
    .unwrap()
    .authorization()
    .to_owned();
    let resp = send_form(signed).await.unwrap();
    assert_eq!(resp.status(), 400);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"], "Bad Request: the body is not valid JSON");
    // A JSON body is not signed: the same signature scheme without fields works.
    let (s, v) = client
        .post(
            &sim,
            "/iserver/auth/ssodh/init",
            json!({ "publish": true, "compete": true }),
        )
        .await;
    assert_eq!((s, v["authenticated"].as_bool()), (200, Some(true)));
    let st = stats(&sim);
    assert_eq!((st.refused.bad_signature, st.accepted), (1, 2));
    sim.shutdown().await;
}

#[tokio::test]
async fn oauth_over_https_signs_the_https_url() {
    let sim = ibkr_sim::start(
        oauth_config(demo().sim_oauth()),
        "127.0.0.1:0".parse().unwrap(),
        Tls::SelfSigned,
    )
    .await
    .unwrap();
    assert!(sim.base_url().starts_with("https://"));
    let mut client = Client::new(demo());
    assert_eq!(client.request_token(&sim).await.0, 200);
    assert_eq!(client.get(&sim, "/portfolio/accounts").await.0, 200);
    let http_url = format!("http://{}/v1/api/portfolio/accounts", sim.addr());
    let auth = client.authorization("GET", &http_url, &Stamp::fresh());
    let (s, v) = client
        .send_with(&sim, "GET", "/portfolio/accounts", None, Some(&auth))
        .await;
    assert_eq!((s, v), (401, refusal("invalid signature")));
    sim.shutdown().await;
}

#[tokio::test]
async fn oauth_logout_keeps_the_token_and_ssodh_init_reopens() {
    let sim = start_oauth().await;
    let mut client = Client::new(demo());
    assert_eq!(client.request_token(&sim).await.0, 200);
    client
        .post(
            &sim,
            "/iserver/auth/ssodh/init",
            json!({ "publish": true, "compete": true }),
        )
        .await;
    assert_eq!(client.get(&sim, "/iserver/accounts").await.0, 200);
    let (s, _) = client.post(&sim, "/logout", json!({})).await;
    assert_eq!(s, 200);
    let (s, v) = client.get(&sim, "/iserver/accounts").await;
    assert_eq!(
        (s, v["error"].as_str()),
        (400, Some("Bad Request: no bridge"))
    );
    assert_eq!(client.get(&sim, "/portfolio/accounts").await.0, 200);
    let (s, v) = client
        .post(
            &sim,
            "/iserver/auth/ssodh/init",
            json!({ "publish": true, "compete": true }),
        )
        .await;
    assert_eq!((s, v["authenticated"].as_bool()), (200, Some(true)), "{v}");
    assert_eq!(client.get(&sim, "/iserver/accounts").await.0, 200);
    // An idle-timeout or control-API expiry is "no bridge" too, never a 401.
    sim.control().expire_session();
    assert_eq!(client.get(&sim, "/iserver/accounts").await.0, 400);
    sim.shutdown().await;
}

async fn control(sim: &SimHandle, method: &str, path: &str) -> (u16, Value) {
    let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let resp = common::client()
        .request(m, format!("{}{}", sim.control_url(), path))
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn oauth_control_api_reports_stats_and_expires_the_token() {
    let sim = start_oauth().await;
    let (s, v) = control(&sim, "POST", "/oauth/expire").await;
    assert_eq!((s, v), (200, json!({ "ok": true, "expired": false })));
    let mut client = Client::new(demo());
    assert_eq!(client.request_token(&sim).await.0, 200);
    assert_eq!(client.get(&sim, "/portfolio/accounts").await.0, 200);
    let (s, v) = control(&sim, "GET", "/oauth/stats").await;
    assert_eq!(s, 200);
    let refused: serde_json::Map<String, Value> = OAuthRefusal::ALL
        .iter()
        .map(|r| (r.reason().to_owned(), json!(0)))
        .collect();
    assert_eq!(v["refused"], Value::Object(refused));
    assert_eq!(
        (
            &v["tokens_issued"],
            &v["accepted"],
            &v["refused_total"],
            &v["token_expired"]
        ),
        (&json!(1), &json!(1), &json!(0), &json!(false))
    );
    assert!(v["token_issued_ms"].as_i64().unwrap() <= v["token_expires_ms"].as_i64().unwrap());
    let (s, v) = control(&sim, "POST", "/oauth/expire").await;
    assert_eq!((s, v), (200, json!({ "ok": true, "expired": true })));
    let (s, v) = client.get(&sim, "/portfolio/accounts").await;
    assert_eq!((s, v), (401, refusal("live session token expired")));
    let (_, v) = control(&sim, "GET", "/oauth/stats").await;
    assert_eq!(
        (&v["refused"]["expired_token"], &v["token_expired"]),
        (&json!(1), &json!(true))
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn gateway_mode_has_no_oauth() {
    let sim = common::start(common::unpaced()).await;
    assert!(sim.control().oauth_stats().is_none());
    assert!(!sim.control().oauth_expire());
    assert_eq!(control(&sim, "GET", "/oauth/stats").await.0, 404);
    assert_eq!(control(&sim, "POST", "/oauth/expire").await.0, 404);
    assert_eq!(control(&sim, "GET", "/state").await.1["oauth"], Value::Null);
    let (s, v) = common::post(&sim, "/oauth/live_session_token", json!({})).await;
    assert_eq!(s, 404, "{v}");
    // Unsigned requests work as before.
    assert_eq!(common::get(&sim, "/iserver/accounts").await.0, 200);
    sim.shutdown().await;
}

#[tokio::test]
async fn demo_credentials_round_trip_through_a_directory() {
    let d = demo();
    let dir = std::env::temp_dir().join(format!(
        "ibkr-sim-oauth-test-{}-{}",
        std::process::id(),
        now_ms()
    ));
    d.write_to_dir(&dir).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        for (name, mode) in [
            ("private_signature.pem", 0o600),
            ("private_encryption.pem", 0o600),
            ("access_token", 0o600),
            ("access_token_secret", 0o600),
        ] {
            let meta = std::fs::metadata(dir.join(name)).unwrap();
            assert_eq!(meta.permissions().mode() & 0o777, mode, "{name}");
        }
    }
    let back = DemoOAuth::read_from_dir(&dir).unwrap();
    assert_eq!(back.consumer_key(), d.consumer_key());
    assert_eq!(back.access_token(), d.access_token());
    assert_eq!(back.access_token_secret(), d.access_token_secret());
    assert_eq!(back.realm(), "limited_poa");
    assert_eq!(back.signature_key_pem(), d.signature_key_pem());
    assert_eq!(back.public_signature_pem(), d.public_signature_pem());
    assert_eq!(back.public_encryption_pem(), d.public_encryption_pem());
    assert_eq!(back.dh_params(), d.dh_params());
    assert_eq!(
        std::fs::read_to_string(dir.join("consumer_key")).unwrap(),
        format!("{}\n", d.consumer_key())
    );
    // The re-read set's IBKR half accepts the original client (same secret, same keys).
    let sim = common::start(oauth_config(back.sim_oauth())).await;
    let mut client = Client::new(d);
    assert_eq!(client.request_token(&sim).await.0, 200);
    assert_eq!(client.get(&sim, "/portfolio/accounts").await.0, 200);
    sim.shutdown().await;
    // load_or_generate reads what is there instead of generating.
    let loaded = DemoOAuth::load_or_generate(&dir).unwrap();
    assert_eq!(loaded.consumer_key(), d.consumer_key());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn demo_from_private_keys_keeps_the_keys_and_draws_new_tokens() {
    let d = demo();
    let other =
        DemoOAuth::from_private_keys(d.signature_key_pem(), d.encryption_key_pem()).unwrap();
    assert_eq!(other.public_signature_pem(), d.public_signature_pem());
    assert_eq!(other.public_encryption_pem(), d.public_encryption_pem());
    assert_ne!(other.access_token(), d.access_token());
    assert_eq!(other.consumer_key().len(), 9);
    assert!(
        other
            .consumer_key()
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
    );
    assert_eq!(other.access_token().len(), 20);
    assert!(
        other
            .public_signature_pem()
            .starts_with("-----BEGIN PUBLIC KEY-----")
    );
    assert!(
        d.signature_key_pem()
            .starts_with("-----BEGIN PRIVATE KEY-----")
    );
    // The secret is RSA ciphertext for a 2048-bit key.
    let ciphertext = base64_len(other.access_token_secret());
    assert_eq!(ciphertext, 256);
    // Each set works only with its own consumer.
    let sim = common::start(oauth_config(other.sim_oauth())).await;
    let mut mine = Client::new(&other);
    assert_eq!(mine.request_token(&sim).await.0, 200);
    let mut theirs = Client::new(d);
    assert_eq!(theirs.request_token(&sim).await.0, 401);
    sim.shutdown().await;
}

fn base64_len(text: &str) -> usize {
    let padding = text.bytes().rev().take_while(|&b| b == b'=').count();
    text.len() / 4 * 3 - padding
}

#[test]
fn oauth_secrets_stay_out_of_debug_output() {
    let d = demo();
    let sim_oauth = d.sim_oauth();
    for text in [format!("{d:?}"), format!("{sim_oauth:?}")] {
        assert!(text.contains(d.consumer_key()), "{text}");
        assert!(!text.contains(d.access_token()), "{text}");
        assert!(!text.contains(d.access_token_secret()), "{text}");
        assert!(!text.contains("PRIVATE KEY"), "{text}");
        assert!(text.contains("<redacted>"), "{text}");
    }
    let config = format!("{:?}", oauth_config(sim_oauth));
    assert!(!config.contains(d.access_token()), "{config}");
}

/// Opens the OAuth-mode WebSocket with `?oauth_token=token`, an optional `Cookie` and an
/// optional `User-Agent`; `Err` is the refusal's status.
async fn ws_connect(
    sim: &SimHandle,
    token: &str,
    cookie: Option<&str>,
    user_agent: bool,
) -> Result<
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
    u16,
> {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
    use tokio_tungstenite::tungstenite::http::HeaderValue;
    let mut req = format!("ws://{}/v1/api/ws?oauth_token={token}", sim.addr())
        .into_client_request()
        .unwrap();
    if let Some(c) = cookie {
        req.headers_mut()
            .insert("Cookie", HeaderValue::from_str(c).unwrap());
    }
    if user_agent {
        req.headers_mut()
            .insert("User-Agent", HeaderValue::from_static("ClientPortalGW/1"));
    }
    match tokio_tungstenite::connect_async(req).await {
        Ok((ws, _)) => Ok(ws),
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => Err(resp.status().as_u16()),
        Err(e) => panic!("unexpected WebSocket error: {e:?}"),
    }
}

#[tokio::test]
async fn oauth_websocket_needs_the_token_a_live_session_token_and_the_plain_cookie() {
    use futures_util::StreamExt as _;
    use tokio_tungstenite::tungstenite::Message;
    let sim = start_oauth().await;
    let token = demo().access_token();
    assert_eq!(ws_connect(&sim, "nope", None, true).await.err(), Some(401));
    assert_eq!(ws_connect(&sim, token, None, true).await.err(), Some(401));
    let mut client = Client::new(demo());
    assert_eq!(client.request_token(&sim).await.0, 200);
    let (s, v) = client
        .post(
            &sim,
            "/iserver/auth/ssodh/init",
            json!({ "publish": true, "compete": true }),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let (s, tickle) = client.get(&sim, "/tickle").await;
    assert_eq!(s, 200);
    let session = tickle["session"].as_str().unwrap().to_string();
    let plain = format!("api={session}");
    assert_eq!(
        ws_connect(&sim, token, Some(&plain), false).await.err(),
        Some(403),
        "a User-Agent is required"
    );
    let json_form = format!(r#"api={{"session":"{session}"}}"#);
    assert_eq!(
        ws_connect(&sim, token, Some(&json_form), true).await.err(),
        Some(401),
        "the gateway's cookie form is not OAuth's"
    );
    let outcomes: Vec<String> = sim
        .control()
        .requests()
        .into_iter()
        .filter(|e| e.path == "/ws")
        .map(|e| e.outcome)
        .collect();
    assert_eq!(
        outcomes,
        [
            "oauth:invalid_token",
            "oauth:no_token",
            "ws_no_user_agent",
            "ws_bad_session"
        ]
    );
    let mut ws = ws_connect(&sim, token, Some(&plain), true)
        .await
        .expect("the plain cookie is accepted");
    let mut topics = Vec::new();
    let sts = loop {
        let msg = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("a message in time")
            .unwrap()
            .unwrap();
        let Message::Text(t) = msg else { continue };
        let v: Value = serde_json::from_str(t.as_str()).unwrap();
        topics.push(v["topic"].as_str().unwrap_or("").to_string());
        if v["topic"] == "sts" {
            break v;
        }
    };
    assert_eq!(topics, ["system", "act", "sts"]);
    assert_eq!(sts["args"]["authenticated"], true);
    let s = sim.control().ws_stats();
    assert_eq!((s.refused, s.connections_open), (4, 1));
}
