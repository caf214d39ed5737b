//! IBKR's published TESTCONS example (facts §1.13.1), one value at a time and then end to end.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

use super::vectors::*;
use super::*;
use crate::{
    LiveSessionToken, Stamp, decrypt_prepend, live_session_token, live_session_token_request,
    sign_request, signature_base_string, validate_lst,
};

#[test]
fn published_access_token_secret_decrypts_to_published_prepend() {
    let prepend = decrypt_prepend(PDF_ACCESS_TOKEN_SECRET, &pdf_encryption_key()).unwrap();
    assert_eq!(prepend.as_hex(), PDF_PREPEND_HEX);
    assert_eq!(STANDARD.encode(prepend.as_bytes()), PDF_SECRET_B64);
    assert_eq!(prepend.as_bytes().len(), 32);
}

#[test]
fn published_dh_exponent_gives_published_challenge() {
    let challenge = pdf_challenge();
    assert_eq!(challenge.challenge_hex(), PDF_CHALLENGE_HEX);
    assert_eq!(challenge.challenge_hex().len(), 511, "sent unpadded");
}

#[test]
fn published_lst_request_has_published_base_string_signature_and_header() {
    let prepend = decrypt_prepend(PDF_ACCESS_TOKEN_SECRET, &pdf_encryption_key()).unwrap();
    let request = live_session_token_request(
        &pdf_credentials(),
        PDF_LST_REQUEST_URL,
        &pdf_challenge(),
        &prepend,
        &pdf_signing_key(),
        &Stamp::new(PDF_LST_REQUEST_TIMESTAMP, PDF_LST_REQUEST_NONCE),
    )
    .unwrap();
    assert_eq!(request.base_string(), PDF_LST_REQUEST_BASE);
    assert_eq!(request.signature(), PDF_LST_REQUEST_SIGNATURE);
    let expected_header = format!(
        "OAuth realm=\"test_realm\", diffie_hellman_challenge=\"{PDF_CHALLENGE_HEX}\", \
         oauth_consumer_key=\"TESTCONS\", oauth_nonce=\"36f7d85e418f8bfe8561\", \
         oauth_signature=\"{}\", oauth_signature_method=\"RSA-SHA256\", \
         oauth_timestamp=\"1473793702\", oauth_token=\"6f531f8fd316915af53f\"",
        header_form(PDF_LST_REQUEST_SIGNATURE)
    );
    assert_eq!(request.authorization(), expected_header);
}

#[test]
fn published_request_token_base_string_and_rsa_signature_match() {
    // The second RSA-SHA256 vector: no prepend, an `oauth_callback` and no token.
    let base = signature_base_string(
        "POST",
        "http://localhost:12345/tradingapi/v1/oauth/request_token",
        &[
            ("oauth_timestamp", "1473793701"),
            ("oauth_signature_method", "RSA-SHA256"),
            ("oauth_nonce", "fcbc9c08d69ac269f7f1"),
            ("oauth_consumer_key", "TESTCONS"),
            ("oauth_callback", "oob"),
        ],
    )
    .unwrap();
    assert_eq!(base, PDF_REQUEST_TOKEN_BASE);
    assert_eq!(
        pdf_signing_key().sign_base64(&base).unwrap(),
        PDF_REQUEST_TOKEN_SIGNATURE
    );
}

#[test]
fn published_dh_response_gives_published_k() {
    let k = pdf_challenge().k_bytes(PDF_RESPONSE_HEX).unwrap();
    assert_eq!(k.as_bytes(), unhex(&format!("0{PDF_K_HEX}")).as_slice());
    assert_eq!(k.as_bytes(), decimal(PDF_K_DEC).to_bytes_be().as_slice());
    assert_eq!(k.as_bytes().len(), 256);
    assert_eq!(k.as_bytes()[0], 0x04, "no sign byte in this vector");
}

#[test]
fn published_k_and_prepend_give_published_lst() {
    let prepend = crate::Prepend::from_hex(PDF_PREPEND_HEX).unwrap();
    let k = pdf_challenge().k_bytes(PDF_RESPONSE_HEX).unwrap();
    let lst = live_session_token(&k, &prepend);
    assert_eq!(lst.to_base64(), PDF_LST_B64);
    assert_eq!(lst.as_bytes(), unhex(PDF_LST_HEX).as_slice());
}

#[test]
fn published_lst_signature_validates_and_a_wrong_one_does_not() {
    let lst = LiveSessionToken::from_base64(PDF_LST_B64).unwrap();
    assert_eq!(lst.signature_hex(PDF_CONSUMER_KEY), PDF_LST_SIGNATURE);
    assert!(validate_lst(&lst, PDF_CONSUMER_KEY, PDF_LST_SIGNATURE));
    assert!(validate_lst(
        &lst,
        PDF_CONSUMER_KEY,
        &PDF_LST_SIGNATURE.to_ascii_uppercase()
    ));
    // One digit changed.
    let wrong = format!("{}5", &PDF_LST_SIGNATURE[..PDF_LST_SIGNATURE.len() - 1]);
    assert_ne!(wrong, PDF_LST_SIGNATURE);
    assert!(!validate_lst(&lst, PDF_CONSUMER_KEY, &wrong));
    // Right signature, wrong consumer key.
    assert!(!validate_lst(&lst, "TESTCONT", PDF_LST_SIGNATURE));
    // Right signature, a different token.
    let other = LiveSessionToken::from_base64(PDF_POST_LST_B64).unwrap();
    assert!(!validate_lst(&other, PDF_CONSUMER_KEY, PDF_LST_SIGNATURE));
}

#[test]
fn published_get_with_query_is_signed_as_published() {
    let lst = LiveSessionToken::from_base64(PDF_LST_B64).unwrap();
    let signed = sign_request(
        &pdf_credentials(),
        &lst,
        "GET",
        "http://localhost:12345/tradingapi/v1/marketdata/snapshot?conid=8314",
        &[],
        &Stamp::new(1473795686, "aecef17086308940e861"),
    )
    .unwrap();
    assert_eq!(signed.base_string(), PDF_GET_BASE);
    assert_eq!(signed.signature(), PDF_GET_SIGNATURE);
    assert_eq!(
        signed.authorization(),
        format!(
            "OAuth realm=\"test_realm\", oauth_consumer_key=\"TESTCONS\", \
             oauth_nonce=\"aecef17086308940e861\", oauth_signature=\"{}\", \
             oauth_signature_method=\"HMAC-SHA256\", oauth_timestamp=\"1473795686\", \
             oauth_token=\"6f531f8fd316915af53f\"",
            header_form(PDF_GET_SIGNATURE)
        )
    );
}

#[test]
fn published_form_post_is_signed_as_published() {
    let lst = LiveSessionToken::from_base64(PDF_POST_LST_B64).unwrap();
    let form: Vec<(&str, &str)> = PDF_POST_BODY
        .split('&')
        .map(|pair| pair.split_once('=').unwrap())
        .collect();
    assert_eq!(form.len(), 8);
    let signed = sign_request(
        &pdf_credentials(),
        &lst,
        "POST",
        "http://localhost:12345/ptradingapi/v1/accounts/DU216409/order_impact",
        &form,
        &Stamp::new(1475766474, "fafd0982f8db1e34287c"),
    )
    .unwrap();
    assert_eq!(signed.base_string(), PDF_POST_BASE);
    assert_eq!(signed.signature(), PDF_POST_SIGNATURE);
    assert_eq!(
        PDF_POST_HEADER_SIGNATURE,
        format!("oauth_signature=\"{}\"", header_form(PDF_POST_SIGNATURE))
    );
    assert_eq!(
        signed.authorization(),
        format!(
            "OAuth realm=\"test_realm\", oauth_consumer_key=\"TESTCONS\", \
             oauth_nonce=\"fafd0982f8db1e34287c\", {PDF_POST_HEADER_SIGNATURE}, \
             oauth_signature_method=\"HMAC-SHA256\", oauth_timestamp=\"1475766474\", \
             oauth_token=\"6f531f8fd316915af53f\""
        )
    );
}

#[test]
fn published_example_runs_end_to_end_from_raw_inputs() {
    // Everything from the user's inputs to a signed request, through the public API only.
    let encryption = crate::EncryptionKey::from_pem(PDF_ENCRYPTION_KEY_PEM).unwrap();
    let signing = crate::SigningKey::from_pem(PDF_SIGNING_KEY_PEM).unwrap();
    let credentials = pdf_credentials();
    let prepend = decrypt_prepend(PDF_ACCESS_TOKEN_SECRET, &encryption).unwrap();
    let challenge = pdf_challenge();
    let request = live_session_token_request(
        &credentials,
        PDF_LST_REQUEST_URL,
        &challenge,
        &prepend,
        &signing,
        &Stamp::new(PDF_LST_REQUEST_TIMESTAMP, PDF_LST_REQUEST_NONCE),
    )
    .unwrap();
    assert_eq!(request.signature(), PDF_LST_REQUEST_SIGNATURE);
    let lst = live_session_token(&challenge.k_bytes(PDF_RESPONSE_HEX).unwrap(), &prepend);
    assert!(validate_lst(
        &lst,
        credentials.consumer_key(),
        PDF_LST_SIGNATURE
    ));
    let signed = sign_request(
        &credentials,
        &lst,
        "GET",
        "http://localhost:12345/tradingapi/v1/marketdata/snapshot?conid=8314",
        &[],
        &Stamp::new(1473795686, "aecef17086308940e861"),
    )
    .unwrap();
    assert_eq!(signed.signature(), PDF_GET_SIGNATURE);
}
