//! Text encodings shared by the modules: the OAuth percent-encoding, lower-case hex, and the
//! lenient hex reader for numbers that users paste.

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

use crate::error::{Error, Input, Result};

/// Everything except the RFC 3986 unreserved characters `A-Z a-z 0-9 - . _ ~` is escaped.
const OAUTH_ESCAPED: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Percent-encodes `text` the way IBKR's OAuth expects: the unreserved characters
/// `A-Z a-z 0-9 - . _ ~` stay as they are, every other byte of the UTF-8 text becomes `%XX`
/// with upper-case hex (so a space is `%20`, `=` is `%3D`, `&` is `%26`, `/` is `%2F`).
///
/// ```
/// assert_eq!(ibkr_oauth::percent_encode("a=b&c/d+e"), "a%3Db%26c%2Fd%2Be");
/// ```
pub fn percent_encode(text: &str) -> String {
    utf8_percent_encode(text, OAUTH_ESCAPED).to_string()
}

/// Lower-case hex of `bytes`, no separators.
pub(crate) fn hex_lower(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        out.push(char::from(DIGITS[usize::from(byte >> 4)]));
        out.push(char::from(DIGITS[usize::from(byte & 0x0f)]));
    }
    out
}

fn hex_value(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// Decodes hex with an even number of digits and nothing else (either case).
pub(crate) fn hex_bytes(text: &str, input: Input) -> Result<Vec<u8>> {
    let raw = text.as_bytes();
    if let Some(position) = raw.iter().position(|&c| hex_value(c).is_none()) {
        return Err(not_hex(input, text, position));
    }
    if !raw.len().is_multiple_of(2) {
        return Err(Error::NotHex {
            input,
            detail: format!("odd number of digits ({})", raw.len()),
        });
    }
    Ok(raw
        .chunks_exact(2)
        .map(|pair| (hex_value(pair[0]).unwrap_or(0) << 4) | hex_value(pair[1]).unwrap_or(0))
        .collect())
}

/// Length from which a digits-only number is taken for decimal.
const DECIMAL_SUSPECT_LEN: usize = 64;

/// Reads a hex number as people paste it: an optional `0x`, and digits possibly split by
/// whitespace or colons (the layout of `openssl dhparam -text`). Returns the bare digits.
/// Refuses long digit strings without any `a-f`, which are decimal numbers in practice.
pub(crate) fn hex_digits_lenient(text: &str, input: Input) -> Result<String> {
    let trimmed = text.trim();
    let body = trimmed
        .strip_prefix("0x")
        .or_else(|| trimmed.strip_prefix("0X"))
        .unwrap_or(trimmed);
    let mut digits = String::with_capacity(body.len());
    for (position, c) in body.char_indices() {
        if c.is_ascii_hexdigit() {
            digits.push(c.to_ascii_lowercase());
        } else if !(c.is_whitespace() || c == ':') {
            return Err(not_hex(input, body, position));
        }
    }
    if digits.is_empty() {
        return Err(Error::NotHex {
            input,
            detail: "no hex digits".to_owned(),
        });
    }
    // A long hex number without a single a-f digit is vanishingly unlikely ((10/16)^64 is
    // below 1e-13); such text is almost surely a decimal number pasted by mistake.
    if digits.len() >= DECIMAL_SUSPECT_LEN && digits.bytes().all(|c| c.is_ascii_digit()) {
        return Err(Error::NotHex {
            input,
            detail: format!(
                "its {} digits are all 0-9, so it looks like a decimal number; give it in hex",
                digits.len()
            ),
        });
    }
    Ok(digits)
}

fn not_hex(input: Input, text: &str, position: usize) -> Error {
    let found = text[position..].chars().next().unwrap_or('?');
    Error::NotHex {
        input,
        detail: format!("unexpected character {found:?} at position {position}"),
    }
}
