//! authgate: a reverse-proxy authentication gateway on Pingora.
//!
//! Modules in layers, bottom to top; a module imports only from layers below its own
//! (`tests/layers.rs` guards this, as crate boundaries do for Pingora):
//!
//! - foundation (imports nothing of the crate):
//!   `clock` (wall and monotonic time), `random` (OS randomness), `codec` (hex, header-value
//!   encoding), `http_util` (header names, navigation, cookies, queries, return-to, same origin),
//!   `pem` (key and certificate files), `reply` (replies, rejections, the page shell, messages),
//!   `metrics` (Prometheus), `lifecycle` (draining on SIGTERM).
//! - plumbing: `routing` (hosts, paths, route tables), `upstream` (backends, balancing, passive
//!   health), `forwarding` (request header hygiene, `X-Forwarded-*`, the client's address),
//!   `log_writer` (log lines written off the request path).
//! - model: `config` (file → validated model), `identity` (who is calling, its headers, prepared
//!   once), `pages` (what people read when the gateway answers: built in or templates),
//!   `policy` (what a route requires, its rules).
//! - state: `session` (sessions, sealing, memory and Redis stores).
//! - provider: `oidc` (the OpenID Connect client on `openidconnect`: discovery, bounded
//!   fetches, JWKS cache, token-endpoint budget, authorization request, code and refresh grants).
//! - verification: `jwt` (bearer tokens, verified-token cache, introspection), `assertion`
//!   (signed identity assertions), `revocation` (records, webhooks, back-channel logout,
//!   deny-list).
//! - browser: `browser` (sign-in, callback, refresh, sign-out, cookies, pages).
//! - gateway: `gateway` (the runtime built from config: routes, header tables).
//! - proxy: `proxy` (the Pingora phases wired to one decision, our endpoints, metadata).
//! - top: `admin` (health, metrics, reload endpoints), `reload` (SIGHUP), `server` (assembling
//!   and running the Pingora server).

// foundation
pub mod clock;
pub mod codec;
pub mod http_util;
pub mod lifecycle;
pub mod metrics;
pub mod pem;
pub mod random;
pub mod reply;
// plumbing
pub mod forwarding;
pub mod log_writer;
pub mod routing;
pub mod upstream;
// model
pub mod config;
pub mod identity;
pub mod pages;
pub mod policy;
// state
pub mod session;
// provider
pub mod oidc;
// verification
pub mod assertion;
pub mod jwt;
pub mod revocation;
// browser
pub mod browser;
// gateway
pub mod gateway;
// proxy
pub mod proxy;
// top
pub mod admin;
pub mod reload;
pub mod server;
