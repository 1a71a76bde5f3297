//! Small encodings written by hand because each is a few lines where a crate would bring more
//! than it saves: lower-case hex (store keys, signatures) and the percent-encoding that keeps a
//! claim from breaking the header it travels in.

use std::borrow::Cow;

/// Lower-case hex of `bytes`.
pub fn hex_lower(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    s
}

/// 64 lower-case hex digits as 32 bytes; anything else (upper case included) is `None`.
pub fn decode_hex32(hex: &[u8]) -> Option<[u8; 32]> {
    if hex.len() != 64 {
        return None;
    }
    let digit = |b: u8| match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        _ => None,
    };
    let mut out = [0u8; 32];
    for (i, pair) in hex.chunks_exact(2).enumerate() {
        out[i] = (digit(pair[0])? << 4) | digit(pair[1])?;
    }
    Some(out)
}

/// Are `a` and `b` equal? Takes the same time for any two inputs of the same length, so that
/// timing cannot tell how much of a secret (or a cached token) a guess got right.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |diff, (x, y)| diff | (x ^ y)) == 0
}

/// A claim as a header value: printable ASCII passes as is; control characters, non-ASCII
/// bytes (UTF-8) and `%` are percent-encoded, so that no value can break the header or smuggle
/// a second one. A list element keeps only a conservative token set (letters, digits,
/// `-._:~@`) and encodes everything else, so that no element splits into forged ones for an
/// app that splits on commas, spaces, semicolons or anything else. Apps decode with any URL
/// decoder.
pub fn header_value(value: &str, list_item: bool) -> Cow<'_, str> {
    let token = |b: u8| b.is_ascii_alphanumeric() || b"-._:~@".contains(&b);
    let needs = |b: u8| if list_item { !token(b) } else { !(0x20..0x7f).contains(&b) || b == b'%' };
    if !value.bytes().any(needs) {
        return Cow::Borrowed(value);
    }
    let mut out = String::with_capacity(value.len() + 8);
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for b in value.bytes() {
        if needs(b) {
            out.push('%');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0xf)]));
        } else {
            out.push(char::from(b));
        }
    }
    Cow::Owned(out)
}

/// A list claim as one comma-separated header value, each item encoded by `header_value`.
pub fn header_list(items: &[String]) -> String {
    let mut out = String::new();
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&header_value(item, true));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trips_in_lower_case_only() {
        let bytes: [u8; 32] = std::array::from_fn(|i| (i * 37) as u8);
        let hex = hex_lower(&bytes);
        assert_eq!(hex.len(), 64);
        assert_eq!(decode_hex32(hex.as_bytes()), Some(bytes));
        assert_eq!(decode_hex32(hex.to_uppercase().as_bytes()), None);
        assert_eq!(decode_hex32(&hex.as_bytes()[..62]), None);
        assert_eq!(decode_hex32(b"zz".repeat(32).as_slice()), None);
    }

    #[test]
    fn equal_means_every_byte_and_the_length() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret2"));
        assert!(!constant_time_eq(b"", b"x"));
        assert!(constant_time_eq(b"", b""));
    }

    #[test]
    fn claim_values_cannot_break_or_forge_headers() {
        let cases = [
            ("alice@acme.test", false, "alice@acme.test"),
            ("Zoë", false, "Zo%C3%AB"),
            ("a\r\nX-User-Id: admin", false, "a%0D%0AX-User-Id: admin"),
            ("nul\0", false, "nul%00"),
            ("100%", false, "100%25"),
            ("wiki,admin", true, "wiki%2Cadmin"),
            ("wiki,admin", false, "wiki,admin"),
            // an app splitting on commas or spaces must not find `crm` in one element
            ("y, crm", true, "y%2C%20crm"),
            ("a;b|c d\te", true, "a%3Bb%7Cc%20d%09e"),
            ("org:users:read", true, "org:users:read"),
            ("team-a_b.c~d@corp", true, "team-a_b.c~d@corp"),
        ];
        for (raw, list, want) in cases {
            assert_eq!(header_value(raw, list), want, "{raw:?}");
            assert!(http::HeaderValue::from_str(&header_value(raw, list)).is_ok());
        }
        assert_eq!(header_list(&["wiki".into(), "crm,admin".into()]), "wiki,crm%2Cadmin");
    }
}
