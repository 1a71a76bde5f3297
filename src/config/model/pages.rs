//! `[pages]`: the operator's own templates for the pages users read when the gateway answers
//! (a refused request, a failed sign-in, a busy provider, sign-out), and a support contact.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

/// The templates a `[pages] dir` may hold; any other `.html` file there is a mistake.
pub const PAGE_TEMPLATES: &[&str] =
    &["forbidden.html", "sign_in_error.html", "busy.html", "sign_out.html", "chooser.html"];

/// `[pages]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PagesConfig {
    /// A directory of templates (`PAGE_TEMPLATES`); a page without one keeps the built-in.
    pub dir: Option<PathBuf>,
    /// Whom users should contact about access, shown on the pages ("the IT help desk at
    /// help@example.com").
    pub support_contact: Option<String>,
    /// The templates of `dir` as validation read them: file name → source (read again on
    /// every reload).
    #[serde(skip)]
    pub templates: BTreeMap<String, String>,
}
