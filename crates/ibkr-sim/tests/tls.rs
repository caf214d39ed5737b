//! HTTPS with the self-signed certificate generated at start.

mod common;

use ibkr_sim::Tls;

#[tokio::test]
async fn https_serves_with_a_self_signed_certificate() {
    let sim = ibkr_sim::start(
        common::unpaced(),
        "127.0.0.1:0".parse().unwrap(),
        Tls::SelfSigned,
    )
    .await
    .unwrap();
    assert!(sim.base_url().starts_with("https://127.0.0.1:"));
    // A client that skips verification (what gateway clients usually do).
    let (s, v) = common::get(&sim, "/iserver/auth/status").await;
    assert_eq!((s, v["authenticated"].as_bool()), (200, Some(true)));
    // A client that trusts the certificate instead.
    let pem = sim.certificate_pem().expect("HTTPS has a certificate");
    let trusting = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(pem.as_bytes()).unwrap()])
        .build()
        .unwrap();
    let url = format!("https://localhost:{}/v1/api/tickle", sim.addr().port());
    assert_eq!(trusting.get(url).send().await.unwrap().status(), 200);
    // A client with default trust rejects the certificate.
    let strict = reqwest::Client::builder().build().unwrap();
    let err = strict
        .get(format!("{}/tickle", sim.base_url()))
        .send()
        .await
        .expect_err("untrusted certificate");
    assert!(err.is_connect() || err.is_request(), "{err:?}");
    sim.shutdown().await;
}

#[tokio::test]
async fn plain_http_has_no_certificate() {
    let sim = common::start(common::unpaced()).await;
    assert!(sim.certificate_pem().is_none());
    assert!(sim.base_url().starts_with("http://"));
    sim.shutdown().await;
}

#[tokio::test]
async fn https_drop_after_accept_is_a_client_error_with_one_order_booked() {
    let config = common::unpaced().with_questions(ibkr_sim::QuestionPolicy::Never);
    let sim = ibkr_sim::start(config, "127.0.0.1:0".parse().unwrap(), Tls::SelfSigned)
        .await
        .unwrap();
    assert_eq!(common::get(&sim, "/iserver/accounts").await.0, 200);
    sim.control().arm_drop_after_accept();
    let order = serde_json::json!({ "orders": [{ "conid": 265598, "orderType": "MKT", "side": "SELL", "tif": "DAY", "quantity": 1 }] });
    let res = common::client()
        .post(format!(
            "{}/iserver/account/DU1234567/orders",
            sim.base_url()
        ))
        .json(&order)
        .send()
        .await;
    let err = res.expect_err("closed without a response");
    assert!(!err.is_timeout(), "{err:?}");
    assert_eq!(sim.control().state().orders.len(), 1);
    sim.shutdown().await;
}
