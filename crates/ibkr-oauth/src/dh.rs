//! Diffie-Hellman: the group parameters, the challenge `A = g^a mod p`, and the shared secret
//! `K = B^a mod p` in Java `BigInteger.toByteArray()` form.
//!
//! The arithmetic uses `num-bigint`, which is not constant-time. The exponent is fresh for
//! every token request and used once, so the exposure is a single local modpow per day.

use std::fmt;

use num_bigint::BigUint;
use rsa::pkcs8::der::asn1::UintRef;
use rsa::pkcs8::der::pem;
use rsa::pkcs8::der::{self, Decode as _, Reader as _, SliceReader};
use zeroize::Zeroizing;

use crate::encoding::hex_digits_lenient;
use crate::error::{Error, Input, Result};
use crate::redact::Redacted;

/// The Diffie-Hellman group: prime `p` and generator `g`. Neither is secret. The prime is
/// not tested for primality (IBKR's own published example "prime" is not one); it only has
/// to be larger than 3. The generator may be larger than `p` (the published example's is),
/// but `g mod p` must not be 0, 1 or `p - 1`.
#[derive(Clone, PartialEq, Eq)]
pub struct DhParams {
    prime: BigUint,
    generator: BigUint,
}

impl DhParams {
    /// The generator IBKR uses for self-service consumers.
    pub const DEFAULT_GENERATOR: u32 = 2;

    /// Reads the prime from hex, with generator 2. Accepts an optional `0x` and digits split
    /// by whitespace or colons, as in the `P:` block of `openssl dhparam -text`.
    ///
    /// # Errors
    /// [`Error::NotHex`] or [`Error::OutOfRange`] naming [`Input::DhPrime`].
    pub fn from_hex(prime_hex: &str) -> Result<Self> {
        let prime = parse_hex_number(prime_hex, Input::DhPrime)?;
        Self::new(prime, BigUint::from(Self::DEFAULT_GENERATOR))
    }

    /// Reads `p` and `g` from the `dhparam.pem` made by `openssl dhparam 2048`
    /// (`BEGIN DH PARAMETERS`: a DER `SEQUENCE { INTEGER p, INTEGER g [, INTEGER length] }`).
    ///
    /// # Errors
    /// [`Error::NotPem`], [`Error::WrongPemKind`] or [`Error::Malformed`] naming
    /// [`Input::DhParameters`]; [`Error::OutOfRange`] if `p` or `g` is unusable.
    pub fn from_pem(pem_text: &str) -> Result<Self> {
        let input = Input::DhParameters;
        let start = pem_text.find("-----BEGIN ").ok_or_else(|| Error::NotPem {
            input,
            detail: "no `-----BEGIN` line".to_owned(),
        })?;
        let (label, der_bytes) =
            pem::decode_vec(pem_text[start..].trim_end().as_bytes()).map_err(|e| {
                Error::NotPem {
                    input,
                    detail: e.to_string(),
                }
            })?;
        if label != "DH PARAMETERS" {
            return Err(Error::WrongPemKind {
                input,
                detail: format!(
                    "found a `{label}` block; expected `DH PARAMETERS` (the file made by `openssl dhparam 2048`)"
                ),
            });
        }
        let (prime, generator) = parse_dh_der(&der_bytes).map_err(|e| Error::Malformed {
            input,
            expected: "PKCS#3 DH parameter block",
            detail: e.to_string(),
        })?;
        Self::new(prime, generator)
    }

    /// Replaces the generator.
    ///
    /// # Errors
    /// [`Error::OutOfRange`] if `g mod p` is 0, 1 or `p - 1`.
    pub fn with_generator(self, generator: u32) -> Result<Self> {
        Self::new(self.prime, BigUint::from(generator))
    }

    /// Replaces the generator with one given in hex (same leniency as [`DhParams::from_hex`]).
    ///
    /// # Errors
    /// [`Error::NotHex`] or [`Error::OutOfRange`] naming [`Input::DhGenerator`].
    pub fn with_generator_hex(self, generator_hex: &str) -> Result<Self> {
        let generator = parse_hex_number(generator_hex, Input::DhGenerator)?;
        Self::new(self.prime, generator)
    }

    /// The prime's length in bits.
    pub fn prime_bits(&self) -> u64 {
        self.prime.bits()
    }

    /// The prime as unpadded lower-case hex.
    pub fn prime_hex(&self) -> String {
        self.prime.to_str_radix(16)
    }

    /// The generator as unpadded lower-case hex.
    pub fn generator_hex(&self) -> String {
        self.generator.to_str_radix(16)
    }

    pub(crate) fn new(prime: BigUint, generator: BigUint) -> Result<Self> {
        if prime <= BigUint::from(3u32) {
            return Err(Error::OutOfRange {
                input: Input::DhPrime,
                detail: format!("p = {prime} is too small to be a Diffie-Hellman modulus"),
            });
        }
        // g itself may exceed p (IBKR's published example does); only its residue matters.
        let residue = &generator % &prime;
        if residue <= BigUint::from(1u32) || residue == &prime - 1u32 {
            return Err(Error::OutOfRange {
                input: Input::DhGenerator,
                detail: "g mod p must not be 0, 1 or p - 1".to_owned(),
            });
        }
        Ok(Self { prime, generator })
    }
}

impl fmt::Debug for DhParams {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DhParams")
            .field("prime_bits", &self.prime.bits())
            .field("generator_bits", &self.generator.bits())
            .finish()
    }
}

/// One Diffie-Hellman exchange from the client's side: the secret exponent `a` and the
/// public challenge `A = g^a mod p`. Make a fresh one for every live session token request.
#[derive(Clone)]
pub struct DhChallenge {
    params: DhParams,
    secret: BigUint,
    challenge_hex: String,
}

impl DhChallenge {
    /// Number of random bytes in the secret exponent made by [`DhChallenge::generate`].
    pub const SECRET_BYTES: usize = 32;

    /// Draws a 256-bit secret exponent from the operating system's CSPRNG (through `rand`'s
    /// thread generator) and computes the challenge.
    pub fn generate(params: &DhParams) -> Self {
        loop {
            let random = Zeroizing::new(rand::random::<[u8; Self::SECRET_BYTES]>());
            // Fails only for an exponent below 2, which 256 random bits essentially never are.
            if let Ok(challenge) = Self::new(params, random.as_slice()) {
                return challenge;
            }
        }
    }

    /// Computes the challenge for a given secret exponent: `random` read as an unsigned
    /// big-endian number. For tests and for callers with their own randomness.
    ///
    /// # Errors
    /// [`Error::OutOfRange`] naming [`Input::DhSecret`] if the exponent is below 2.
    pub fn new(params: &DhParams, random: &[u8]) -> Result<Self> {
        let secret = BigUint::from_bytes_be(random);
        if secret <= BigUint::from(1u32) {
            return Err(Error::OutOfRange {
                input: Input::DhSecret,
                detail: "the exponent must be at least 2".to_owned(),
            });
        }
        let challenge = params.generator.modpow(&secret, &params.prime);
        Ok(Self {
            params: params.clone(),
            secret,
            challenge_hex: challenge.to_str_radix(16),
        })
    }

    /// `A` as lower-case hex with no `0x` and no padding (its length may be odd): the value of
    /// the `diffie_hellman_challenge` parameter.
    pub fn challenge_hex(&self) -> &str {
        &self.challenge_hex
    }

    /// Finishes the exchange with IBKR's `diffie_hellman_response` (`B`, unsigned hex):
    /// computes `K = B^a mod p` and returns it in Java `BigInteger.toByteArray()` form, the
    /// HMAC key for [`live_session_token`](crate::live_session_token).
    ///
    /// # Errors
    /// [`Error::NotHex`] or [`Error::OutOfRange`] (unless `1 < B < p - 1`) naming
    /// [`Input::DhResponse`].
    pub fn k_bytes(&self, dh_response_hex: &str) -> Result<SharedSecret> {
        let response = parse_hex_number(dh_response_hex, Input::DhResponse)?;
        if response <= BigUint::from(1u32) || response >= &self.params.prime - 1u32 {
            return Err(Error::OutOfRange {
                input: Input::DhResponse,
                detail: "B must satisfy 1 < B < p - 1".to_owned(),
            });
        }
        let shared = response.modpow(&self.secret, &self.params.prime);
        Ok(SharedSecret {
            bytes: Zeroizing::new(java_bytes(&shared)),
        })
    }
}

impl fmt::Debug for DhChallenge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DhChallenge")
            .field("params", &self.params)
            .field("secret", &Redacted)
            .finish_non_exhaustive()
    }
}

/// The Diffie-Hellman shared secret `K` as bytes: big-endian two's complement with the fewest
/// bytes, which for a positive number means a leading `0x00` exactly when the top bit of the
/// first byte would be set.
#[derive(Clone)]
pub struct SharedSecret {
    bytes: Zeroizing<Vec<u8>>,
}

impl SharedSecret {
    /// The bytes (the HMAC-SHA1 key of the live session token).
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }
}

impl fmt::Debug for SharedSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("SharedSecret").field(&Redacted).finish()
    }
}

#[cfg(test)]
impl SharedSecret {
    /// Wraps raw bytes, bypassing the sign-byte rule (for control cases in tests).
    pub(crate) fn from_raw_for_tests(bytes: Vec<u8>) -> Self {
        Self {
            bytes: Zeroizing::new(bytes),
        }
    }
}

/// Java `BigInteger.toByteArray()` for a non-negative number.
pub(crate) fn java_bytes(value: &BigUint) -> Vec<u8> {
    let mut bytes = value.to_bytes_be();
    if bytes[0] & 0x80 != 0 {
        bytes.insert(0, 0);
    }
    bytes
}

fn parse_hex_number(text: &str, input: Input) -> Result<BigUint> {
    let digits = hex_digits_lenient(text, input)?;
    BigUint::parse_bytes(digits.as_bytes(), 16).ok_or_else(|| Error::NotHex {
        input,
        detail: "not a hex number".to_owned(),
    })
}

/// `SEQUENCE { INTEGER p, INTEGER g, INTEGER privateValueLength OPTIONAL }` (PKCS#3).
fn parse_dh_der(bytes: &[u8]) -> der::Result<(BigUint, BigUint)> {
    let mut reader = SliceReader::new(bytes)?;
    let numbers = reader.sequence(|seq| {
        let prime = UintRef::decode(seq)?;
        let generator = UintRef::decode(seq)?;
        if !seq.is_finished() {
            UintRef::decode(seq)?;
        }
        Ok::<_, der::Error>((
            BigUint::from_bytes_be(prime.as_bytes()),
            BigUint::from_bytes_be(generator.as_bytes()),
        ))
    })?;
    reader.finish()?;
    Ok(numbers)
}
