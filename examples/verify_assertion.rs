//! How an app checks authgate's signed identity assertion (the `X-Authgate-Assertion` header).
//!
//! ```sh
//! echo "$ASSERTION" | cargo run --example verify_assertion -- <jwks-url> <audience> [issuer]
//! ```
//!
//! `<jwks-url>` is the gateway's `https://<gateway>/.well-known/authgate/jwks.json`, `<audience>`
//! the `aud` the gateway sends this app (by default the app's own origin, e.g.
//! `http://10.0.1.10:8000`), `[issuer]` the gateway's public URL (default: the JWK Set URL's
//! origin, which is that public URL). Prints the verified claims and
//! exits 0, or prints why the assertion is refused and exits 1. The same four checks in any
//! language make the header trustworthy:
//!
//! 1. fetch the JWK Set (cache it; fetch again when a `kid` is unknown: keys rotate);
//! 2. take the key named by the header's `kid`, and accept only ES256 or EdDSA, as that key
//!    says (never `none`, never HMAC);
//! 3. check the signature;
//! 4. check `aud` is yours, `iss` is the gateway, and `exp`/`nbf` against the clock.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)] // a test or tool: failing loudly is the point

use std::io::Read;
use std::process::ExitCode;

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode, decode_header};

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(jwks_url), Some(audience)) = (args.first(), args.get(1)) else {
        eprintln!("usage: verify_assertion <jwks-url> <audience> [issuer] < assertion");
        return ExitCode::from(2);
    };
    let mut token = String::new();
    if std::io::stdin().read_to_string(&mut token).is_err() {
        eprintln!("refused: cannot read the assertion from stdin");
        return ExitCode::FAILURE;
    }
    // the gateway publishes its keys under its public URL, which is also the assertions' issuer
    let issuer = match args.get(2) {
        Some(iss) => iss.clone(),
        None => match reqwest::Url::parse(jwks_url) {
            Ok(url) => url.origin().ascii_serialization(),
            Err(e) => {
                eprintln!("refused: the JWK Set URL is not a URL: {e}");
                return ExitCode::FAILURE;
            }
        },
    };
    match verify(token.trim(), jwks_url, audience, &issuer).await {
        Ok(claims) => {
            println!("{claims:#}");
            ExitCode::SUCCESS
        }
        Err(why) => {
            eprintln!("refused: {why}");
            ExitCode::FAILURE
        }
    }
}

async fn verify(
    token: &str,
    jwks_url: &str,
    audience: &str,
    issuer: &str,
) -> Result<serde_json::Value, String> {
    // 1. the gateway's public keys
    let jwks: JwkSet = reqwest::get(jwks_url)
        .await
        .and_then(reqwest::Response::error_for_status)
        .map_err(|e| format!("cannot fetch the JWK Set: {e}"))?
        .json()
        .await
        .map_err(|e| format!("the JWK Set is malformed: {e}"))?;

    // 2. the key it names, and only the algorithms authgate signs with
    let header = decode_header(token).map_err(|e| format!("not a signed JWT: {e}"))?;
    if !matches!(header.alg, Algorithm::ES256 | Algorithm::EdDSA) {
        return Err(format!("algorithm {:?} is not accepted", header.alg));
    }
    let kid = header.kid.ok_or("the assertion names no key (kid)")?;
    let jwk = jwks.find(&kid).ok_or_else(|| format!("unknown key {kid}"))?;
    let key = DecodingKey::from_jwk(jwk).map_err(|e| format!("unusable key {kid}: {e}"))?;

    // 3 and 4. signature, audience, issuer, lifetime
    let mut validation = Validation::new(header.alg);
    validation.set_audience(&[audience]);
    validation.set_issuer(&[issuer]);
    validation.set_required_spec_claims(&["exp", "iat", "nbf", "iss", "aud", "sub"]);
    validation.validate_nbf = true;
    validation.leeway = 30;
    let data = decode::<serde_json::Value>(token, &key, &validation).map_err(|e| format!("{e}"))?;
    Ok(data.claims)
}
