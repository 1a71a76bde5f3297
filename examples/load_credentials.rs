//! Credentials for `scripts/load`'s many-users cases, each one valid as a real one:
//!
//! - `sessions CONFIG N`: N sessions written into the store CONFIG names (Redis), exactly as a
//!   sign-in writes them (sealed with the session secret under a fresh ticket, indexed by user,
//!   through the same `SessionStore`), each for a different user holding the `wiki` license; prints
//!   one session-cookie value per line. (Signing in N times through the IdP costs it one RSA
//!   signature per token, minutes for 100 000.)
//! - `signins GATEWAY IDP_COOKIES N`: N real sign-ins at GATEWAY (one with a memory store, which
//!   nothing outside the process can write into): each starts at `/browser/`, goes to the IdP,
//!   which knows the browser by IDP_COOKIES (a `Cookie` header from one interactive sign-in) and
//!   answers with a code at once, and ends at the callback, where the gateway exchanges the code
//!   at the IdP's token endpoint and sets the session cookie; prints one session-cookie value per
//!   line. Each comes from its own `X-Forwarded-For` address (the gateway trusts loopback), as
//!   many users would.
//! - `tokens TEMPLATE KEY_PEM N LABEL`: N access tokens with the claims and header of TEMPLATE (one the
//!   test IdP issued), each with its own `jti` (LABEL, a random nonce, its number), signed with the IdP's own RS256 key (KEY_PEM,
//!   from its KEYS_DIR); prints one per line.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)] // a test or tool: failing loudly is the point

use std::io::Write;
use std::sync::Arc;

use authgate::session::{LastUsed, SessionSealer, SessionTicket, StoredSession};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

#[path = "support/sample_session.rs"]
mod sample;
use sample::sample_session;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

async fn sessions(config: &str, n: usize) {
    let config = authgate::config::load_file(std::path::Path::new(config)).expect("the gateway's config");
    let secret = config.session.secret.as_ref().expect("session.secret");
    let sealer = Arc::new(SessionSealer::new(secret.expose().as_bytes()));
    let store = authgate::server::session_store(&config).expect("the session store");
    let now = authgate::clock::unix_now();
    // as sign-in names and indexes them: the provider's name; user and sid keys without a
    // namespace (one provider)
    let list = config.provider_list();
    assert_eq!(list.len(), 1, "one provider");
    let provider = list[0].0.to_owned();
    let lifetime = config.session.absolute_lifetime.get().as_secs();
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    // 64 writes in flight: the store's pipelined connections, as under many sign-ins
    for chunk in (0..n).collect::<Vec<_>>().chunks(64) {
        let writes = chunk.iter().map(|&i| {
            let (sealer, store, provider) = (Arc::clone(&sealer), Arc::clone(&store), provider.clone());
            tokio::spawn(async move {
                let s = sample_session(i, now, &provider, lifetime);
                let ticket = SessionTicket::generate().expect("randomness");
                let stored = StoredSession {
                    sealed: sealer.seal_session(&ticket, &s).expect("seal"),
                    version: 1,
                    user: sealer.user_index(&s.identity.subject),
                    expires_at: s.expires_at,
                    created_at: s.created_at,
                    sid: s.sid.as_deref().map(|sid| sealer.sid_index(sid)),
                    last_used: LastUsed::at(now),
                };
                let saved = store.save(&sealer.session_key(&ticket), stored, None).await.expect("saved");
                assert!(saved, "a fresh ticket is free");
                ticket.encode()
            })
        });
        for cookie in futures_util::future::join_all(writes).await {
            writeln!(out, "{}", cookie.expect("task")).unwrap();
        }
    }
}

/// The value of the `name=` cookie a response sets, if any.
fn set_cookie(resp: &reqwest::Response, name: &str) -> Option<String> {
    resp.headers().get_all(reqwest::header::SET_COOKIE).iter().find_map(|v| {
        let v = v.to_str().ok()?;
        let value = v.strip_prefix(name)?.strip_prefix('=')?;
        Some(value.split(';').next().unwrap_or("").to_owned())
    })
}

/// Where a redirect points.
fn location(resp: &reqwest::Response) -> String {
    resp.headers().get(reqwest::header::LOCATION).and_then(|v| v.to_str().ok()).unwrap_or("").to_owned()
}

/// One sign-in through the gateway and the IdP, as the `n`-th user address; the session cookie.
async fn sign_in(
    client: &reqwest::Client,
    gateway: &str,
    idp_cookies: &str,
    n: usize,
) -> Result<String, String> {
    let address = format!("10.{}.{}.{}", (n >> 16) & 255, (n >> 8) & 255, n & 255);
    let start = client
        .get(format!("{gateway}/browser/"))
        .header("accept", "text/html")
        .header("x-forwarded-for", &address)
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let binding = set_cookie(&start, "authgate_session_login").ok_or(format!("start: {}", start.status()))?;
    let authorize =
        client.get(location(&start)).header("cookie", idp_cookies).send().await.map_err(|e| e.to_string())?;
    let callback = location(&authorize);
    if !callback.starts_with(gateway) {
        return Err(format!("the IdP answered {} to {callback}", authorize.status()));
    }
    let done = client
        .get(&callback)
        .header("cookie", format!("authgate_session_login={binding}"))
        .header("x-forwarded-for", &address)
        .send()
        .await
        .map_err(|e| e.to_string())?;
    set_cookie(&done, "authgate_session").ok_or(format!("callback: {}", done.status()))
}

async fn signins(gateway: &str, idp_cookies: &str, n: usize) {
    let client =
        reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().expect("client");
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    // 32 at a time: the IdP is one node process
    for chunk in (0..n).collect::<Vec<_>>().chunks(32) {
        let all = chunk.iter().map(|&i| sign_in(&client, gateway, idp_cookies, i));
        for cookie in futures_util::future::join_all(all).await {
            writeln!(out, "{}", cookie.unwrap_or_else(|e| panic!("a sign-in failed: {e}"))).unwrap();
        }
    }
}

fn tokens(template: &str, key_pem: &str, n: usize, label: &str) {
    let template = std::fs::read_to_string(template).expect("TEMPLATE").trim().to_owned();
    let mut parts = template.split('.');
    let header: jsonwebtoken::Header = serde_json::from_slice(
        &URL_SAFE_NO_PAD.decode(parts.next().expect("a JWT")).expect("base64url header"),
    )
    .expect("a JOSE header");
    let claims: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(
        &URL_SAFE_NO_PAD.decode(parts.next().expect("a JWT")).expect("base64url claims"),
    )
    .expect("claims");
    assert_eq!(header.alg, jsonwebtoken::Algorithm::RS256, "an RS256 template");
    let key =
        jsonwebtoken::EncodingKey::from_rsa_pem(&std::fs::read(key_pem).expect("KEY_PEM")).expect("RSA key");
    let now = authgate::clock::unix_now();
    // distinct from every other set minted, in this second or any other
    let nonce = authgate::codec::hex_lower(&authgate::random::random_bytes::<8>().expect("randomness"));
    let threads = std::thread::available_parallelism().map_or(1, |p| p.get());
    let per = n.div_ceil(threads);
    let minted: Vec<Vec<String>> = std::thread::scope(|scope| {
        let jobs: Vec<_> = (0..threads)
            .map(|t| {
                let (header, claims, key, nonce) = (&header, &claims, &key, &nonce);
                scope.spawn(move || {
                    (t * per..((t + 1) * per).min(n))
                        .map(|i| {
                            let mut c = claims.clone();
                            c.insert("jti".into(), format!("load-{label}-{nonce}-{i}").into());
                            c.insert("iat".into(), now.into());
                            c.insert("exp".into(), (now + 3600).into());
                            jsonwebtoken::encode(header, &c, key).expect("signed")
                        })
                        .collect()
                })
            })
            .collect();
        jobs.into_iter().map(|j| j.join().expect("signer")).collect()
    });
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    for token in minted.iter().flatten() {
        writeln!(out, "{token}").unwrap();
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    match args.as_slice() {
        [_, "sessions", config, n] => {
            let rt = tokio::runtime::Runtime::new().expect("runtime");
            rt.block_on(sessions(config, n.parse().expect("N")));
        }
        [_, "signins", gateway, cookies, n] => {
            let rt = tokio::runtime::Runtime::new().expect("runtime");
            rt.block_on(signins(gateway, cookies, n.parse().expect("N")));
        }
        [_, "tokens", template, key, n, label] => tokens(template, key, n.parse().expect("N"), label),
        _ => panic!(
            "usage: load_credentials sessions CONFIG N | signins GATEWAY IDP_COOKIES N | tokens TEMPLATE KEY_PEM N LABEL"
        ),
    }
}
