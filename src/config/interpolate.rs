//! `${VAR}` interpolation in string values, done on the parsed document so that a variable's
//! value can never change the TOML structure around it.

use std::borrow::Cow;

/// Replaces `${NAME}` and `${NAME:-default}` with values from `env`; `$${` writes a literal `${`.
///
/// Returns the names of missing variables (without a default) as the error.
pub fn interpolate(
    input: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<String>, InterpolationError> {
    if !input.contains('$') {
        return Ok(None);
    }
    let mut out = String::with_capacity(input.len());
    let mut missing = Vec::new();
    let mut rest = input;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let tail = &rest[pos..];
        if let Some(after) = tail.strip_prefix("$${") {
            out.push_str("${");
            rest = after;
        } else if let Some(after) = tail.strip_prefix("${") {
            let end = after.find('}').ok_or(InterpolationError::Unclosed)?;
            let expr = &after[..end];
            let (name, default) = match expr.split_once(":-") {
                Some((n, d)) => (n, Some(d)),
                None => (expr, None),
            };
            if !is_var_name(name) {
                return Err(InterpolationError::BadName(name.to_owned()));
            }
            match (env(name), default) {
                (Some(v), _) => out.push_str(&v),
                (None, Some(d)) => out.push_str(d),
                (None, None) => missing.push(name.to_owned()),
            }
            rest = &after[end + 1..];
        } else {
            out.push('$');
            rest = &tail[1..];
        }
    }
    out.push_str(rest);
    if missing.is_empty() { Ok(Some(out)) } else { Err(InterpolationError::Missing(missing)) }
}

fn is_var_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c == '_' || c.is_ascii_alphabetic())
        && chars.all(|c| c == '_' || c.is_ascii_alphanumeric())
}

/// Why a string could not be interpolated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InterpolationError {
    /// Variables that are not set and have no default.
    Missing(Vec<String>),
    /// `${` without a closing `}`.
    Unclosed,
    /// `${...}` whose content is not a variable name.
    BadName(String),
}

impl std::fmt::Display for InterpolationError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            InterpolationError::Missing(names) => {
                let list: Vec<Cow<str>> = names.iter().map(|n| format!("${{{n}}}").into()).collect();
                write!(f, "environment variable {} is not set", list.join(", "))
            }
            InterpolationError::Unclosed => {
                f.write_str("`${` is not closed by `}` (write `$${` for a literal)")
            }
            InterpolationError::BadName(n) => write!(f, "`${{{n}}}` is not a valid variable name"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "HOST" => Some("auth.example.com".into()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    #[test]
    fn table_of_interpolations() {
        let ok = [
            ("plain", None),
            ("https://${HOST}/realm", Some("https://auth.example.com/realm")),
            ("${HOST}${HOST}", Some("auth.example.comauth.example.com")),
            ("${NOPE:-fallback}", Some("fallback")),
            ("${EMPTY:-x}", Some("")),
            ("cost $5", Some("cost $5")),
            ("$${HOST}", Some("${HOST}")),
        ];
        for (input, want) in ok {
            assert_eq!(interpolate(input, &env).unwrap().as_deref(), want, "{input}");
        }
        assert_eq!(
            interpolate("${A_MISSING}/${HOST}/${B_MISSING}", &env),
            Err(InterpolationError::Missing(vec!["A_MISSING".into(), "B_MISSING".into()]))
        );
        assert_eq!(interpolate("${HOST", &env), Err(InterpolationError::Unclosed));
        assert_eq!(interpolate("${1X}", &env), Err(InterpolationError::BadName("1X".into())));
    }

    #[test]
    fn missing_error_names_the_variable() {
        let e = interpolate("${CLIENT_SECRET}", &env).unwrap_err();
        assert_eq!(e.to_string(), "environment variable ${CLIENT_SECRET} is not set");
    }
}
