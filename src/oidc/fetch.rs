//! Bounded HTTP requests to the identity provider: every one has a time limit and a size limit,
//! so an IdP that hangs or streams garbage costs a bounded amount and nothing more.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};

use crate::http_util::is_localhost_name;

/// Why a fetch from the provider failed.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// Connect, TLS or read failure, or the time limit.
    #[error("request to {url} failed: {reason}")]
    Transport {
        /// The URL fetched.
        url: String,
        /// What happened (no secrets: these are public endpoints).
        reason: String,
    },
    /// A status other than 200.
    #[error("{url} answered HTTP {status}")]
    Status {
        /// The URL fetched.
        url: String,
        /// The status code.
        status: u16,
        /// The start of the body (for OAuth error codes).
        body: Vec<u8>,
        /// `Retry-After` in seconds, when given (429, 503).
        retry_after: Option<Duration>,
    },
    /// The body is larger than allowed.
    #[error("{url} sent more than {limit} bytes")]
    TooLarge {
        /// The URL fetched.
        url: String,
        /// The limit in bytes.
        limit: usize,
    },
}

/// The HTTP client for the provider: its documents (GET) and its token, revocation and
/// introspection endpoints (form POSTs), all bounded in time and size.
#[derive(Debug, Clone)]
pub struct Fetcher {
    client: reqwest::Client,
    max_bytes: usize,
}

/// Resolves `localhost` and `*.localhost` to loopback without asking DNS (RFC 6761 §6.3: a
/// resolver could answer anything for them, and glibc often does not know `*.localhost` at all),
/// and every other name through the system resolver, as reqwest would.
#[derive(Debug)]
struct LoopbackNames;

impl reqwest::dns::Resolve for LoopbackNames {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let addrs: Vec<SocketAddr> = if is_localhost_name(&host) {
                vec![(Ipv4Addr::LOCALHOST, 0).into(), (Ipv6Addr::LOCALHOST, 0).into()]
            } else {
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect()
            };
            Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// A fetched body and how long the provider allows caching it.
#[derive(Debug)]
pub struct Fetched {
    /// The body.
    pub body: Bytes,
    /// `Cache-Control: max-age`, when given.
    pub max_age: Option<Duration>,
}

impl Fetcher {
    /// A client with a whole-request time limit and a body size limit.
    pub fn new(timeout: Duration, max_bytes: usize) -> Result<Self, FetchError> {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .dns_resolver(Arc::new(LoopbackNames))
            .user_agent(concat!("authgate/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| FetchError::Transport { url: String::new(), reason: e.to_string() })?;
        Ok(Self { client, max_bytes })
    }

    /// GETs `url`, reading at most the size limit.
    pub async fn get(&self, url: &str) -> Result<Fetched, FetchError> {
        self.send(url, self.client.get(url)).await
    }

    /// POSTs a form to `url` with HTTP Basic client authentication (RFC 6749 §2.3.1).
    pub async fn post_form(
        &self,
        url: &str,
        client_id: &str,
        client_secret: &str,
        form: &[(&str, &str)],
    ) -> Result<Fetched, FetchError> {
        // RFC 6749 §2.3.1: id and secret are form-urlencoded before Basic encoding
        let enc = |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
        let req = self.client.post(url).basic_auth(enc(client_id), Some(enc(client_secret))).form(form);
        self.send(url, req).await
    }

    /// POSTs a form to `url` without HTTP authentication (public clients, `client_secret_post`).
    pub async fn post_form_anonymous(&self, url: &str, form: &[(&str, &str)]) -> Result<Fetched, FetchError> {
        self.send(url, self.client.post(url).form(form)).await
    }

    /// Sends a request built elsewhere (by `openidconnect`: see `ProviderHttp`), within the
    /// same bounds; any status but 200 is an error, as for every other provider call.
    pub async fn execute(&self, req: http::Request<Vec<u8>>) -> Result<Fetched, FetchError> {
        let (parts, body) = req.into_parts();
        let url = parts.uri.to_string();
        let builder = self.client.request(parts.method, &url).headers(parts.headers).body(body);
        self.send(&url, builder).await
    }

    async fn send(&self, url: &str, req: reqwest::RequestBuilder) -> Result<Fetched, FetchError> {
        let transport =
            |e: reqwest::Error| FetchError::Transport { url: url.to_owned(), reason: e.to_string() };
        let mut resp =
            req.header(http::header::ACCEPT, "application/json").send().await.map_err(transport)?;
        if resp.status() != reqwest::StatusCode::OK {
            let status = resp.status().as_u16();
            let retry_after = resp
                .headers()
                .get(http::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(Duration::from_secs);
            let mut body = Vec::new();
            while let Ok(Some(chunk)) = resp.chunk().await {
                body.extend_from_slice(&chunk[..chunk.len().min(4096 - body.len())]);
                if body.len() >= 4096 {
                    break;
                }
            }
            return Err(FetchError::Status { url: url.to_owned(), status, body, retry_after });
        }
        let too_large = || FetchError::TooLarge { url: url.to_owned(), limit: self.max_bytes };
        if resp.content_length().is_some_and(|n| n > self.max_bytes as u64) {
            return Err(too_large());
        }
        let max_age = resp
            .headers()
            .get(http::header::CACHE_CONTROL)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_max_age);
        let mut body = BytesMut::new();
        while let Some(chunk) = resp.chunk().await.map_err(transport)? {
            if body.len() + chunk.len() > self.max_bytes {
                return Err(too_large());
            }
            body.extend_from_slice(&chunk);
        }
        Ok(Fetched { body: body.freeze(), max_age })
    }
}

/// The bounded client as `openidconnect`'s HTTP client, for the token and revocation
/// endpoints. Only a 200 reaches the crate: every other status comes back as
/// `FetchError::Status`, so that 429 (with its `Retry-After`) and OAuth error codes are judged
/// by authgate's own rules, as for every provider call.
#[derive(Debug, Clone, Copy)]
pub struct ProviderHttp<'a>(pub &'a Fetcher);

impl<'c> openidconnect::AsyncHttpClient<'c> for ProviderHttp<'_> {
    type Error = FetchError;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<openidconnect::HttpResponse, FetchError>> + Send + 'c>,
    >;

    fn call(&'c self, request: openidconnect::HttpRequest) -> Self::Future {
        Box::pin(async move {
            let fetched = self.0.execute(request).await?;
            let mut response = http::Response::new(lenient_token_response(fetched.body.to_vec()));
            // the body is judged as JSON whatever its label: a wrong one is the provider's slip
            response
                .headers_mut()
                .insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
            Ok(response)
        })
    }
}

/// `expires_in` as a number: `openidconnect` reads only numbers, while some providers (Azure AD
/// v1, older ADFS) send a numeric string.
fn lenient_token_response(body: Vec<u8>) -> Vec<u8> {
    let Ok(serde_json::Value::Object(mut doc)) = serde_json::from_slice::<serde_json::Value>(&body) else {
        return body;
    };
    let Some(seconds) =
        doc.get("expires_in").and_then(|v| v.as_str()).and_then(|s| s.trim().parse::<u64>().ok())
    else {
        return body;
    };
    doc.insert("expires_in".into(), seconds.into());
    serde_json::to_vec(&doc).unwrap_or(body)
}

/// `max-age=N` from a Cache-Control value (`no-store`/`no-cache` mean zero).
pub fn parse_max_age(cache_control: &str) -> Option<Duration> {
    let mut max_age = None;
    for directive in cache_control.split(',').map(str::trim) {
        let lower = directive.to_ascii_lowercase();
        if lower == "no-store" || lower == "no-cache" {
            return Some(Duration::ZERO);
        }
        if let Some(v) = lower.strip_prefix("max-age=") {
            max_age = v.trim_matches('"').parse::<u64>().ok().map(Duration::from_secs);
        }
    }
    max_age
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A provider at `http://idp.localhost:<port>` is reached on loopback, whatever the system
    /// resolver knows of `*.localhost` (issue 19 item 15).
    #[tokio::test]
    async fn localhost_names_reach_loopback() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            let (mut conn, _) = listener.accept().await.unwrap();
            let mut buf = vec![0u8; 4096];
            let n = conn.read(&mut buf).await.unwrap();
            let host = String::from_utf8_lossy(&buf[..n])
                .lines()
                .find_map(|l| l.strip_prefix("host: ").map(str::to_owned))
                .unwrap_or_default();
            let body = format!("{{\"host\":\"{host}\"}}");
            let reply = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}", body.len());
            conn.write_all(reply.as_bytes()).await.unwrap();
        });
        let fetcher = Fetcher::new(Duration::from_secs(5), 1024).unwrap();
        let got = fetcher.get(&format!("http://idp.localhost:{port}/doc")).await.unwrap();
        assert_eq!(got.body, format!("{{\"host\":\"idp.localhost:{port}\"}}").as_bytes());
    }

    #[test]
    fn a_numeric_string_lifetime_becomes_a_number() {
        let fixed = lenient_token_response(br#"{"access_token":"a","expires_in":"3599"}"#.to_vec());
        let v: serde_json::Value = serde_json::from_slice(&fixed).unwrap();
        assert_eq!(v["expires_in"], 3599);
        assert_eq!(v["access_token"], "a");
        let untouched = br#"{"access_token":"a","expires_in":300}"#.to_vec();
        assert_eq!(lenient_token_response(untouched.clone()), untouched);
        assert_eq!(lenient_token_response(b"garbage".to_vec()), b"garbage");
    }

    #[test]
    fn max_age_is_read_from_cache_control() {
        let cases = [
            ("max-age=300", Some(300)),
            ("public, max-age=86400, must-revalidate", Some(86400)),
            ("no-store", Some(0)),
            ("no-cache, max-age=60", Some(0)),
            ("max-age=\"60\"", Some(60)),
            ("max-age=abc", None),
            ("private", None),
        ];
        for (value, want) in cases {
            assert_eq!(parse_max_age(value).map(|d| d.as_secs()), want, "{value}");
        }
    }
}
