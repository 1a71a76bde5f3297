//! Path patterns of route rules, matched against a request's route key (normalised, without
//! `;parameters`, lower-cased when paths are case-insensitive).
//!
//! Hand-written because no glob crate has these path semantics (`/admin/*` covering `/admin`
//! and `/admin.json` the way a route prefix does) and a pattern must match in time linear in
//! the path whatever a client sends: the matcher below never backtracks further than the last
//! `*`, so it is O(pattern × path) at worst.

use super::{normalize_route_path, path_has_prefix};

/// Longest pattern accepted: a pattern is written by people, not generated.
pub const MAX_PATTERN_LEN: usize = 1024;

/// One path pattern of a rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathGlob {
    /// As written in the config, for the route table and logs.
    pub source: String,
    kind: Kind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Kind {
    /// `/health`: itself, with or without a trailing `/`.
    Exact(String),
    /// `/admin/*` (or `/admin/**`): `/admin` and everything a route prefix `/admin` covers.
    Below(String),
    /// Anything else, segment by segment: `**` stands for any number of segments, `*` for
    /// any run of characters within one.
    Segments(Vec<Segment>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    /// `**`.
    AnyDepth,
    /// A segment, possibly with `*`s.
    Glob(String),
}

impl PathGlob {
    /// Parses a pattern; `case_insensitive` when route paths are.
    pub fn parse(pattern: &str, case_insensitive: bool) -> Result<Self, String> {
        if pattern.len() > MAX_PATTERN_LEN {
            return Err(format!("a path pattern is at most {MAX_PATTERN_LEN} characters"));
        }
        // written in the form requests are matched in: normalised, no parameters or query
        normalize_route_path(pattern)?;
        // a trailing `/` changes nothing (`/hooks/*/` is `/hooks/*`): paths are matched without one
        let trimmed = if pattern.len() > 1 { pattern.trim_end_matches('/') } else { pattern };
        let folded = match case_insensitive {
            true => trimmed.to_ascii_lowercase(),
            false => trimmed.to_owned(),
        };
        let segments: Vec<&str> = folded[1..].split('/').collect();
        for s in &segments {
            if s.contains("**") && *s != "**" {
                return Err(format!("{pattern:?}: `**` must be a whole segment (`/a/**/b`)"));
            }
        }
        let kind = match folded.rsplit_once('/') {
            _ if !folded.contains('*') => Kind::Exact(folded.clone()),
            Some((base, "*" | "**")) if !base.contains('*') => {
                Kind::Below(if base.is_empty() { "/".to_owned() } else { base.to_owned() })
            }
            _ => Kind::Segments(
                segments
                    .iter()
                    .map(|s| match *s {
                        "**" => Segment::AnyDepth,
                        s => Segment::Glob(s.to_owned()),
                    })
                    .collect(),
            ),
        };
        Ok(Self { source: pattern.to_owned(), kind })
    }

    /// The part before the first `*`: every path the pattern matches starts with it.
    pub fn literal_prefix(&self) -> &str {
        let end = self.source.find('*').unwrap_or(self.source.len());
        &self.source[..end]
    }

    /// Does the route key `key` match? Its last segment also matches with a `.suffix` added
    /// (`/metrics` matches `/metrics.json`): Rails (`(.:format)`) and Spring's suffix matching
    /// serve that as the same path, as route prefixes already account for.
    pub fn matches(&self, key: &str) -> bool {
        // `/health/` is `/health` to nearly every framework
        let trimmed = match key.len() > 1 {
            true => key.strip_suffix('/').unwrap_or(key),
            false => key,
        };
        match &self.kind {
            Kind::Exact(p) => {
                trimmed == p
                    || trimmed
                        .strip_prefix(p.as_str())
                        .is_some_and(|rest| rest.starts_with('.') && !rest.contains('/'))
            }
            Kind::Below(prefix) => path_has_prefix(key, prefix),
            Kind::Segments(pattern) => {
                let path: Vec<&str> = trimmed.get(1..).unwrap_or("").split('/').collect();
                let last = path.len().saturating_sub(1);
                let segment = |g: &str, seg: &str| {
                    wildcard(g.as_bytes(), seg.as_bytes(), |b| *b == b'*', |p, c| p == c)
                };
                // items are (index, segment): only the last may drop its `.suffix`
                let items: Vec<(usize, &str)> = path.iter().copied().enumerate().collect();
                wildcard(
                    pattern,
                    &items,
                    |s| *s == Segment::AnyDepth,
                    |s, &(i, seg)| match s {
                        Segment::Glob(g) => {
                            segment(g, seg)
                                || (i == last
                                    && seg.rsplit_once('.').is_some_and(|(stem, _)| segment(g, stem)))
                        }
                        Segment::AnyDepth => false,
                    },
                )
            }
        }
    }

    /// For a pattern that covers everything below a path (`/admin/*`), that path.
    pub fn covers_below(&self) -> Option<&str> {
        match &self.kind {
            Kind::Below(prefix) => Some(prefix),
            _ => None,
        }
    }
}

/// Matches `text` against `pattern`, where `is_star` items stand for any run of items: the
/// classic greedy match that returns to the last star only, O(pattern × text).
fn wildcard<P, T>(
    pattern: &[P],
    text: &[T],
    is_star: impl Fn(&P) -> bool,
    same: impl Fn(&P, &T) -> bool,
) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut last_star: Option<(usize, usize)> = None;
    while t < text.len() {
        match pattern.get(p) {
            Some(item) if is_star(item) => {
                last_star = Some((p, t));
                p += 1;
            }
            Some(item) if same(item, &text[t]) => {
                p += 1;
                t += 1;
            }
            _ => match last_star {
                // let the last star take one more item and try again from there
                Some((sp, st)) => {
                    p = sp + 1;
                    t = st + 1;
                    last_star = Some((sp, st + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p.min(pattern.len())..].iter().all(is_star)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_as_documented() {
        let cases: &[(&str, &str, bool)] = &[
            ("/health", "/health", true),
            ("/health", "/health/", true),
            ("/health", "/healthz", false),
            ("/health", "/health/x", false),
            ("/health/", "/health", true),
            ("/health", "/health.json", true),
            ("/health", "/health.json/x", false),
            ("/hooks/*/", "/hooks/github", true),
            ("/hooks/*/events/", "/hooks/github/events", true),
            ("/hooks/*/events", "/hooks/github/events.json", true),
            ("/hooks/*/events", "/hooks/github.json/events", true),
            // as a route prefix: `/hooks/x` covers `/hooks/x.json` and below
            ("/hooks/x/*", "/hooks/x.json/events", true),
            ("/a/b*/c", "/a/b.json/c", true),
            ("/a/b/c*", "/a/b.json/c", false),
            ("/**/*.json", "/a/b.json.bak", true),
            ("/admin/*", "/admin", true),
            ("/admin/*", "/admin/", true),
            ("/admin/*", "/admin/users/5", true),
            ("/admin/*", "/admin.json", true),
            ("/admin/*", "/administrator", false),
            ("/admin/**", "/admin/a/b", true),
            ("/*", "/anything/at/all", true),
            ("/hooks/*/events", "/hooks/github/events", true),
            ("/hooks/*/events", "/hooks/a/b/events", false),
            ("/hooks/*/events", "/hooks/github/events/", true),
            ("/**/*.json", "/a/b/c.json", true),
            ("/**/*.json", "/c.json", true),
            ("/**/*.json", "/a/b/c.jsonx", false),
            ("/api/**/status", "/api/status", true),
            ("/api/**/status", "/api/v1/x/status", true),
            ("/api/**/status", "/api/v1/x/statuses", false),
            ("/files/*.pdf", "/files/report.pdf", true),
            ("/files/*.pdf", "/files/sub/report.pdf", false),
            ("/a*b/c", "/axxb/c", true),
            ("/a*b/c", "/axxbc", false),
        ];
        for (pattern, path, want) in cases {
            let glob = PathGlob::parse(pattern, false).unwrap();
            assert_eq!(glob.matches(path), *want, "{pattern} on {path}");
        }
    }

    #[test]
    fn case_follows_the_route_table() {
        // route keys are lower case when paths are case-insensitive: so are the patterns
        let glob = PathGlob::parse("/Admin/*", true).unwrap();
        assert!(glob.matches("/admin/x"));
        let glob = PathGlob::parse("/Admin/*", false).unwrap();
        assert!(!glob.matches("/admin/x"));
        assert!(glob.matches("/Admin/x"));
    }

    #[test]
    fn bad_patterns_are_refused() {
        for bad in ["admin", "/a/../b", "/a//b", "/a;x", "/a?b", "/a/***", "/a**/b", "/%2e"] {
            assert!(PathGlob::parse(bad, true).is_err(), "{bad}");
        }
        assert!(PathGlob::parse(&format!("/{}", "a".repeat(MAX_PATTERN_LEN)), true).is_err());
    }

    #[test]
    fn hostile_paths_are_matched_in_linear_time() {
        // a path that would make a backtracking matcher try every split
        let path = format!("/{}", "a/".repeat(20_000));
        let glob = PathGlob::parse("/**/a/**/a/**/a/**/b", false).unwrap();
        assert!(!glob.matches(&path));
        let seg = format!("/{}", "a".repeat(50_000));
        let glob = PathGlob::parse("/*a*a*a*a*b", false).unwrap();
        assert!(!glob.matches(&seg));
    }
}
