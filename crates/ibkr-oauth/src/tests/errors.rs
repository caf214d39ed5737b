//! Bad inputs: each error names the input and the problem, and good inputs in awkward
//! layouts still load.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use rsa::pkcs1::EncodeRsaPrivateKey as _;
use rsa::pkcs8::DecodePrivateKey as _;
use rsa::pkcs8::LineEnding;

use super::vectors::*;
use super::*;
use crate::{
    DhChallenge, Error, Input, LiveSessionToken, Prepend, Stamp, decrypt_prepend, sign_request,
    signature_base_string,
};

#[test]
fn key_that_is_not_pem_is_rejected_with_the_input_named() {
    let err = SigningKey::from_pem("MIIEvAIBADANBgkqhkiG9w0BAQEFAASC").unwrap_err();
    assert!(
        matches!(
            err,
            Error::NotPem {
                input: Input::SignatureKey,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(
        err.to_string()
            .starts_with("the private signature key is not PEM text (no `-----BEGIN` line)"),
        "{err}"
    );
}

#[test]
fn key_with_broken_pem_body_is_rejected() {
    let err = EncryptionKey::from_pem(
        "-----BEGIN PRIVATE KEY-----\nnot*base64\n-----END PRIVATE KEY-----\n",
    )
    .unwrap_err();
    assert!(
        matches!(
            err,
            Error::Malformed {
                input: Input::EncryptionKey,
                ..
            } | Error::NotPem {
                input: Input::EncryptionKey,
                ..
            }
        ),
        "{err:?}"
    );
}

#[test]
fn public_key_where_a_private_key_belongs_is_rejected() {
    let err = EncryptionKey::from_pem(PDF_ENCRYPTION_PUBLIC_KEY_PEM).unwrap_err();
    assert!(
        matches!(
            err,
            Error::WrongPemKind {
                input: Input::EncryptionKey,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        "the private encryption key is the wrong kind of PEM: it is a public key; use the \
         private key it was made from (the public one is what IBKR gets)"
    );
}

#[test]
fn ec_private_key_is_not_an_rsa_private_key() {
    let err = SigningKey::from_pem(EC_KEY_PEM).unwrap_err();
    match err {
        Error::Malformed {
            input: Input::SignatureKey,
            expected,
            ..
        } => assert_eq!(expected, "PKCS#8 RSA private key"),
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn dh_parameters_given_as_a_key_are_rejected() {
    let err = SigningKey::from_pem(DH_1536_PEM).unwrap_err();
    assert!(
        matches!(
            err,
            Error::WrongPemKind {
                input: Input::SignatureKey,
                ..
            }
        ),
        "{err:?}"
    );
}

#[test]
fn key_smaller_than_2048_bits_is_rejected() {
    let err = EncryptionKey::from_pem(SMALL_KEY_PEM).unwrap_err();
    assert!(
        matches!(
            err,
            Error::KeyTooSmall {
                input: Input::EncryptionKey,
                bits: 1024
            }
        ),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        "the private encryption key is a 1024-bit RSA key; IBKR needs at least 2048 bits \
         (make one with `openssl genrsa 2048`)"
    );
    let err = SigningKey::from_pem(SMALL_KEY_PEM).unwrap_err();
    assert!(
        matches!(
            err,
            Error::KeyTooSmall {
                input: Input::SignatureKey,
                bits: 1024
            }
        ),
        "{err:?}"
    );
}

#[test]
fn pkcs1_crlf_and_surrounding_text_forms_load_the_same_key() {
    let pkcs8 = pdf_signing_key();
    assert_eq!(pkcs8.bits(), 2048);
    let expected = pkcs8.sign_base64(PDF_REQUEST_TOKEN_BASE).unwrap();
    assert_eq!(expected, PDF_REQUEST_TOKEN_SIGNATURE);

    let pkcs1 = rsa::PrivateKey::from_pkcs8_pem(PDF_SIGNING_KEY_PEM)
        .unwrap()
        .to_pkcs1_pem(LineEnding::LF)
        .unwrap();
    assert!(pkcs1.starts_with("-----BEGIN RSA PRIVATE KEY-----"));
    let crlf = PDF_SIGNING_KEY_PEM.replace('\n', "\r\n");
    let wrapped = format!("Bag Attributes\n    localKeyID: 01\n{PDF_SIGNING_KEY_PEM}\n\n");
    for text in [pkcs1.as_str(), crlf.as_str(), wrapped.as_str()] {
        let key = SigningKey::from_pem(text).unwrap();
        assert_eq!(key.sign_base64(PDF_REQUEST_TOKEN_BASE).unwrap(), expected);
    }
}

#[test]
fn prime_that_is_not_hex_is_rejected() {
    let err = DhParams::from_hex("ffffg123").unwrap_err();
    assert!(
        matches!(
            err,
            Error::NotHex {
                input: Input::DhPrime,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        "the Diffie-Hellman prime is not hex: unexpected character 'g' at position 4"
    );
    let err = DhParams::from_hex("  \n").unwrap_err();
    assert_eq!(
        err.to_string(),
        "the Diffie-Hellman prime is not hex: no hex digits"
    );
    // The published prime in decimal, pasted where hex belongs.
    let err = DhParams::from_hex(PDF_P_DEC).unwrap_err();
    assert_eq!(
        err.to_string(),
        "the Diffie-Hellman prime is not hex: its 616 digits are all 0-9, so it looks like a \
         decimal number; give it in hex"
    );
    // A tiny prime is refused.
    let err = DhParams::from_hex("3").unwrap_err();
    assert!(
        matches!(
            err,
            Error::OutOfRange {
                input: Input::DhPrime,
                ..
            }
        ),
        "{err:?}"
    );
}

#[test]
fn prime_in_openssl_text_layout_or_with_0x_is_accepted() {
    let expected = derived_params();
    let bytes = unhex(&format!("00{D_P_HEX}"));
    let openssl_layout = bytes
        .chunks(15)
        .map(|line| {
            let hex: Vec<String> = line.iter().map(|b| format!("{b:02x}")).collect();
            format!("    {}", hex.join(":"))
        })
        .collect::<Vec<_>>()
        .join(":\n");
    assert!(openssl_layout.starts_with("    00:ff:ff:"));
    assert_eq!(DhParams::from_hex(&openssl_layout).unwrap(), expected);
    assert_eq!(
        DhParams::from_hex(&format!("0x{}", D_P_HEX.to_ascii_uppercase())).unwrap(),
        expected
    );
    assert_eq!(expected.prime_hex(), D_P_HEX);
    assert_eq!(expected.generator_hex(), "2");
}

#[test]
fn dhparam_pem_gives_prime_and_generator() {
    let params = DhParams::from_pem(DH_1536_PEM).unwrap();
    assert_eq!(params, derived_params());
    assert_eq!(params.prime_bits(), 1536);
    let err = DhParams::from_pem(PDF_SIGNING_KEY_PEM).unwrap_err();
    assert!(
        matches!(
            err,
            Error::WrongPemKind {
                input: Input::DhParameters,
                ..
            }
        ),
        "{err:?}"
    );
    let err = DhParams::from_pem("p=ffff").unwrap_err();
    assert!(
        matches!(
            err,
            Error::NotPem {
                input: Input::DhParameters,
                ..
            }
        ),
        "{err:?}"
    );
}

#[test]
fn degenerate_generator_and_exponent_are_rejected() {
    let err = derived_params().with_generator(1).unwrap_err();
    assert!(
        matches!(
            err,
            Error::OutOfRange {
                input: Input::DhGenerator,
                ..
            }
        ),
        "{err:?}"
    );
    let p_minus_one = format!("{}e", &D_P_HEX[..D_P_HEX.len() - 1]);
    let err = derived_params()
        .with_generator_hex(&p_minus_one)
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::OutOfRange {
                input: Input::DhGenerator,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(
        derived_params().with_generator(5).unwrap().generator_hex(),
        "5"
    );
    for exponent in [&[][..], &[0], &[0, 1]] {
        let err = DhChallenge::new(&derived_params(), exponent).unwrap_err();
        assert!(
            matches!(
                err,
                Error::OutOfRange {
                    input: Input::DhSecret,
                    ..
                }
            ),
            "{err:?}"
        );
    }
}

#[test]
fn dh_response_that_is_not_hex_or_out_of_range_is_rejected() {
    let challenge = DhChallenge::new(&derived_params(), &unhex(D_A_SECRET_HEX)).unwrap();
    let err = challenge.k_bytes("{\"error\":1}").unwrap_err();
    assert!(
        matches!(
            err,
            Error::NotHex {
                input: Input::DhResponse,
                ..
            }
        ),
        "{err:?}"
    );
    for response in [
        "0",
        "1",
        D_P_HEX,
        &format!("{}e", &D_P_HEX[..D_P_HEX.len() - 1]),
    ] {
        let err = challenge.k_bytes(response).unwrap_err();
        assert!(
            matches!(
                err,
                Error::OutOfRange {
                    input: Input::DhResponse,
                    ..
                }
            ),
            "{err:?}"
        );
    }
    // Control: the real response works.
    assert!(challenge.k_bytes(D_RESPONSE_HEX).is_ok());
}

#[test]
fn access_token_secret_that_is_not_base64_or_the_wrong_size_is_rejected() {
    let key = pdf_encryption_key();
    let err = decrypt_prepend("not base64!", &key).unwrap_err();
    assert!(
        matches!(
            err,
            Error::NotBase64 {
                input: Input::AccessTokenSecret,
                ..
            }
        ),
        "{err:?}"
    );
    let err = decrypt_prepend(&STANDARD.encode([7u8; 10]), &key).unwrap_err();
    assert_eq!(
        err.to_string(),
        "the access token secret does not decrypt with the private encryption key (it is 10 \
         bytes long but a 2048-bit key takes exactly 256); check that the key is the private \
         half of the public encryption key uploaded to IBKR"
    );
}

#[test]
fn access_token_secret_with_line_breaks_or_without_padding_still_decrypts() {
    let key = pdf_encryption_key();
    let unpadded = PDF_ACCESS_TOKEN_SECRET.trim_end_matches('=');
    assert_ne!(unpadded, PDF_ACCESS_TOKEN_SECRET);
    let broken = PDF_ACCESS_TOKEN_SECRET
        .as_bytes()
        .chunks(76)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect::<Vec<_>>()
        .join("\n");
    for text in [unpadded, broken.as_str()] {
        assert_eq!(
            decrypt_prepend(text, &key).unwrap().as_hex(),
            PDF_PREPEND_HEX
        );
    }
}

#[test]
fn lst_and_prepend_in_bad_forms_are_rejected() {
    let err = LiveSessionToken::from_base64("YBWbLw+9RYP2nWrPQHxHZkBb1a").unwrap_err();
    assert!(
        matches!(
            err,
            Error::NotBase64 {
                input: Input::LiveSessionToken,
                ..
            }
        ),
        "{err:?}"
    );
    let err = LiveSessionToken::from_base64(&STANDARD.encode([1u8; 16])).unwrap_err();
    assert!(
        matches!(
            err,
            Error::OutOfRange {
                input: Input::LiveSessionToken,
                ..
            }
        ),
        "{err:?}"
    );
    let err = Prepend::from_hex("4766f3z").unwrap_err();
    assert!(
        matches!(
            err,
            Error::NotHex {
                input: Input::Prepend,
                ..
            }
        ),
        "{err:?}"
    );
    let err = Prepend::from_hex("4766f").unwrap_err();
    assert!(
        matches!(
            err,
            Error::NotHex {
                input: Input::Prepend,
                ..
            }
        ),
        "{err:?}"
    );
}

#[test]
fn lst_signature_that_is_not_hex_fails_validation() {
    let lst = LiveSessionToken::from_base64(PDF_LST_B64).unwrap();
    assert!(!lst.validate(PDF_CONSUMER_KEY, "not hex"));
    assert!(!lst.validate(PDF_CONSUMER_KEY, ""));
    assert!(!lst.validate(PDF_CONSUMER_KEY, &PDF_LST_SIGNATURE[..38]));
    assert!(lst.validate(PDF_CONSUMER_KEY, PDF_LST_SIGNATURE));
}

#[test]
fn requests_with_bad_method_or_url_are_rejected() {
    let lst = LiveSessionToken::from_base64(PDF_LST_B64).unwrap();
    let stamp = Stamp::new(1714489460, "abcdefgh12345678");
    for url in [
        "api.ibkr.com/v1/api/tickle",
        "ftp://api.ibkr.com/v1/api/tickle",
        "https://",
        "",
    ] {
        let err = sign_request(&pdf_credentials(), &lst, "GET", url, &[], &stamp).unwrap_err();
        assert!(
            matches!(
                err,
                Error::InvalidRequest {
                    input: Input::RequestUrl,
                    ..
                }
            ),
            "{url}: {err:?}"
        );
    }
    for method in ["", "GE T", "GET\r\n"] {
        let err =
            signature_base_string(method, "https://api.ibkr.com/v1/api/tickle", &[]).unwrap_err();
        assert!(
            matches!(
                err,
                Error::InvalidRequest {
                    input: Input::RequestMethod,
                    ..
                }
            ),
            "{method:?}: {err:?}"
        );
    }
    let err = signature_base_string("GET", "https://api.ibkr.com/x?a=%FF", &[]).unwrap_err();
    assert!(
        matches!(
            err,
            Error::InvalidRequest {
                input: Input::RequestUrl,
                ..
            }
        ),
        "{err:?}"
    );
}
