//! Bearer-token costs: a full verification (signature, claims) on a cache miss, the same token
//! again (verified-token cache hit), and the route policy decision. Run with
//! `cargo bench --bench jwt`; needs the `openssl` command to make a throwaway RSA key.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)] // a test or tool: failing loudly is the point

use std::hint::black_box;
use std::process::Command;
use std::sync::Arc;

use base64::Engine;
use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use jsonwebtoken::{Algorithm, EncodingKey, Header};

use authgate::jwt::{TokenVerifier, VerifierSettings};
use authgate::oidc::OidcProvider;
use authgate::oidc::jwks::KeySet;
use authgate::policy::RoutePolicy;

const ISSUER: &str = "https://idp.example.com";

/// A throwaway RSA key: (private PEM, JWK Set with its public half).
fn key() -> (Vec<u8>, String) {
    let pem = Command::new("openssl")
        .args(["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"])
        .output()
        .expect("openssl")
        .stdout;
    let dir = std::env::temp_dir().join(format!("authgate-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("key.pem");
    std::fs::write(&path, &pem).unwrap();
    let out = Command::new("openssl").args(["rsa", "-noout", "-modulus", "-in"]).arg(&path).output().unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    let hex = String::from_utf8(out.stdout).unwrap().trim().trim_start_matches("Modulus=").to_owned();
    let n: Vec<u8> =
        (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap()).collect();
    let n = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(n);
    let jwks =
        serde_json::json!({ "keys": [{ "kty": "RSA", "kid": "k1", "alg": "RS256", "n": n, "e": "AQAB" }] });
    (pem, jwks.to_string())
}

fn token(key: &EncodingKey, sub: &str) -> String {
    let now = authgate::clock::unix_now();
    let mut h = Header::new(Algorithm::RS256);
    h.kid = Some("k1".into());
    let claims = serde_json::json!({
        "iss": ISSUER, "sub": sub, "aud": "authgate", "client_id": "authgate", "iat": now, "exp": now + 3600,
        "scope": "openid profile email", "email": "alice@acme.test", "name": "Alice Anders",
        "licenses": ["wiki", "crm"], "permissions": ["org:users:read"], "organization_id": "org-1",
        "user_type": "customer_admin",
    });
    jsonwebtoken::encode(&h, &claims, key).unwrap()
}

fn verifier(jwks: &str) -> TokenVerifier {
    let config = authgate::config::load_str(
        &format!(
            "[provider]\nissuer = \"{ISSUER}\"\nclient_id = \"authgate\"\naudience = \"authgate\"\n\
             [[routes]]\npath = \"/\"\nupstream = \"http://127.0.0.1:1\"\nauth = \"api\"\n"
        ),
        "bench",
        std::path::Path::new("."),
        &|_| None,
    )
    .unwrap();
    let provider = Arc::new(OidcProvider::new(config.provider.as_ref().unwrap()).unwrap());
    provider.jwks.install(KeySet::parse(jwks.as_bytes()).unwrap());
    let settings = VerifierSettings {
        algorithms: vec![Algorithm::RS256],
        leeway: 60,
        cache_size: 100_000,
        client_id: "authgate".into(),
        extra_claims: vec![],
        name: "default".into(),
        namespace: None,
    };
    TokenVerifier::new(provider, settings)
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let (pem, jwks) = key();
    let signing = EncodingKey::from_rsa_pem(&pem).unwrap();
    let audiences = vec!["authgate".to_string()];

    let cold_tokens: Vec<String> = (0..64).map(|i| token(&signing, &format!("user-{i}"))).collect();
    let mut next = 0usize;
    c.bench_function("jwt/verify_cold_rs256", |b| {
        b.to_async(&rt).iter_batched(
            || {
                next = (next + 1) % cold_tokens.len();
                (verifier(&jwks), cold_tokens[next].clone())
            },
            |(v, t)| {
                let audiences = audiences.clone();
                async move { black_box(v.verify(&t, &audiences).await.is_ok()) }
            },
            BatchSize::SmallInput,
        )
    });

    let warm = verifier(&jwks);
    let t = token(&signing, "alice");
    assert!(rt.block_on(warm.verify(&t, &audiences)).is_ok());
    c.bench_function("jwt/verify_cached", |b| {
        b.to_async(&rt).iter(|| async { black_box(warm.verify(black_box(&t), &audiences).await.is_ok()) })
    });

    let verified = rt.block_on(warm.verify(&t, &audiences)).unwrap();
    let policy = RoutePolicy {
        licenses_any: vec!["wiki".into()],
        permissions: vec!["org:users:read".into()],
        ..RoutePolicy::default()
    };
    c.bench_function("policy/authorize", |b| {
        b.iter(|| policy.authorize(black_box(&verified.identity), || None).is_ok())
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
