//! Request-path normalisation: the router matches, and the upstream receives, one canonical path,
//! so that no spelling of a path can reach a route other than the one it was checked against.
//!
//! Hand-written because the rules are security policy, not generic URL handling: `url` and
//! `percent-encoding` decode everything (including `%2F`), which is exactly what must not happen.

use std::borrow::Cow;
use std::fmt;

/// Why a request path is refused with 400.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathRejection {
    /// Does not start with `/`.
    NotAbsolute,
    /// `%2F`: an encoded slash would let one segment hide another.
    EncodedSlash,
    /// A raw or encoded backslash, which some servers treat as `/`.
    Backslash,
    /// NUL or another control character, raw or encoded.
    ControlCharacter,
    /// `%` not followed by two hex digits.
    BadEscape,
    /// A raw byte outside ASCII (clients must percent-encode it).
    NonAscii,
    /// `..` above the root.
    AboveRoot,
    /// A raw `#`: no request-target has a fragment, and a server that cuts the path there
    /// (nginx, most app frameworks) would serve another path than the one judged.
    Fragment,
    /// A dot segment with parameters (`..;x`), which servlet containers read as `..`.
    DotSegmentWithParameters,
    /// A segment that is only parameters (`/;x/`), which servlet containers drop.
    EmptySegmentWithParameters,
    /// `%3B`: an encoded `;` that a server decoding before splitting parameters would split on.
    EncodedSemicolon,
    /// An encoded percent sign in front of an encoded dot, slash or backslash (`%252e`), which a
    /// server that decodes twice would turn into a traversal.
    DoubleEncoding,
}

impl fmt::Display for PathRejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PathRejection::NotAbsolute => "the path must start with '/'",
            PathRejection::Fragment => "the path contains a '#'",
            PathRejection::EncodedSlash => "the path contains an encoded '/'",
            PathRejection::Backslash => "the path contains a backslash",
            PathRejection::ControlCharacter => "the path contains a control character",
            PathRejection::BadEscape => "the path contains a malformed percent-escape",
            PathRejection::NonAscii => "the path contains a raw non-ASCII byte",
            PathRejection::AboveRoot => "the path climbs above '/'",
            PathRejection::DotSegmentWithParameters => "the path contains a dot segment with parameters",
            PathRejection::EmptySegmentWithParameters => "the path contains a segment with only parameters",
            PathRejection::EncodedSemicolon => "the path contains an encoded ';'",
            PathRejection::DoubleEncoding => "the path contains a double-encoded character",
        })
    }
}

/// Normalises a raw request path (without its query): decodes percent-escapes of unreserved
/// characters, upper-cases the remaining escapes, merges `//`, resolves `.` and `..`; refuses
/// anything that different servers could read differently.
pub fn normalize_path(raw: &[u8]) -> Result<String, PathRejection> {
    if raw.first() != Some(&b'/') {
        return Err(PathRejection::NotAbsolute);
    }
    let decoded = decode_unreserved(raw)?;
    remove_dot_segments(&decoded)
}

/// Does the raw path (no query) have a `.` or `..` segment, raw or percent-encoded? A front
/// proxy passes such a path to its app as it came, and the app may read it differently from
/// its normal form (`/admin/../pub/x` routed by prefix to the admin pages); browsers never send
/// one.
pub fn has_dot_segments(raw: &[u8]) -> bool {
    match decode_unreserved(raw) {
        Ok(decoded) => decoded.split('/').any(|seg| seg == "." || seg == ".."),
        // not a path normalisation accepts either
        Err(_) => false,
    }
}

fn decode_unreserved(raw: &[u8]) -> Result<String, PathRejection> {
    let mut out = String::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        let b = raw[i];
        match b {
            b'%' => {
                let (hi, lo) = match (raw.get(i + 1), raw.get(i + 2)) {
                    (Some(&h), Some(&l)) => (hex(h), hex(l)),
                    _ => (None, None),
                };
                let (Some(hi), Some(lo)) = (hi, lo) else {
                    return Err(PathRejection::BadEscape);
                };
                let v = hi << 4 | lo;
                match v {
                    b'/' => return Err(PathRejection::EncodedSlash),
                    b'\\' => return Err(PathRejection::Backslash),
                    0..0x20 | 0x7f => return Err(PathRejection::ControlCharacter),
                    b';' => return Err(PathRejection::EncodedSemicolon),
                    _ if is_unreserved(v) => out.push(char::from(v)),
                    _ => {
                        out.push('%');
                        out.push(char::from(HEX_UPPER[usize::from(hi)]));
                        out.push(char::from(HEX_UPPER[usize::from(lo)]));
                    }
                }
                i += 3;
            }
            b'\\' => return Err(PathRejection::Backslash),
            b'#' => return Err(PathRejection::Fragment),
            0..0x20 | 0x7f => return Err(PathRejection::ControlCharacter),
            0x80.. => return Err(PathRejection::NonAscii),
            _ => {
                out.push(char::from(b));
                i += 1;
            }
        }
    }
    // checked on the output: `%25%32%65` only becomes `%252e` once `%32%65` is decoded
    if has_double_encoded_separator(&out) {
        return Err(PathRejection::DoubleEncoding);
    }
    Ok(out)
}

/// Does `%25` followed by `2E`, `2F` or `5C` (an encoded `.`, `/` or `\`) appear?
fn has_double_encoded_separator(decoded: &str) -> bool {
    decoded.match_indices("%25").any(|(i, _)| {
        matches!(
            decoded.as_bytes().get(i + 3..i + 5).map(|p| [p[0], p[1].to_ascii_lowercase()]),
            Some([b'2', b'e'] | [b'2', b'f'] | [b'5', b'c'])
        )
    })
}

/// Resolves `.`/`..`, merges empty segments, keeps one trailing slash.
fn remove_dot_segments(path: &str) -> Result<String, PathRejection> {
    let mut segments: Vec<&str> = Vec::new();
    let mut trailing_slash = false;
    for seg in path[1..].split('/') {
        trailing_slash = false;
        match seg {
            "" | "." => trailing_slash = true,
            ".." => {
                segments.pop().ok_or(PathRejection::AboveRoot)?;
                trailing_slash = true;
            }
            _ => {
                match seg.split(';').next() {
                    Some("." | "..") => return Err(PathRejection::DotSegmentWithParameters),
                    // `/;x/admin`: servlet containers drop the empty segment and serve /admin
                    Some("") => return Err(PathRejection::EmptySegmentWithParameters),
                    _ => {}
                }
                segments.push(seg);
            }
        }
    }
    let mut out = String::with_capacity(path.len());
    for seg in &segments {
        out.push('/');
        out.push_str(seg);
    }
    if segments.is_empty() || trailing_slash {
        out.push('/');
    }
    Ok(out)
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

const HEX_UPPER: &[u8; 16] = b"0123456789ABCDEF";

fn hex(b: u8) -> Option<u8> {
    char::from(b).to_digit(16).and_then(|d| u8::try_from(d).ok())
}

/// A route's `path` in canonical form: normalised, no trailing slash (but `/`), no parameters.
pub fn normalize_route_path(path: &str) -> Result<String, String> {
    if path.contains(';') || path.contains('?') || path.contains('#') {
        return Err(format!("{path:?}: a route path cannot contain ';', '?' or '#'"));
    }
    let normal = normalize_path(path.as_bytes()).map_err(|e| format!("{path:?}: {e}"))?;
    let trimmed = if normal.len() > 1 { normal.trim_end_matches('/') } else { &normal };
    let given = if path.len() > 1 { path.trim_end_matches('/') } else { path };
    if trimmed != given {
        return Err(format!("{path:?} is not in normal form; write {trimmed:?}"));
    }
    Ok(trimmed.to_owned())
}

/// The form of a normalised path that routes are matched against: every segment's
/// `;parameters` removed (servlet containers serve `/api;x/admin` as `/api/admin`, so it must
/// match the `/api/admin` route), and lower-cased when paths are case-insensitive (IIS serves
/// `/ADMIN` as `/admin`). Borrowed, without allocating, in the common case.
pub fn route_key(path: &str, case_insensitive: bool) -> Cow<'_, str> {
    let needs_lower = case_insensitive && path.bytes().any(|b| b.is_ascii_uppercase());
    if !path.contains(';') && !needs_lower {
        return Cow::Borrowed(path);
    }
    let mut key = String::with_capacity(path.len());
    for (i, seg) in path.split('/').enumerate() {
        if i > 0 {
            key.push('/');
        }
        key.push_str(seg.split(';').next().unwrap_or(seg));
    }
    if case_insensitive {
        key.make_ascii_lowercase();
    }
    Cow::Owned(key)
}

/// Does a route key (from `route_key`) fall under the route prefix `prefix` (from
/// `normalize_route_path`)? Matching is on whole segments: `/admin` covers `/admin` and
/// `/admin/x`, never `/administrator`. It also covers `/admin.json` (any `.suffix` of its last
/// segment): Rails (`/admin(.:format)`) and Spring MVC's suffix matching serve that as `/admin`,
/// so it must not fall through to a weaker route. A route of its own (`/admin.json`) is longer
/// and still wins.
pub fn path_has_prefix(key: &str, prefix: &str) -> bool {
    if prefix == "/" {
        return true;
    }
    match key.strip_prefix(prefix) {
        Some(rest) => rest.is_empty() || rest.starts_with('/') || rest.starts_with('.'),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use PathRejection::*;

    /// Every case: the raw path, and either the path that is matched and forwarded, or the rejection.
    #[test]
    fn normalisation_table() {
        let cases: &[(&str, Result<&str, PathRejection>)] = &[
            ("/", Ok("/")),
            ("/app", Ok("/app")),
            ("/app/", Ok("/app/")),
            ("/app/page.html", Ok("/app/page.html")),
            ("//admin", Ok("/admin")),
            ("/app//x///y", Ok("/app/x/y")),
            ("/pub/./admin", Ok("/pub/admin")),
            ("/pub/../admin", Ok("/admin")),
            ("/pub/%2e%2e/admin", Ok("/admin")),
            ("/pub/%2E%2E/admin", Ok("/admin")),
            ("/pub/.%2e/admin", Ok("/admin")),
            ("/pub/%2e/admin", Ok("/pub/admin")),
            ("/%61dmin", Ok("/admin")),
            ("/%41dmin", Ok("/Admin")),
            ("/a/b/..", Ok("/a/")),
            ("/a/b/.", Ok("/a/b/")),
            ("/a/..", Ok("/")),
            ("/~user/%7e", Ok("/~user/~")),
            ("/file%20name", Ok("/file%20name")),
            ("/file%3fq", Ok("/file%3Fq")),
            ("/caf%c3%a9", Ok("/caf%C3%A9")),
            ("/admin;jsessionid=ABC/x", Ok("/admin;jsessionid=ABC/x")),
            ("/api;v=1/admin", Ok("/api;v=1/admin")),
            ("/;/admin", Err(EmptySegmentWithParameters)),
            ("/;x=1/admin", Err(EmptySegmentWithParameters)),
            ("/admin%3bx/", Err(EncodedSemicolon)),
            ("/admin%3B/", Err(EncodedSemicolon)),
            ("/app/..%2fadmin", Err(EncodedSlash)),
            ("/admin%2fx", Err(EncodedSlash)),
            ("/admin%2Fx", Err(EncodedSlash)),
            ("/pub/..;/admin", Err(DotSegmentWithParameters)),
            ("/pub/.;x/admin", Err(DotSegmentWithParameters)),
            ("/pub/%2e%2e;/admin", Err(DotSegmentWithParameters)),
            ("/..", Err(AboveRoot)),
            ("/../admin", Err(AboveRoot)),
            ("/a/../../admin", Err(AboveRoot)),
            ("/%2e%2e/admin", Err(AboveRoot)),
            ("/pub\\..\\admin", Err(Backslash)),
            ("/pub/%5c../admin", Err(Backslash)),
            ("/pub/%5C", Err(Backslash)),
            ("/a%00b", Err(ControlCharacter)),
            ("/a\0b", Err(ControlCharacter)),
            ("/a%0d%0aSet-Cookie:x", Err(ControlCharacter)),
            ("/a\tb", Err(ControlCharacter)),
            ("/a%7f", Err(ControlCharacter)),
            ("/a%zz", Err(BadEscape)),
            ("/a%2", Err(BadEscape)),
            ("/a%", Err(BadEscape)),
            ("/caf\u{e9}", Err(NonAscii)),
            ("/pub/%252e%252e/admin", Err(DoubleEncoding)),
            ("/pub/%252fadmin", Err(DoubleEncoding)),
            ("/pub/%255Cadmin", Err(DoubleEncoding)),
            ("/pub/%25%32%65%25%32%65/admin", Err(DoubleEncoding)),
            ("/pub/%25%32%46admin", Err(DoubleEncoding)),
            ("/pub/%25%35%63admin", Err(DoubleEncoding)),
            ("/100%25", Ok("/100%25")),
            ("admin", Err(NotAbsolute)),
            ("*", Err(NotAbsolute)),
            ("", Err(NotAbsolute)),
            // nginx picks its location from /admin/, the app serves /admin/: never judged as
            // /pub/x
            ("/admin/x#/../../pub/x", Err(Fragment)),
            ("/a%23b", Ok("/a%23b")),
        ];
        for (raw, want) in cases {
            let got = normalize_path(raw.as_bytes());
            assert_eq!(got.as_deref().map_err(|e| *e), *want, "normalize_path({raw:?})");
        }
        assert!(cases.len() >= 30);
    }

    #[test]
    fn dot_segments_are_found_raw_and_encoded() {
        for dotted in ["/a/../b", "/a/./b", "/a/%2e%2E/b", "/a/.%2e", "/..", "/a/%2E"] {
            assert!(has_dot_segments(dotted.as_bytes()), "{dotted}");
        }
        for plain in ["/a/b", "/a/.b/c..", "/.well-known/x", "/a/...", "/"] {
            assert!(!has_dot_segments(plain.as_bytes()), "{plain}");
        }
    }

    #[test]
    fn normalised_paths_are_fixed_points() {
        for raw in ["/pub/%2e%2e/admin", "//a//b/", "/%61/./b/..", "/x%3a%7e"] {
            let once = normalize_path(raw.as_bytes()).unwrap();
            assert_eq!(normalize_path(once.as_bytes()).unwrap(), once, "{raw}");
        }
    }

    #[test]
    fn route_paths_must_be_written_in_normal_form() {
        assert_eq!(normalize_route_path("/").unwrap(), "/");
        assert_eq!(normalize_route_path("/app/").unwrap(), "/app");
        assert_eq!(normalize_route_path("/app").unwrap(), "/app");
        for bad in ["app", "/a/../b", "//app", "/%61pp", "/a;b", "/a?b", "/a%2fb"] {
            assert!(normalize_route_path(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn prefixes_match_whole_segments_and_see_through_parameters() {
        let cases = [
            ("/admin", "/admin", false, true),
            ("/admin/", "/admin", false, true),
            ("/admin/x", "/admin", false, true),
            ("/admin;jsessionid=1/x", "/admin", false, true),
            ("/api;v=1/admin/users", "/api/admin", false, true),
            ("/api/admin;x", "/api/admin", false, true),
            ("/administrator", "/admin", false, false),
            ("/administrator;x", "/admin", false, false),
            ("/admin.json", "/admin", false, true),
            ("/admin.", "/admin", false, true),
            ("/admin.json;x", "/admin", false, true),
            ("/admin/reports.json", "/admin/reports", false, true),
            ("/admin/reports.csv/x", "/admin/reports", false, true),
            ("/admin/reportsx.json", "/admin/reports", false, false),
            ("/ADMIN.JSON", "/admin", true, true),
            ("/admin-old.json", "/admin", false, false),
            ("/adm", "/admin", false, false),
            ("/anything", "/", false, true),
            ("/Admin", "/admin", false, false),
            ("/Admin", "/admin", true, true),
            ("/ADMIN;X=1/Y", "/admin/y", true, true),
        ];
        for (path, prefix, case_insensitive, want) in cases {
            let key = route_key(path, case_insensitive);
            assert_eq!(path_has_prefix(&key, prefix), want, "{path} under {prefix} (ci={case_insensitive})");
        }
        assert!(matches!(route_key("/plain/path", true), Cow::Borrowed(_)));
    }
}
