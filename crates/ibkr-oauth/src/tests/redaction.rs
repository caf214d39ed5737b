//! `{:?}` of every secret-bearing type is an exact, secret-free placeholder.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

use super::vectors::*;
use super::*;
use crate::{
    LiveSessionToken, Prepend, Stamp, decrypt_prepend, live_session_token,
    live_session_token_request, sign_request,
};

/// Asserts `debug` is exactly `expected` and holds none of `secrets` (checked separately so a
/// wrong expectation cannot hide a leak).
fn assert_redacted(debug: &str, expected: &str, secrets: &[&str]) {
    assert!(!secrets.is_empty());
    for secret in secrets {
        assert!(
            secret.len() >= 8,
            "secret probe too short to mean anything: {secret:?}"
        );
        assert!(!debug.contains(secret), "{debug} leaks {secret}");
    }
    assert_eq!(debug, expected);
}

/// A few 16-character pieces of a PEM body, as probes for leaked key material.
fn pem_probes(pem: &str) -> Vec<&str> {
    pem.lines()
        .filter(|line| !line.starts_with("-----"))
        .step_by(5)
        .map(|line| &line[..16])
        .collect()
}

#[test]
fn keys_print_only_their_size() {
    let signing = pdf_signing_key();
    assert_redacted(
        &format!("{signing:?}"),
        "SigningKey { bits: 2048, key: <redacted> }",
        &pem_probes(PDF_SIGNING_KEY_PEM),
    );
    let encryption = pdf_encryption_key();
    assert_redacted(
        &format!("{encryption:?}"),
        "EncryptionKey { bits: 2048, key: <redacted> }",
        &pem_probes(PDF_ENCRYPTION_KEY_PEM),
    );
}

#[test]
fn prepend_shared_secret_and_lst_print_nothing() {
    let prepend = decrypt_prepend(PDF_ACCESS_TOKEN_SECRET, &pdf_encryption_key()).unwrap();
    assert_redacted(
        &format!("{prepend:?}"),
        "Prepend(<redacted>)",
        &[PDF_PREPEND_HEX, &PDF_PREPEND_HEX[..16], PDF_SECRET_B64],
    );

    let challenge = pdf_challenge();
    let secret_hex = decimal(PDF_A_SECRET_DEC).to_str_radix(16);
    assert_redacted(
        &format!("{challenge:?}"),
        "DhChallenge { params: DhParams { prime_bits: 2045, generator_bits: 2048 }, secret: <redacted>, .. }",
        &[PDF_A_SECRET_DEC, &secret_hex],
    );

    let k = challenge.k_bytes(PDF_RESPONSE_HEX).unwrap();
    let k_bytes_debug = format!("{:?}", k.as_bytes());
    assert_redacted(
        &format!("{k:?}"),
        "SharedSecret(<redacted>)",
        &[&PDF_K_HEX[..16], &PDF_K_DEC[..16], &k_bytes_debug[..12]],
    );

    let lst = live_session_token(&k, &Prepend::from_hex(PDF_PREPEND_HEX).unwrap());
    let lst_bytes_debug = format!("{:?}", lst.as_bytes());
    assert_redacted(
        &format!("{lst:?}"),
        "LiveSessionToken(<redacted>)",
        &[PDF_LST_B64, PDF_LST_HEX, &lst_bytes_debug[..12]],
    );
}

#[test]
fn credentials_and_signed_requests_hide_token_and_prepend() {
    let credentials = pdf_credentials();
    assert_redacted(
        &format!("{credentials:?}"),
        "Credentials { consumer_key: \"TESTCONS\", access_token: <redacted>, realm: \"test_realm\" }",
        &[PDF_ACCESS_TOKEN],
    );

    let prepend = Prepend::from_hex(PDF_PREPEND_HEX).unwrap();
    let request = live_session_token_request(
        &credentials,
        PDF_LST_REQUEST_URL,
        &pdf_challenge(),
        &prepend,
        &pdf_signing_key(),
        &Stamp::new(PDF_LST_REQUEST_TIMESTAMP, PDF_LST_REQUEST_NONCE),
    )
    .unwrap();
    let expected = "SignedRequest { base_string: <redacted>, signature: <redacted>, authorization: <redacted> }";
    assert_redacted(
        &format!("{request:?}"),
        expected,
        &[PDF_PREPEND_HEX, &PDF_PREPEND_HEX[..16], PDF_ACCESS_TOKEN],
    );

    let lst = LiveSessionToken::from_base64(PDF_LST_B64).unwrap();
    let signed = sign_request(
        &credentials,
        &lst,
        "GET",
        "http://localhost:12345/tradingapi/v1/marketdata/snapshot?conid=8314",
        &[],
        &Stamp::new(1473795686, "aecef17086308940e861"),
    )
    .unwrap();
    assert_redacted(
        &format!("{signed:?}"),
        expected,
        &[PDF_ACCESS_TOKEN, PDF_LST_B64, PDF_GET_SIGNATURE],
    );
    // The probes do occur in the real values, so the checks above can fail.
    assert!(request.base_string().contains(PDF_PREPEND_HEX));
    assert!(signed.authorization().contains(PDF_ACCESS_TOKEN));
    assert_eq!(STANDARD.encode(prepend.as_bytes()), PDF_SECRET_B64);
}
