//! The smaller rules: encoding, header layout, URL handling, nonces, timestamps and a fresh
//! DH exchange against a stand-in for IBKR's side.

use super::vectors::*;
use super::*;
use crate::{
    LiveSessionToken, Prepend, Stamp, authorization_header, generate_nonce, live_session_token,
    percent_encode, sign_request, signature_base_string, unix_timestamp, validate_lst,
};

#[test]
fn percent_encode_keeps_only_unreserved_characters() {
    assert_eq!(
        percent_encode("AZaz09-._~ !\"#$%&'()*+,/:;=?@[]"),
        "AZaz09-._~%20%21%22%23%24%25%26%27%28%29%2A%2B%2C%2F%3A%3B%3D%3F%40%5B%5D"
    );
    assert_eq!(percent_encode("é"), "%C3%A9");
}

#[test]
fn authorization_header_puts_realm_first_and_sorts_the_rest() {
    assert_eq!(
        authorization_header(
            "limited_poa",
            &[
                ("oauth_token", "t"),
                ("oauth_signature", "a+b/c="),
                ("oauth_consumer_key", "K"),
            ]
        ),
        "OAuth realm=\"limited_poa\", oauth_consumer_key=\"K\", \
         oauth_signature=\"a%2Bb%2Fc%3D\", oauth_token=\"t\""
    );
}

#[test]
fn query_is_decoded_before_signing_and_fragment_and_method_case_are_normalised() {
    let lst = LiveSessionToken::from_base64(D_LST_B64).unwrap();
    let credentials = Credentials::new("TESTCONS", "a1b2c3d4e5f6a7b8c9d0");
    let stamp = Stamp::new(1714489460, "abcdefgh12345678");
    // Parameters in another order, the commas already escaped, a fragment, lower-case method.
    let signed = sign_request(
        &credentials,
        &lst,
        "get",
        "https://api.ibkr.com/v1/api/iserver/marketdata/snapshot?fields=31%2C84%2C86&conids=265598%2c8314#top",
        &[],
        &stamp,
    )
    .unwrap();
    assert_eq!(signed.base_string(), D_SNAPSHOT_BASE);
    assert_eq!(signed.signature(), D_SNAPSHOT_SIGNATURE);
}

#[test]
fn repeated_keys_sort_by_value_and_empty_values_are_kept() {
    assert_eq!(
        signature_base_string("GET", "https://h/p?b=2&a=&b=1&&c", &[("a", "x")]).unwrap(),
        "GET&https%3A%2F%2Fh%2Fp&a%3D%26a%3Dx%26b%3D1%26b%3D2%26c%3D"
    );
}

#[test]
fn nonces_are_16_alphanumeric_characters_and_differ() {
    let nonces: Vec<String> = (0..20).map(|_| generate_nonce()).collect();
    for nonce in &nonces {
        assert_eq!(nonce.len(), 16, "{nonce}");
        assert!(nonce.bytes().all(|b| b.is_ascii_alphanumeric()), "{nonce}");
    }
    let mut unique = nonces.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), nonces.len());
}

#[test]
fn timestamps_are_ten_digit_seconds_and_never_decrease() {
    let first = unix_timestamp();
    assert_eq!(first.to_string().len(), 10);
    let mut previous = first;
    for _ in 0..1000 {
        let next = unix_timestamp();
        assert!(next >= previous);
        previous = next;
    }
    let stamp = Stamp::fresh();
    assert!(stamp.timestamp() >= first);
    assert_eq!(stamp.nonce().len(), 16);
}

#[test]
fn generated_challenge_completes_an_exchange_with_a_stand_in_server() {
    // What a test double of IBKR's endpoint does: its own exponent, B = g^b, K = A^b.
    let params = derived_params();
    let client = DhChallenge::generate(&params);
    let other = DhChallenge::generate(&params);
    assert_ne!(client.challenge_hex(), other.challenge_hex());
    let server = DhChallenge::generate(&params);

    let client_k = client.k_bytes(server.challenge_hex()).unwrap();
    let server_k = server.k_bytes(client.challenge_hex()).unwrap();
    assert_eq!(client_k.as_bytes(), server_k.as_bytes());
    assert!(client_k.as_bytes()[0] & 0x80 == 0, "sign byte rule applied");

    let prepend = Prepend::from_hex(PDF_PREPEND_HEX).unwrap();
    let client_lst = live_session_token(&client_k, &prepend);
    let server_lst = live_session_token(&server_k, &prepend);
    let reply_signature = server_lst.signature_hex("TESTCONS");
    assert!(validate_lst(&client_lst, "TESTCONS", &reply_signature));
    assert_eq!(client_lst.to_base64(), server_lst.to_base64());
}
