//! [`DemoOAuth`]: a complete, self-consistent set of OAuth credentials for the demo and the
//! tests, standing in for what a user gets from IBKR's self-service OAuth page plus the files
//! they generate with openssl. It can be generated (two fresh 2048-bit RSA keys), built from
//! given private keys, and written to or read from a directory.

use std::fmt;
use std::fs;
use std::io::Write as _;
use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use ibkr_oauth::{Credentials, DhParams, EncryptionKey, decrypt_prepend};
use rand::CryptoRng;
use rsa::pkcs1::DecodeRsaPrivateKey as _;
use rsa::pkcs8::{DecodePrivateKey as _, EncodePrivateKey as _, EncodePublicKey as _, LineEnding};
use zeroize::Zeroizing;

use super::{RFC3526_GROUP14_PRIME_HEX, SetupError, SimOAuth};

/// File names inside a credentials directory ([`DemoOAuth::write_to_dir`]).
mod files {
    pub const CONSUMER_KEY: &str = "consumer_key";
    pub const ACCESS_TOKEN: &str = "access_token";
    pub const ACCESS_TOKEN_SECRET: &str = "access_token_secret";
    pub const REALM: &str = "realm";
    pub const PRIVATE_SIGNATURE: &str = "private_signature.pem";
    pub const PRIVATE_ENCRYPTION: &str = "private_encryption.pem";
    pub const PUBLIC_SIGNATURE: &str = "public_signature.pem";
    pub const PUBLIC_ENCRYPTION: &str = "public_encryption.pem";
    pub const DH_PARAMS: &str = "dhparam.pem";
}

/// Characters of a generated consumer key (IBKR's page upper-cases what users type).
const CONSUMER_KEY_CHARS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
const CONSUMER_KEY_LEN: usize = 9;
const ACCESS_TOKEN_BYTES: usize = 10;
const PREPEND_BYTES: usize = 32;

/// A consistent set of OAuth credentials: the client's half (consumer key, access token,
/// access token secret as base64 RSA PKCS#1 v1.5 ciphertext, the two private keys as PKCS#8
/// PEM, the Diffie-Hellman group) and IBKR's half ([`DemoOAuth::sim_oauth`]). The
/// Diffie-Hellman group is RFC 3526 group 14 (generator 2).
///
/// Key generation takes about 0.5 to 1.5 s per set in a debug build; tests that need several
/// simulators should generate one set and share it, or pass keys made elsewhere to
/// [`DemoOAuth::from_private_keys`]. Secrets print redacted under `{:?}`.
///
/// ```no_run
/// # fn demo() -> Result<(), ibkr_sim::oauth::SetupError> {
/// use ibkr_sim::oauth::DemoOAuth;
///
/// let demo = DemoOAuth::load_or_generate(std::path::Path::new("target/demo-oauth"))?;
/// let config = ibkr_sim::SimConfig::default().with_oauth(demo.sim_oauth());
/// // The client reads consumer_key, access_token, access_token_secret,
/// // private_signature.pem, private_encryption.pem and dhparam.pem from that directory.
/// # let _ = config; Ok(()) }
/// ```
#[derive(Clone)]
pub struct DemoOAuth {
    consumer_key: String,
    access_token: Zeroizing<String>,
    access_token_secret: String,
    realm: String,
    signature_key_pem: Zeroizing<String>,
    encryption_key_pem: Zeroizing<String>,
    public_signature_pem: String,
    public_encryption_pem: String,
    dh: DhParams,
    sim: SimOAuth,
}

impl DemoOAuth {
    /// The RSA modulus length of generated keys.
    pub const KEY_BITS: usize = 2048;

    /// Generates a fresh set with the operating system's randomness: two 2048-bit RSA keys, a
    /// 9-character consumer key, a 20-hex-digit access token and a 32-byte secret.
    ///
    /// # Errors
    /// [`SetupError::Rsa`] if key generation, encryption or encoding fails.
    pub fn generate() -> Result<Self, SetupError> {
        Self::generate_with_rng(&mut rand::rng())
    }

    /// [`DemoOAuth::generate`] with the caller's generator; a seeded one (for example
    /// `rand::rngs::StdRng::seed_from_u64`) gives the same set every time.
    ///
    /// # Errors
    /// [`SetupError::Rsa`] if key generation, encryption or encoding fails.
    pub fn generate_with_rng<R: CryptoRng + ?Sized>(rng: &mut R) -> Result<Self, SetupError> {
        let signing =
            rsa::PrivateKey::new(rng, Self::KEY_BITS).map_err(rsa_error("key generation"))?;
        let encryption =
            rsa::PrivateKey::new(rng, Self::KEY_BITS).map_err(rsa_error("key generation"))?;
        Self::from_keys(signing, encryption, rng)
    }

    /// A set around two given private keys (PEM, PKCS#8 `PRIVATE KEY` or PKCS#1
    /// `RSA PRIVATE KEY`); the consumer key, access token and secret are drawn fresh from the
    /// operating system's randomness and the secret is encrypted to `encryption_key_pem`.
    ///
    /// # Errors
    /// [`SetupError::Key`] for a PEM that is not an RSA private key; [`SetupError::Rsa`] if
    /// encryption or encoding fails.
    pub fn from_private_keys(
        signature_key_pem: &str,
        encryption_key_pem: &str,
    ) -> Result<Self, SetupError> {
        Self::from_private_keys_with_rng(signature_key_pem, encryption_key_pem, &mut rand::rng())
    }

    /// [`DemoOAuth::from_private_keys`] with the caller's generator.
    ///
    /// # Errors
    /// As [`DemoOAuth::from_private_keys`].
    pub fn from_private_keys_with_rng<R: CryptoRng + ?Sized>(
        signature_key_pem: &str,
        encryption_key_pem: &str,
        rng: &mut R,
    ) -> Result<Self, SetupError> {
        let signing = parse_private_key(signature_key_pem, "private signature key")?;
        let encryption = parse_private_key(encryption_key_pem, "private encryption key")?;
        Self::from_keys(signing, encryption, rng)
    }

    fn from_keys<R: CryptoRng + ?Sized>(
        signing: rsa::PrivateKey,
        encryption: rsa::PrivateKey,
        rng: &mut R,
    ) -> Result<Self, SetupError> {
        let consumer_key: String = (0..CONSUMER_KEY_LEN)
            .map(|_| {
                let index = rng.next_u32() as usize % CONSUMER_KEY_CHARS.len();
                char::from(CONSUMER_KEY_CHARS[index])
            })
            .collect();
        let mut token = [0u8; ACCESS_TOKEN_BYTES];
        rng.fill_bytes(&mut token);
        let access_token = hex_lower(&token);
        let mut prepend = Zeroizing::new([0u8; PREPEND_BYTES]);
        rng.fill_bytes(prepend.as_mut_slice());
        let ciphertext = encryption
            .to_public_key()
            .pkcs1v15_encrypt_with_rng(rng, prepend.as_slice())
            .map_err(rsa_error("encryption of the access token secret"))?;
        Self::assemble(Parts {
            consumer_key,
            access_token: Zeroizing::new(access_token),
            access_token_secret: STANDARD.encode(ciphertext),
            realm: ibkr_oauth::REALM_LIMITED_POA.to_owned(),
            prepend: Zeroizing::new(prepend.to_vec()),
            signing,
            encryption,
            dh: DhParams::from_hex(RFC3526_GROUP14_PRIME_HEX)?,
        })
    }

    fn assemble(parts: Parts) -> Result<Self, SetupError> {
        let signature_key_pem = parts
            .signing
            .to_pkcs8_pem(LineEnding::LF)
            .map_err(rsa_error("PKCS#8 encoding"))?;
        let encryption_key_pem = parts
            .encryption
            .to_pkcs8_pem(LineEnding::LF)
            .map_err(rsa_error("PKCS#8 encoding"))?;
        let public_signature_pem = parts
            .signing
            .to_public_key()
            .to_public_key_pem(LineEnding::LF)
            .map_err(rsa_error("public key encoding"))?;
        let public_encryption_pem = parts
            .encryption
            .to_public_key()
            .to_public_key_pem(LineEnding::LF)
            .map_err(rsa_error("public key encoding"))?;
        let sim = SimOAuth::new(
            parts.consumer_key.clone(),
            parts.access_token.as_str(),
            &parts.prepend,
            &public_signature_pem,
            parts.dh.clone(),
        )?
        .with_realm(parts.realm.clone());
        Ok(Self {
            consumer_key: parts.consumer_key,
            access_token: parts.access_token,
            access_token_secret: parts.access_token_secret,
            realm: parts.realm,
            signature_key_pem: Zeroizing::new(signature_key_pem.to_string()),
            encryption_key_pem: Zeroizing::new(encryption_key_pem.to_string()),
            public_signature_pem,
            public_encryption_pem,
            dh: parts.dh,
            sim,
        })
    }

    /// IBKR's half: the simulator configuration that accepts this set (default lifetime and
    /// skew; change them with [`SimOAuth::with_lst_lifetime`] and
    /// [`SimOAuth::with_clock_skew`]).
    pub fn sim_oauth(&self) -> SimOAuth {
        self.sim.clone()
    }

    /// The consumer key, the access token and the realm, ready for `ibkr_oauth`.
    pub fn credentials(&self) -> Credentials {
        Credentials::new(self.consumer_key.as_str(), self.access_token.as_str())
            .with_realm(self.realm.as_str())
    }

    /// The consumer key (9 characters, `A-Z 0-9`).
    pub fn consumer_key(&self) -> &str {
        &self.consumer_key
    }

    /// The access token (20 lower-case hex digits).
    pub fn access_token(&self) -> &str {
        &self.access_token
    }

    /// The access token secret: base64 of the RSA PKCS#1 v1.5 ciphertext of the secret under
    /// the encryption key.
    pub fn access_token_secret(&self) -> &str {
        &self.access_token_secret
    }

    /// The realm (`limited_poa`).
    pub fn realm(&self) -> &str {
        &self.realm
    }

    /// The private signature key, PKCS#8 PEM.
    pub fn signature_key_pem(&self) -> &str {
        &self.signature_key_pem
    }

    /// The private encryption key, PKCS#8 PEM.
    pub fn encryption_key_pem(&self) -> &str {
        &self.encryption_key_pem
    }

    /// The public signature key (what a user uploads to IBKR), SPKI PEM.
    pub fn public_signature_pem(&self) -> &str {
        &self.public_signature_pem
    }

    /// The public encryption key (what a user uploads to IBKR), SPKI PEM.
    pub fn public_encryption_pem(&self) -> &str {
        &self.public_encryption_pem
    }

    /// The Diffie-Hellman group.
    pub fn dh_params(&self) -> &DhParams {
        &self.dh
    }

    /// The Diffie-Hellman prime, lower-case hex.
    pub fn dh_prime_hex(&self) -> String {
        self.dh.prime_hex()
    }

    /// The Diffie-Hellman group as `dhparam.pem` (PKCS#3 `BEGIN DH PARAMETERS`, the form
    /// `openssl dhparam` writes).
    pub fn dhparam_pem(&self) -> String {
        dh_params_pem(&self.dh)
    }

    /// Writes the set to `dir` (created if missing), one value per file, with the names of
    /// IBKR's setup: `consumer_key`, `access_token`, `access_token_secret`, `realm`,
    /// `private_signature.pem`, `private_encryption.pem`, `public_signature.pem`,
    /// `public_encryption.pem`, `dhparam.pem`. On Unix the private keys, the access token and
    /// its secret are written with mode 0600.
    ///
    /// # Errors
    /// [`SetupError::Io`] naming the file that could not be written.
    pub fn write_to_dir(&self, dir: &Path) -> Result<(), SetupError> {
        fs::create_dir_all(dir).map_err(io_error(dir))?;
        let line = |s: &str| format!("{s}\n");
        let entries: [(&str, String, bool); 9] = [
            (files::ACCESS_TOKEN, line(&self.access_token), true),
            (
                files::ACCESS_TOKEN_SECRET,
                line(&self.access_token_secret),
                true,
            ),
            (files::REALM, line(&self.realm), false),
            (
                files::PRIVATE_SIGNATURE,
                self.signature_key_pem.to_string(),
                true,
            ),
            (
                files::PRIVATE_ENCRYPTION,
                self.encryption_key_pem.to_string(),
                true,
            ),
            (
                files::PUBLIC_SIGNATURE,
                self.public_signature_pem.clone(),
                false,
            ),
            (
                files::PUBLIC_ENCRYPTION,
                self.public_encryption_pem.clone(),
                false,
            ),
            (files::DH_PARAMS, self.dhparam_pem(), false),
            // Last: its presence is what `load_or_generate` takes for a complete set.
            (files::CONSUMER_KEY, line(&self.consumer_key), false),
        ];
        for (name, contents, private) in entries {
            let contents = Zeroizing::new(contents);
            write_file(&dir.join(name), contents.as_bytes(), private)?;
        }
        Ok(())
    }

    /// Reads a set written by [`DemoOAuth::write_to_dir`] (the public keys are derived again
    /// from the private ones; a missing `realm` file means `limited_poa`). The secret is
    /// recovered by decrypting `access_token_secret` with the private encryption key.
    ///
    /// # Errors
    /// [`SetupError::Io`] for a missing or unreadable file; [`SetupError::Key`],
    /// [`SetupError::OAuth`] or [`SetupError::Invalid`] for contents that do not parse.
    pub fn read_from_dir(dir: &Path) -> Result<Self, SetupError> {
        let read = |name: &str| -> Result<Zeroizing<String>, SetupError> {
            let path = dir.join(name);
            fs::read_to_string(&path)
                .map(Zeroizing::new)
                .map_err(io_error(&path))
        };
        let consumer_key = read(files::CONSUMER_KEY)?.trim().to_owned();
        let access_token = Zeroizing::new(read(files::ACCESS_TOKEN)?.trim().to_owned());
        let access_token_secret = read(files::ACCESS_TOKEN_SECRET)?.trim().to_owned();
        let realm = match fs::read_to_string(dir.join(files::REALM)) {
            Ok(text) => text.trim().to_owned(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                ibkr_oauth::REALM_LIMITED_POA.to_owned()
            }
            Err(e) => {
                return Err(SetupError::Io {
                    path: dir.join(files::REALM),
                    source: e,
                });
            }
        };
        let signature_pem = read(files::PRIVATE_SIGNATURE)?;
        let encryption_pem = read(files::PRIVATE_ENCRYPTION)?;
        let dh = DhParams::from_pem(&read(files::DH_PARAMS)?)?;
        let prepend = decrypt_prepend(
            &access_token_secret,
            &EncryptionKey::from_pem(&encryption_pem)?,
        )?;
        Self::assemble(Parts {
            consumer_key,
            access_token,
            access_token_secret,
            realm,
            prepend: Zeroizing::new(prepend.as_bytes().to_vec()),
            signing: parse_private_key(&signature_pem, "private signature key")?,
            encryption: parse_private_key(&encryption_pem, "private encryption key")?,
            dh,
        })
    }

    /// Reads the set in `dir` if it has one (a `consumer_key` file), else generates one and
    /// writes it there, so a demo keeps the same credentials across runs.
    ///
    /// # Errors
    /// As [`DemoOAuth::read_from_dir`], [`DemoOAuth::generate`] and
    /// [`DemoOAuth::write_to_dir`].
    pub fn load_or_generate(dir: &Path) -> Result<Self, SetupError> {
        if dir.join(files::CONSUMER_KEY).exists() {
            return Self::read_from_dir(dir);
        }
        let demo = Self::generate()?;
        demo.write_to_dir(dir)?;
        Ok(demo)
    }
}

impl fmt::Debug for DemoOAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DemoOAuth")
            .field("consumer_key", &self.consumer_key)
            .field("access_token", &"<redacted>")
            .field("access_token_secret", &"<redacted>")
            .field("realm", &self.realm)
            .field("signature_key_pem", &"<redacted>")
            .field("encryption_key_pem", &"<redacted>")
            .field("dh", &self.dh)
            .finish_non_exhaustive()
    }
}

/// The pieces [`DemoOAuth::assemble`] derives the rest from.
struct Parts {
    consumer_key: String,
    access_token: Zeroizing<String>,
    access_token_secret: String,
    realm: String,
    prepend: Zeroizing<Vec<u8>>,
    signing: rsa::PrivateKey,
    encryption: rsa::PrivateKey,
    dh: DhParams,
}

fn rsa_error<E: fmt::Display>(operation: &'static str) -> impl Fn(E) -> SetupError {
    move |e| SetupError::Rsa {
        operation,
        detail: e.to_string(),
    }
}

fn io_error(path: &Path) -> impl Fn(std::io::Error) -> SetupError + '_ {
    move |source| SetupError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Parses an RSA private key from PEM (PKCS#8 or PKCS#1), by label.
fn parse_private_key(pem_text: &str, what: &'static str) -> Result<rsa::PrivateKey, SetupError> {
    let key_error = |detail: String| SetupError::Key { what, detail };
    let start = pem_text
        .find("-----BEGIN ")
        .ok_or_else(|| key_error("no `-----BEGIN` line; give the PEM text".to_owned()))?;
    let block = pem_text[start..].trim_end();
    if block.starts_with("-----BEGIN PRIVATE KEY-----") {
        rsa::PrivateKey::from_pkcs8_pem(block).map_err(|e| key_error(e.to_string()))
    } else if block.starts_with("-----BEGIN RSA PRIVATE KEY-----") {
        rsa::PrivateKey::from_pkcs1_pem(block).map_err(|e| key_error(e.to_string()))
    } else {
        Err(key_error(
            "expected `BEGIN PRIVATE KEY` (PKCS#8) or `BEGIN RSA PRIVATE KEY` (PKCS#1)".to_owned(),
        ))
    }
}

fn write_file(path: &Path, contents: &[u8], private: bool) -> Result<(), SetupError> {
    let mut options = fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    if private {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    #[cfg(not(unix))]
    let _ = private;
    let mut file = options.open(path).map_err(io_error(path))?;
    file.write_all(contents).map_err(io_error(path))
}

fn hex_lower(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Unsigned big-endian bytes of a hex number (odd lengths allowed).
fn hex_to_bytes(hex: &str) -> Vec<u8> {
    let padded = if hex.len() % 2 == 1 {
        format!("0{hex}")
    } else {
        hex.to_owned()
    };
    padded
        .as_bytes()
        .chunks(2)
        .map(|pair| {
            std::str::from_utf8(pair)
                .ok()
                .and_then(|s| u8::from_str_radix(s, 16).ok())
                .unwrap_or(0)
        })
        .collect()
}

/// DER length octets.
fn der_length(len: usize, out: &mut Vec<u8>) {
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let first = bytes
            .iter()
            .position(|&b| b != 0)
            .unwrap_or(bytes.len() - 1);
        out.push(0x80 | (bytes.len() - first) as u8);
        out.extend_from_slice(&bytes[first..]);
    }
}

/// A DER INTEGER for a non-negative number given as big-endian bytes.
fn der_unsigned(be: &[u8], out: &mut Vec<u8>) {
    let first = be
        .iter()
        .position(|&b| b != 0)
        .unwrap_or(be.len().saturating_sub(1));
    let mut value = be.get(first..).unwrap_or(&[0]).to_vec();
    if value.is_empty() {
        value.push(0);
    }
    if value[0] & 0x80 != 0 {
        value.insert(0, 0);
    }
    out.push(0x02);
    der_length(value.len(), out);
    out.extend_from_slice(&value);
}

/// PKCS#3 `DHParameter ::= SEQUENCE { prime INTEGER, base INTEGER }` as PEM.
fn dh_params_pem(dh: &DhParams) -> String {
    let mut body = Vec::new();
    der_unsigned(&hex_to_bytes(&dh.prime_hex()), &mut body);
    der_unsigned(&hex_to_bytes(&dh.generator_hex()), &mut body);
    let mut der = vec![0x30];
    der_length(body.len(), &mut der);
    der.extend_from_slice(&body);
    let b64 = STANDARD.encode(der);
    let mut pem = String::from("-----BEGIN DH PARAMETERS-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        pem.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        pem.push('\n');
    }
    pem.push_str("-----END DH PARAMETERS-----\n");
    pem
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `openssl genpkey -genparam -algorithm DH -pkeyopt group:modp_2048` (OpenSSL 3.0).
    const OPENSSL_MODP_2048_PEM: &str = "-----BEGIN DH PARAMETERS-----
MIIBCAKCAQEA///////////JD9qiIWjCNMTGYouA3BzRKQJOCIpnzHQCC76mOxOb
IlFKCHmONATd75UZs806QxswKwpt8l8UN0/hNW1tUcJF5IW1dmJefsb0TELppjft
awv/XLb0Brft7jhr+1qJn6WunyQRfEsf5kkoZlHs5Fs9wgB8uKFjvwWY2kg2HFXT
mmkWP6j9JM9fg2VdI9yjrZYcYvNWIIVSu57VKQdwlpZtZww1Tkq8mATxdGwIyhgh
fDKQXkYuNs474553LBgOhgObJ4Oi7Aeij7XFXfBvTFLJ3ivL9pVYFxg5lUl86pVq
5RXSJhiY+gUQFXKOWoqsqmj//////////wIBAg==
-----END DH PARAMETERS-----
";

    #[test]
    fn dhparam_pem_of_group14_matches_openssls() {
        let dh = DhParams::from_hex(RFC3526_GROUP14_PRIME_HEX).unwrap();
        assert_eq!(dh_params_pem(&dh), OPENSSL_MODP_2048_PEM);
        // And ibkr_oauth reads it back to the same group.
        assert_eq!(DhParams::from_pem(OPENSSL_MODP_2048_PEM).unwrap(), dh);
    }

    #[test]
    fn der_integers_get_a_sign_byte_only_when_needed() {
        let mut out = Vec::new();
        der_unsigned(&[0x00, 0x7f], &mut out);
        assert_eq!(out, [0x02, 0x01, 0x7f]);
        out.clear();
        der_unsigned(&[0x80], &mut out);
        assert_eq!(out, [0x02, 0x02, 0x00, 0x80]);
        out.clear();
        der_unsigned(&[0x00], &mut out);
        assert_eq!(out, [0x02, 0x01, 0x00]);
        out.clear();
        der_length(300, &mut out);
        assert_eq!(out, [0x82, 0x01, 0x2c]);
    }

    #[test]
    fn hex_to_bytes_pads_odd_lengths() {
        assert_eq!(hex_to_bytes("2"), [2]);
        assert_eq!(hex_to_bytes("1ff"), [1, 0xff]);
    }
}
