//! Unit tests: IBKR's published worked example end to end (`published`), the derived
//! sign-byte vector and the K-to-bytes cases (`derived`), input errors (`errors`), redacted
//! `Debug` output (`redaction`) and the smaller rules (`behaviour`). Every comparison is
//! against a full expected string or byte string.

mod behaviour;
mod derived;
mod errors;
mod published;
mod redaction;
mod vectors;

use num_bigint::BigUint;

use crate::{Credentials, DhChallenge, DhParams, EncryptionKey, REALM_TEST, SigningKey};
use vectors::*;

/// Decodes hex test data (panics on bad test data).
fn unhex(text: &str) -> Vec<u8> {
    crate::encoding::hex_bytes(text, crate::Input::Prepend).expect("test hex")
}

/// The header form of a base64 signature, written out independently of `percent_encode`.
fn header_form(signature_b64: &str) -> String {
    signature_b64
        .replace('+', "%2B")
        .replace('/', "%2F")
        .replace('=', "%3D")
}

fn decimal(text: &str) -> BigUint {
    BigUint::parse_bytes(text.as_bytes(), 10).expect("test decimal")
}

fn pdf_params() -> DhParams {
    DhParams::new(decimal(PDF_P_DEC), decimal(PDF_G_DEC)).expect("published DH parameters")
}

fn pdf_challenge() -> DhChallenge {
    DhChallenge::new(&pdf_params(), &decimal(PDF_A_SECRET_DEC).to_bytes_be())
        .expect("published DH exponent")
}

fn pdf_credentials() -> Credentials {
    Credentials::new(PDF_CONSUMER_KEY, PDF_ACCESS_TOKEN).with_realm(REALM_TEST)
}

fn pdf_signing_key() -> SigningKey {
    SigningKey::from_pem(PDF_SIGNING_KEY_PEM).expect("published signing key")
}

fn pdf_encryption_key() -> EncryptionKey {
    EncryptionKey::from_pem(PDF_ENCRYPTION_KEY_PEM).expect("published encryption key")
}

fn derived_params() -> DhParams {
    DhParams::from_hex(D_P_HEX).expect("RFC 3526 group 5")
}
