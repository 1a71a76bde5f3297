//! authgate: a reverse-proxy authentication gateway on Pingora.
//!
//! Modules by concern: `config` (file → validated model), `routing` (host + path → route),
//! `upstream` (backends, balancing, passive health), `oidc` (the provider's documents and
//! keys), `jwt` (bearer-token verification), `gateway` (the runtime state built from
//! config), `proxy` (the Pingora pipeline), `policy` (what a route requires), `admin` (health
//! endpoints), `reload` (SIGHUP) and `server` (assembling and running the Pingora server).

pub mod admin;
pub mod assertion;
pub mod config;
pub mod events;
pub mod gateway;
pub mod jwt;
pub mod metrics;
pub mod oidc;
pub mod policy;
pub mod proxy;
pub mod reload;
pub mod reply;
pub mod routing;
pub mod server;
pub mod session;
pub mod upstream;
