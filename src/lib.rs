//! authgate: a reverse-proxy authentication gateway on Pingora.
//!
//! Modules by concern: `config` (file → validated model), `routing` (host + path → route),
//! `upstream` (backends, balancing, passive health), `gateway` (the runtime state built from
//! config), `proxy` (the Pingora pipeline), `policy` (what a route requires), `admin` (health
//! endpoints) and `server` (assembling and running the Pingora server).

pub mod admin;
pub mod config;
pub mod gateway;
pub mod policy;
pub mod proxy;
pub mod routing;
pub mod server;
pub mod upstream;
