//! The crate's one error type. Every message names the input it is about and what is wrong
//! with it, and never includes secret material.

use std::fmt;

/// `Result` with this crate's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

/// Which of the user's inputs (or IBKR's replies) an [`Error`] is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Input {
    /// The private signature key (signs the live session token request).
    SignatureKey,
    /// The private encryption key (decrypts the access token secret).
    EncryptionKey,
    /// The Diffie-Hellman prime `p`.
    DhPrime,
    /// The Diffie-Hellman generator `g`.
    DhGenerator,
    /// The Diffie-Hellman parameters file (`dhparam.pem`).
    DhParameters,
    /// The random exponent of the Diffie-Hellman challenge.
    DhSecret,
    /// IBKR's `diffie_hellman_response`.
    DhResponse,
    /// The access token secret from IBKR's OAuth page.
    AccessTokenSecret,
    /// The prepend (the decrypted access token secret) given as hex.
    Prepend,
    /// A live session token given as base64.
    LiveSessionToken,
    /// The URL of a request to sign.
    RequestUrl,
    /// The HTTP method of a request to sign.
    RequestMethod,
}

impl fmt::Display for Input {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Input::SignatureKey => "private signature key",
            Input::EncryptionKey => "private encryption key",
            Input::DhPrime => "Diffie-Hellman prime",
            Input::DhGenerator => "Diffie-Hellman generator",
            Input::DhParameters => "Diffie-Hellman parameters",
            Input::DhSecret => "Diffie-Hellman secret exponent",
            Input::DhResponse => "diffie_hellman_response",
            Input::AccessTokenSecret => "access token secret",
            Input::Prepend => "prepend",
            Input::LiveSessionToken => "live session token",
            Input::RequestUrl => "request URL",
            Input::RequestMethod => "request method",
        })
    }
}

/// Everything that can go wrong while loading inputs, deriving the token or signing.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The text is not a PEM block.
    #[error(
        "the {input} is not PEM text ({detail}); expected the whole file, from `-----BEGIN ...-----` to `-----END ...-----`"
    )]
    NotPem {
        /// Which input.
        input: Input,
        /// What the PEM parser saw.
        detail: String,
    },
    /// The PEM block is something other than what this input needs (for example a public key
    /// where a private key belongs).
    #[error("the {input} is the wrong kind of PEM: {detail}")]
    WrongPemKind {
        /// Which input.
        input: Input,
        /// What was found and what to use instead.
        detail: String,
    },
    /// The PEM block has the right label but its contents do not parse.
    #[error("the {input} is not a valid {expected}: {detail}")]
    Malformed {
        /// Which input.
        input: Input,
        /// What the input should have been.
        expected: &'static str,
        /// What the parser reported.
        detail: String,
    },
    /// An RSA key is shorter than IBKR accepts.
    #[error(
        "the {input} is a {bits}-bit RSA key; IBKR needs at least 2048 bits (make one with `openssl genrsa 2048`)"
    )]
    KeyTooSmall {
        /// Which input.
        input: Input,
        /// The modulus length of the key.
        bits: usize,
    },
    /// The text is not hexadecimal.
    #[error("the {input} is not hex: {detail}")]
    NotHex {
        /// Which input.
        input: Input,
        /// Where the first offending character is.
        detail: String,
    },
    /// The text is not base64.
    #[error("the {input} is not base64 ({detail}); copy it again in full, `=` padding included")]
    NotBase64 {
        /// Which input.
        input: Input,
        /// What the decoder reported.
        detail: String,
    },
    /// A number or length is outside the range that makes sense.
    #[error("the {input} is out of range: {detail}")]
    OutOfRange {
        /// Which input.
        input: Input,
        /// The rule that was broken.
        detail: String,
    },
    /// The access token secret does not decrypt with the private encryption key.
    #[error(
        "the access token secret does not decrypt with the private encryption key ({detail}); check that the key is the private half of the public encryption key uploaded to IBKR"
    )]
    Decrypt {
        /// What went wrong.
        detail: String,
    },
    /// RSA signing failed.
    #[error("signing with the private signature key failed: {detail}")]
    Sign {
        /// What went wrong.
        detail: String,
    },
    /// A request to sign is not well formed.
    #[error("the {input} `{value}` cannot be signed: {detail}")]
    InvalidRequest {
        /// [`Input::RequestUrl`] or [`Input::RequestMethod`].
        input: Input,
        /// The offending value (URLs and methods are not secret).
        value: String,
        /// What is wrong with it.
        detail: &'static str,
    },
}
