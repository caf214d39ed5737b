//! The two RSA private keys and the prepend: loading PEM (PKCS#1 or PKCS#8), the size rule,
//! decrypting the access token secret, and RSA-SHA256 signing. Owns nothing about base
//! strings; see `signing.rs` for those.

use std::fmt;

use base64::Engine as _;
use base64::engine::DecodePaddingMode;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD};
use rsa::pkcs1::DecodeRsaPrivateKey as _;
use rsa::pkcs8::DecodePrivateKey as _;
use rsa::pkcs8::der::pem;
use rsa::traits::PublicKeyParts as _;
use sha2::Sha256;
use zeroize::Zeroizing;

use crate::encoding::{hex_bytes, hex_lower};
use crate::error::{Error, Input, Result};
use crate::redact::Redacted;

/// The smallest RSA modulus IBKR's OAuth page takes.
const MIN_KEY_BITS: usize = 2048;

/// The private signature key: the private half of the `public_signature.pem` uploaded to
/// IBKR. It signs only the live session token request (RSA-SHA256, PKCS#1 v1.5).
#[derive(Clone)]
pub struct SigningKey {
    key: rsa::PrivateKey,
    bits: usize,
}

impl SigningKey {
    /// Loads the key from PEM text: PKCS#1 (`BEGIN RSA PRIVATE KEY`) or unencrypted PKCS#8
    /// (`BEGIN PRIVATE KEY`), at least 2048 bits.
    ///
    /// # Errors
    /// [`Error::NotPem`], [`Error::WrongPemKind`], [`Error::Malformed`] or
    /// [`Error::KeyTooSmall`], each naming [`Input::SignatureKey`].
    pub fn from_pem(pem_text: &str) -> Result<Self> {
        let (key, bits) = load_private_key(pem_text, Input::SignatureKey)?;
        Ok(Self { key, bits })
    }

    /// The modulus length in bits.
    pub fn bits(&self) -> usize {
        self.bits
    }

    /// Signs the UTF-8 bytes of `base_string` with RSASSA-PKCS1-v1_5 over SHA-256 and returns
    /// the signature in standard, padded base64 (not yet percent-encoded).
    ///
    /// # Errors
    /// [`Error::Sign`] if the RSA operation fails.
    pub fn sign_base64(&self, base_string: &str) -> Result<String> {
        let signature = self
            .key
            .pkcs1v15_sign::<Sha256>(base_string.as_bytes())
            .map_err(|e| Error::Sign {
                detail: e.to_string(),
            })?;
        Ok(STANDARD.encode(signature))
    }
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("bits", &self.bits)
            .field("key", &Redacted)
            .finish()
    }
}

/// The private encryption key: the private half of the `public_encryption.pem` uploaded to
/// IBKR. It decrypts the access token secret (RSA, PKCS#1 v1.5 padding).
#[derive(Clone)]
pub struct EncryptionKey {
    key: rsa::PrivateKey,
    bits: usize,
}

impl EncryptionKey {
    /// Loads the key from PEM text: PKCS#1 (`BEGIN RSA PRIVATE KEY`) or unencrypted PKCS#8
    /// (`BEGIN PRIVATE KEY`), at least 2048 bits.
    ///
    /// # Errors
    /// [`Error::NotPem`], [`Error::WrongPemKind`], [`Error::Malformed`] or
    /// [`Error::KeyTooSmall`], each naming [`Input::EncryptionKey`].
    pub fn from_pem(pem_text: &str) -> Result<Self> {
        let (key, bits) = load_private_key(pem_text, Input::EncryptionKey)?;
        Ok(Self { key, bits })
    }

    /// The modulus length in bits.
    pub fn bits(&self) -> usize {
        self.bits
    }
}

impl fmt::Debug for EncryptionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EncryptionKey")
            .field("bits", &self.bits)
            .field("key", &Redacted)
            .finish()
    }
}

/// The decrypted access token secret. Its lower-case hex ([`Prepend::as_hex`]) is put in
/// front of the live session token request's base string; its raw bytes
/// ([`Prepend::as_bytes`]) are the data of the HMAC that derives the live session token.
#[derive(Clone)]
pub struct Prepend {
    bytes: Zeroizing<Vec<u8>>,
    hex: Zeroizing<String>,
}

impl Prepend {
    /// Wraps already-decrypted secret bytes.
    pub fn from_bytes(bytes: &[u8]) -> Self {
        Self {
            hex: Zeroizing::new(hex_lower(bytes)),
            bytes: Zeroizing::new(bytes.to_vec()),
        }
    }

    /// Reads a prepend kept as hex (for example from a cache). Either case is accepted.
    ///
    /// # Errors
    /// [`Error::NotHex`] naming [`Input::Prepend`].
    pub fn from_hex(hex: &str) -> Result<Self> {
        let bytes = Zeroizing::new(hex_bytes(hex.trim(), Input::Prepend)?);
        Ok(Self::from_bytes(&bytes))
    }

    /// The secret as lower-case hex, no separators: the text that goes in front of the base
    /// string.
    pub fn as_hex(&self) -> &str {
        &self.hex
    }

    /// The secret's raw bytes: the HMAC data for the live session token.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }
}

impl fmt::Debug for Prepend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Prepend").field(&Redacted).finish()
    }
}

/// Step one of the flow: base64-decodes the access token secret and decrypts it with the
/// private encryption key (RSAES-PKCS1-v1_5). Whitespace in the base64 is ignored and the
/// `=` padding may be missing.
///
/// The `rsa` crate decrypts PKCS#1 v1.5 with implicit rejection: a ciphertext that was made
/// for a different key yields a meaningless prepend instead of an error. That shows up
/// later, when [`validate_lst`](crate::validate_lst) fails.
///
/// # Errors
/// [`Error::NotBase64`] for text that is not base64, [`Error::Decrypt`] when the ciphertext
/// length does not match the key or the RSA operation fails.
pub fn decrypt_prepend(access_token_secret_b64: &str, key: &EncryptionKey) -> Result<Prepend> {
    const LENIENT: GeneralPurpose = GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
    );
    let compact: String = access_token_secret_b64
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    let ciphertext = LENIENT.decode(compact).map_err(|e| Error::NotBase64 {
        input: Input::AccessTokenSecret,
        detail: e.to_string(),
    })?;
    let expected = key.key.size();
    if ciphertext.len() != expected {
        return Err(Error::Decrypt {
            detail: format!(
                "it is {} bytes long but a {}-bit key takes exactly {expected}",
                ciphertext.len(),
                key.bits
            ),
        });
    }
    let secret =
        Zeroizing::new(
            key.key
                .pkcs1v15_decrypt(&ciphertext)
                .map_err(|e| Error::Decrypt {
                    detail: e.to_string(),
                })?,
        );
    Ok(Prepend::from_bytes(&secret))
}

/// Parses an RSA private key from PEM, dispatching on the PEM label, and enforces the size
/// rule. Returns the key and its modulus length in bits.
fn load_private_key(pem_text: &str, input: Input) -> Result<(rsa::PrivateKey, usize)> {
    // Tolerate text around the block (for example `Bag Attributes` lines from openssl).
    let start = pem_text.find("-----BEGIN ").ok_or_else(|| Error::NotPem {
        input,
        detail: "no `-----BEGIN` line".to_owned(),
    })?;
    let block = pem_text[start..].trim_end();
    let label = pem::decode_label(block.as_bytes()).map_err(|e| Error::NotPem {
        input,
        detail: e.to_string(),
    })?;
    let parsed = match label {
        "RSA PRIVATE KEY" => rsa::PrivateKey::from_pkcs1_pem(block).map_err(|e| Error::Malformed {
            input,
            expected: "PKCS#1 RSA private key",
            detail: e.to_string(),
        }),
        "PRIVATE KEY" => rsa::PrivateKey::from_pkcs8_pem(block).map_err(|e| Error::Malformed {
            input,
            expected: "PKCS#8 RSA private key",
            detail: format!("{e} (an RSA key is needed; EC and other key types do not work)"),
        }),
        "ENCRYPTED PRIVATE KEY" => Err(wrong_kind(
            input,
            "it is password-protected; write an unencrypted copy with `openssl pkey -in KEY.pem -out KEY-plain.pem`",
        )),
        "PUBLIC KEY" | "RSA PUBLIC KEY" => Err(wrong_kind(
            input,
            "it is a public key; use the private key it was made from (the public one is what IBKR gets)",
        )),
        "DH PARAMETERS" => Err(wrong_kind(
            input,
            "it holds Diffie-Hellman parameters (dhparam.pem), not an RSA private key",
        )),
        other => Err(Error::WrongPemKind {
            input,
            detail: format!(
                "found a `{other}` block; expected `RSA PRIVATE KEY` (PKCS#1) or `PRIVATE KEY` (PKCS#8)"
            ),
        }),
    }?;
    let bits = modulus_bits(&parsed.n_bytes());
    if bits < MIN_KEY_BITS {
        return Err(Error::KeyTooSmall { input, bits });
    }
    Ok((parsed, bits))
}

fn wrong_kind(input: Input, detail: &str) -> Error {
    Error::WrongPemKind {
        input,
        detail: detail.to_owned(),
    }
}

/// Bit length of a big-endian unsigned number.
fn modulus_bits(be: &[u8]) -> usize {
    let digits = match be.iter().position(|&b| b != 0) {
        Some(first) => &be[first..],
        None => return 0,
    };
    (digits.len() - 1) * 8 + (8 - digits[0].leading_zeros() as usize)
}
