//! The derived sign-byte vector (facts §1.13.2) and the K-to-bytes cases (§1.13.3).

use num_bigint::BigUint;

use super::vectors::*;
use super::*;
use crate::dh::{SharedSecret, java_bytes};
use crate::{
    LiveSessionToken, Prepend, REALM_LIMITED_POA, Stamp, live_session_token, sign_request,
    validate_lst,
};

fn derived_challenge() -> DhChallenge {
    DhChallenge::new(&derived_params(), &unhex(D_A_SECRET_HEX)).unwrap()
}

fn derived_credentials() -> Credentials {
    Credentials::new("TESTCONS", "a1b2c3d4e5f6a7b8c9d0")
}

#[test]
fn sign_byte_vector_challenge_and_response_match() {
    assert_eq!(derived_challenge().challenge_hex(), D_CHALLENGE_HEX);
    // The server side of the same exchange: B = g^b mod p.
    let server = DhChallenge::new(&derived_params(), &unhex(D_B_SECRET_HEX)).unwrap();
    assert_eq!(server.challenge_hex(), D_RESPONSE_HEX);
}

#[test]
fn sign_byte_vector_k_gets_a_leading_zero_byte() {
    let k = derived_challenge().k_bytes(D_RESPONSE_HEX).unwrap();
    let mut expected = vec![0x00];
    expected.extend(unhex(D_K_HEX));
    assert_eq!(k.as_bytes(), expected.as_slice());
    assert_eq!(k.as_bytes().len(), 193);
    // Both sides agree on K.
    let server = DhChallenge::new(&derived_params(), &unhex(D_B_SECRET_HEX)).unwrap();
    let server_k = server.k_bytes(D_CHALLENGE_HEX).unwrap();
    assert_eq!(server_k.as_bytes(), k.as_bytes());
}

#[test]
fn sign_byte_vector_lst_is_right_with_the_zero_byte_and_wrong_without() {
    let prepend = Prepend::from_hex(PDF_PREPEND_HEX).unwrap();
    let k = derived_challenge().k_bytes(D_RESPONSE_HEX).unwrap();
    let lst = live_session_token(&k, &prepend);
    assert_eq!(lst.to_base64(), D_LST_B64);
    assert!(validate_lst(&lst, "TESTCONS", D_LST_SIGNATURE));

    // Control: the same K without the sign byte gives the published wrong token, which fails.
    let unsigned = SharedSecret::from_raw_for_tests(unhex(D_K_HEX));
    let wrong = live_session_token(&unsigned, &prepend);
    assert_eq!(wrong.to_base64(), D_LST_WRONG_B64);
    assert!(!validate_lst(&wrong, "TESTCONS", D_LST_SIGNATURE));
}

#[test]
fn derived_snapshot_request_signs_query_parameters() {
    let lst = LiveSessionToken::from_base64(D_LST_B64).unwrap();
    let credentials = derived_credentials();
    assert_eq!(credentials.realm(), REALM_LIMITED_POA);
    let signed = sign_request(
        &credentials,
        &lst,
        "GET",
        "https://api.ibkr.com/v1/api/iserver/marketdata/snapshot?conids=265598,8314&fields=31,84,86",
        &[],
        &Stamp::new(1714489460, "abcdefgh12345678"),
    )
    .unwrap();
    assert_eq!(signed.base_string(), D_SNAPSHOT_BASE);
    assert!(
        signed
            .base_string()
            .ends_with(&format!("&{}", crate::percent_encode(D_SNAPSHOT_PARAMS)))
    );
    assert_eq!(signed.signature(), D_SNAPSHOT_SIGNATURE);
    assert_eq!(signed.authorization(), D_SNAPSHOT_AUTHORIZATION);
}

#[test]
fn derived_snapshot_without_query_matches_the_ibind_form() {
    let lst = LiveSessionToken::from_base64(D_LST_B64).unwrap();
    let signed = sign_request(
        &derived_credentials(),
        &lst,
        "GET",
        "https://api.ibkr.com/v1/api/iserver/marketdata/snapshot",
        &[],
        &Stamp::new(1714489460, "abcdefgh12345678"),
    )
    .unwrap();
    assert_eq!(signed.base_string(), D_IBIND_BASE);
    assert_eq!(signed.signature(), D_IBIND_SIGNATURE);
}

#[test]
fn derived_json_post_signs_no_body() {
    let lst = LiveSessionToken::from_base64(D_LST_B64).unwrap();
    let signed = sign_request(
        &derived_credentials(),
        &lst,
        "POST",
        "https://api.ibkr.com/v1/api/iserver/auth/ssodh/init",
        &[],
        &Stamp::new(1714489460, "zyxwvuts87654321"),
    )
    .unwrap();
    assert_eq!(signed.base_string(), D_SSODH_BASE);
    assert_eq!(signed.signature(), D_SSODH_SIGNATURE);
}

#[test]
fn k_to_bytes_follows_java_to_byte_array() {
    let cases: [(u32, &[u8]); 7] = [
        (15, &[0x0f]),
        (0x7f, &[0x7f]),
        (0xff, &[0x00, 0xff]),
        (128, &[0x00, 0x80]),
        (256, &[0x01, 0x00]),
        (0xff00, &[0x00, 0xff, 0x00]),
        (65535, &[0x00, 0xff, 0xff]),
    ];
    for (value, expected) in cases {
        assert_eq!(
            java_bytes(&BigUint::from(value)),
            expected,
            "K = {value:#x}"
        );
    }
}
