//! Signing in: starting a login (state kept server-side, bound to the browser) and the callback
//! (every check on the provider's answer, the code exchange, the new session).

use http::StatusCode;

use super::pages::{
    bad_callback, restart_url, retry_page, too_many_sign_ins, unavailable_page, waiting_page,
};
use super::{BrowserAuth, MAX_TOKEN_LIFETIME, ProviderClient};
use crate::clock::unix_now;
use crate::http_util::{cookie_values, parse_unique_query};
use crate::identity::Identity;
use crate::oidc::budget::Grant;
use crate::oidc::login::{self, AuthorizationRequest, LoginError, TokenResponse};
use crate::pages::{Choice, Denied, PageContext};
use crate::random::random_token;
use crate::reply::{ACCOUNT_DISABLED, Reply};
use crate::session::{LoginState, SealError, Session, SessionTicket, SessionTokens};

impl BrowserAuth {
    /// Starts a sign-in at one of `providers` (indexes; empty: any): with one, stores the
    /// login state and redirects to it; with several, redirects to the chooser at
    /// `/oauth2/start` (always a redirect: a front proxy passes a 2xx on as "allowed"). The
    /// browser is bound to the login by a cookie (reused across tabs, so parallel logins all
    /// succeed). `client` is the address the request came from (see `proxy::client_address`):
    /// each gets a share of `max_pending_logins`.
    pub async fn start_login(
        &self,
        page: PageContext<'_>,
        origin: &str,
        return_to: String,
        cookie_header: Option<&str>,
        client: Option<std::net::IpAddr>,
        providers: &[usize],
    ) -> Reply {
        let provider = match providers {
            [one] => *one,
            [] if self.provider_count() == 1 => 0,
            several => return Reply::redirect(&self.start_url(several, &return_to)),
        };
        match self.try_start_login(page, origin, return_to, cookie_header, client, provider).await {
            Ok(reply) => reply,
            Err(e) => {
                tracing::warn!(error = %e, "cannot start a sign-in");
                unavailable_page(page)
            }
        }
    }

    /// Where a sign-in at one of `providers` (all when empty) starts, back to `return_to`.
    pub fn start_url(&self, providers: &[usize], return_to: &str) -> String {
        let rd: String = url::form_urlencoded::byte_serialize(return_to.as_bytes()).collect();
        let names: Vec<&str> = match providers {
            [] => Vec::new(),
            some => some.iter().map(|&i| self.client(i).name()).collect(),
        };
        match names.as_slice() {
            [] => format!("/oauth2/start?rd={rd}"),
            [one] => format!("/oauth2/start?provider={one}&rd={rd}"),
            several => format!("/oauth2/start?providers={}&rd={rd}", several.join(",")),
        }
    }

    /// The chooser page: a sign-in at each of `providers` (all when empty), back to `return_to`.
    pub fn chooser(&self, page: PageContext<'_>, providers: &[usize], return_to: &str) -> Reply {
        let all: Vec<usize> = (0..self.provider_count()).collect();
        let providers = if providers.is_empty() { &all[..] } else { providers };
        let choices: Vec<Choice> = providers
            .iter()
            .map(|&i| Choice {
                label: self.client(i).display_name.clone(),
                url: self.start_url(&[i], return_to),
            })
            .collect();
        page.chooser(&choices)
    }

    async fn try_start_login(
        &self,
        page: PageContext<'_>,
        origin: &str,
        return_to: String,
        cookie_header: Option<&str>,
        client: Option<std::net::IpAddr>,
        provider: usize,
    ) -> Result<Reply, LoginError> {
        let at = self.client(provider);
        let discovery = at.verifier.provider().discovery().ok_or(LoginError::NotReady("discovery"))?;
        if let Err(retry_after) = self.login_budget.take(client) {
            login_outcome("throttled");
            tracing::warn!(retry_after, "too many sign-ins started: session.max_pending_logins reached");
            return Ok(too_many_sign_ins(page, retry_after));
        }
        let existing =
            cookie_values(cookie_header, &self.cookies.login).find(|v| v.len() == 43 && is_b64url(v));
        let binding = match existing {
            Some(b) => b.to_owned(),
            None => random_token(32)?,
        };
        let browser = self.binding_hash(&binding);
        let redirect_uri = format!("{origin}/oauth2/callback");
        let AuthorizationRequest { url, state, mut login } = login::authorization_request(
            &discovery,
            &at.settings,
            &redirect_uri,
            return_to,
            browser,
            unix_now(),
        )?;
        // the callback is shared: the state says where this sign-in went
        login.provider = at.name().to_owned();
        let sealed = self.sealer.seal_with("authgate login", state.as_bytes(), &login)?;
        let key = self.login_key(&state);
        if let Err(e) = self.store.put_login(key, sealed).await {
            // nothing was stored: the start goes back to the budget
            self.login_budget.refund(client);
            return Err(LoginError::Unavailable(e.to_string()));
        }
        let mut reply = Reply::redirect(&url);
        reply.header(http::header::SET_COOKIE, self.cookies.login_cookie(&binding));
        login_outcome("started");
        Ok(reply)
    }

    /// Completes a sign-in at `/oauth2/callback`; `client` is the address it comes from (each
    /// network exchanges codes within its own allowance).
    pub async fn callback(
        &self,
        page: PageContext<'_>,
        origin: &str,
        query: Option<&str>,
        cookie_header: Option<&str>,
        client: Option<std::net::IpAddr>,
    ) -> Reply {
        let reply = self.complete_login(page, origin, query, cookie_header, client).await;
        login_outcome(match reply.status.as_u16() {
            302 => "completed",
            403 => "access_denied",
            400 => "refused",
            429 => "throttled",
            503 => "deferred",
            _ => "provider_error",
        });
        reply
    }

    async fn complete_login(
        &self,
        page: PageContext<'_>,
        origin: &str,
        query: Option<&str>,
        cookie_header: Option<&str>,
        client: Option<std::net::IpAddr>,
    ) -> Reply {
        let params = match parse_unique_query(query.unwrap_or("")) {
            Ok(p) => p,
            Err(e) => return bad_callback(page, &format!("The sign-in response is malformed ({e}).")),
        };
        let get = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        let retry = format!("{origin}/oauth2/start");
        // A response for a sign-in this browser did not start (no state, an unknown or spent
        // one, another browser's) is the client's error: 400, whatever it says, and another
        // browser's state is left for its owner. Only the owner uses its state up.
        let Some(state) = get("state") else {
            return bad_callback(page, "The sign-in response has no state.");
        };
        let key = self.login_key(state);
        let unknown =
            || bad_callback(page, "This sign-in has expired or was already used. Please start again.");
        let sealed = match self.store.peek_login(&key).await {
            Ok(Some(s)) => s,
            Ok(None) => return unknown(),
            Err(e) => {
                tracing::warn!(error = %e, "session store unavailable");
                return unavailable_page(page);
            }
        };
        let login: LoginState = match self.sealer.open_with("authgate login", state.as_bytes(), &sealed) {
            Ok(l) => l,
            Err(_) => return bad_callback(page, "This sign-in cannot be read. Please start again."),
        };
        let bound =
            cookie_values(cookie_header, &self.cookies.login).any(|v| self.binding_hash(v) == login.browser);
        if !bound {
            return bad_callback(page, "This sign-in was started in another browser. Please start again.");
        }
        match self.store.take_login(&key).await {
            Ok(Some(_)) => {}
            // the same browser's other tab (or a replay) took it first
            Ok(None) => return unknown(),
            Err(e) => {
                tracing::warn!(error = %e, "session store unavailable");
                return unavailable_page(page);
            }
        }
        if let Some(error) = get("error") {
            if error == "access_denied" {
                let reason = "The identity provider did not let this account sign in here.";
                return page.forbidden(&Denied { user: None, app: None, reason });
            }
            tracing::warn!(error = %sanitize(error), "the provider returned a sign-in error");
            return retry_page(
                page,
                StatusCode::BAD_GATEWAY,
                "The identity provider could not sign you in.",
                &retry,
            );
        }
        if login.created_at + self.settings.login_ttl.as_secs() < unix_now() {
            return bad_callback(page, "This sign-in has expired. Please start again.");
        }
        // the provider the sign-in was started at, and only that one, completes it
        let Some(provider) = self.provider_index(&login.provider) else {
            return bad_callback(
                page,
                "This sign-in went to a provider no longer configured. Please start again.",
            );
        };
        let at = self.client(provider);
        let Some(discovery) = at.verifier.provider().discovery() else { return unavailable_page(page) };
        let issuer = &at.verifier.provider().issuer;
        match get("iss") {
            Some(iss) if iss != issuer => {
                return bad_callback(page, "The sign-in response comes from an unexpected issuer.");
            }
            // with several providers, a public client's code must say whose it is: a mix-up
            // (one provider's code sent to another's token endpoint with its PKCE verifier)
            // is only stopped by `iss` then (RFC 9207; a confidential client's secret stops it
            // too)
            None if discovery.issuer_in_authorization_response()
                || (self.provider_count() > 1 && at.settings.client_secret.is_none()) =>
            {
                return bad_callback(page, "The sign-in response does not name its issuer.");
            }
            _ => {}
        }
        let Some(code) = get("code") else { return bad_callback(page, "The sign-in response has no code.") };
        // RFC 6749 codes are visible ASCII; a huge or odd one is refused before it costs a call
        if code.is_empty() || code.len() > MAX_CODE_LEN || !code.bytes().all(|b| (0x21..=0x7e).contains(&b)) {
            return bad_callback(page, "The sign-in response is malformed.");
        }

        let tokens = match self.exchange(at, code, &login, client).await {
            Ok(t) => t,
            Err(Exchange::NetworkOverAllowance(retry_after)) => {
                tracing::warn!(
                    retry_after,
                    "sign-in deferred: too many code exchanges from the client's network"
                );
                let wait = std::time::Duration::from_secs(retry_after);
                return waiting_page(
                    page,
                    StatusCode::TOO_MANY_REQUESTS,
                    wait,
                    &restart_url(origin, &login.return_to),
                );
            }
            Err(Exchange::Failed(LoginError::Refused(code)))
                if code == "invalid_grant" || code == "invalid_request" =>
            {
                tracing::info!(error = %sanitize(&code), "the provider refused the sign-in code");
                return retry_page(page, StatusCode::BAD_REQUEST, "This sign-in has expired.", &retry);
            }
            Err(Exchange::Failed(LoginError::RateLimited(wait))) => {
                // the code would die waiting: sign in again (a fresh code) once there is room
                tracing::info!(wait_s = wait.as_secs(), "sign-in deferred: no token-endpoint budget left");
                return waiting_page(
                    page,
                    StatusCode::SERVICE_UNAVAILABLE,
                    wait,
                    &restart_url(origin, &login.return_to),
                );
            }
            Err(Exchange::Failed(e)) => {
                tracing::warn!(error = %e, "code exchange failed");
                return retry_page(
                    page,
                    StatusCode::BAD_GATEWAY,
                    "The identity provider could not complete your sign-in.",
                    &retry,
                );
            }
        };
        let Some(id_token) = tokens.id_token.clone() else {
            tracing::warn!("the token response has no id_token");
            return retry_page(
                page,
                StatusCode::BAD_GATEWAY,
                "The identity provider could not complete your sign-in.",
                &retry,
            );
        };
        let id_claims = match at.verifier.verify_id_token(&id_token, &login.nonce).await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(reason = %e, "id_token refused");
                return bad_callback(page, "The sign-in could not be verified.");
            }
        };
        if id_claims["sub"].as_str().is_some_and(|sub| self.revocations.is_denied(at.namespace(), sub)) {
            tracing::info!("sign-in refused: the user is suspended");
            return Reply::page(StatusCode::FORBIDDEN, "Account disabled", &[ACCOUNT_DISABLED], "");
        }
        let access_claims = login::access_token_claims(&tokens.access_token);
        if let Some(sub) = access_claims.as_ref().and_then(|c| c.get("sub")).and_then(|s| s.as_str()) {
            if Some(sub) != id_claims["sub"].as_str() {
                tracing::warn!("access token and id_token name different subjects");
                return bad_callback(page, "The sign-in could not be verified.");
            }
        }
        let now = unix_now();
        let expires_at = now + self.settings.session_lifetime;
        let identity = self.session_identity(provider, &id_claims, access_claims.as_ref(), expires_at);
        let session = Session {
            sid: id_claims.get("sid").and_then(|s| s.as_str()).map(String::from),
            tokens: SessionTokens {
                access_token: tokens.access_token,
                refresh_token: tokens.refresh_token,
                id_token,
                access_expires_at: now
                    .saturating_add(tokens.expires_in.unwrap_or(300).min(MAX_TOKEN_LIFETIME)),
                access_issued_at: now,
            },
            identity,
            created_at: now,
            expires_at,
            provider: login.provider.clone(),
        };
        match self.create_session(&session).await {
            Ok(ticket) => {
                tracing::info!("sign-in completed");
                let mut reply = Reply::redirect(&login.return_to);
                reply.header(http::header::SET_COOKIE, self.cookies.session_cookie(&ticket));
                reply
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot store the new session");
                unavailable_page(page)
            }
        }
    }

    /// Redeems `code`: one network's exchanges one at a time and within its allowance (a
    /// refused code costs it dearly), every exchange within the token-endpoint budget. Waits for
    /// either as long as the code lives (`CODE_PATIENCE`); holds the network's turn only while
    /// the provider is asked, never while waiting for budget.
    async fn exchange(
        &self,
        at: &ProviderClient,
        code: &str,
        login: &LoginState,
        client: Option<std::net::IpAddr>,
    ) -> Result<TokenResponse, Exchange> {
        let provider = at.verifier.provider();
        let Some(discovery) = provider.discovery() else {
            return Err(Exchange::Failed(LoginError::NotReady("discovery")));
        };
        let deadline = std::time::Instant::now() + login::CODE_PATIENCE;
        // a code that waited for budget may have died waiting: its refusal is not the network's doing
        let mut waited = false;
        loop {
            let turn = at.exchange_limiter.enter(client).await.map_err(Exchange::NetworkOverAllowance)?;
            let wait = match provider.budget.try_take(Grant::CodeExchange) {
                Ok(()) => {
                    let result = login::redeem_code(
                        provider.fetcher(),
                        &discovery,
                        &at.settings,
                        &provider.budget,
                        code,
                        login,
                    )
                    .await;
                    match result {
                        Err(LoginError::RateLimited(pause)) => {
                            // the provider's limit, not the network's doing
                            if let Some(turn) = &turn {
                                turn.refund();
                            }
                            pause
                        }
                        // any refusal but of the gateway itself (a wrong client secret would
                        // lock every network out): a made-up or replayed code, whatever the
                        // provider calls it; its network pays for the call it cost
                        Err(LoginError::Refused(code))
                            if !matches!(code.as_str(), "invalid_client" | "unauthorized_client") =>
                        {
                            if let (Some(turn), false) = (&turn, waited) {
                                turn.refused();
                            }
                            return Err(Exchange::Failed(LoginError::Refused(code)));
                        }
                        other => return other.map_err(Exchange::Failed),
                    }
                }
                Err(wait) => {
                    if let Some(turn) = &turn {
                        turn.refund();
                    }
                    crate::metrics::METRICS
                        .token_budget_waits
                        .with_label_values(&[Grant::CodeExchange.label()])
                        .inc();
                    wait
                }
            };
            drop(turn);
            if std::time::Instant::now() + wait > deadline {
                return Err(Exchange::Failed(LoginError::RateLimited(wait)));
            }
            waited = true;
            tokio::time::sleep(wait).await;
        }
    }

    /// Who a session stands for, from the id_token's claims and the access token's (which carry
    /// Calimatic's licenses, organization and permissions). An address the provider has not
    /// verified must not become an identity apps key on.
    pub(super) fn session_identity(
        &self,
        provider: usize,
        id_claims: &serde_json::Value,
        access_claims: Option<&serde_json::Value>,
        expires_at: u64,
    ) -> Identity {
        let at = self.client(provider);
        let mut identity =
            Identity::from_login(id_claims, access_claims, expires_at, at.verifier.extra_claims());
        let verified = id_claims.get("email_verified") == Some(&serde_json::Value::Bool(true));
        if !verified && !at.settings.trust_unverified_email {
            identity.email = None;
        }
        identity
    }

    /// Stores `session` under a brand-new ticket (never reusing an id: fixation-proof).
    async fn create_session(&self, session: &Session) -> Result<SessionTicket, LoginError> {
        let ticket = SessionTicket::generate()?;
        let stored = self.stored(&ticket, session, 1)?;
        let written = self
            .store
            .save(&self.sealer.session_key(&ticket), stored, None)
            .await
            .map_err(|e| LoginError::Unavailable(e.to_string()))?;
        if !written {
            return Err(LoginError::Seal(SealError::Random));
        }
        Ok(ticket)
    }
}

/// Longest authorization code accepted (Keycloak's are ~100 characters, Entra's ~1 000).
const MAX_CODE_LEN: usize = 4096;

fn login_outcome(outcome: &'static str) {
    crate::metrics::METRICS.logins.with_label_values(&[outcome]).inc();
}

fn is_b64url(s: &str) -> bool {
    s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// An error code from the provider, safe to log (no free text, bounded).
fn sanitize(code: &str) -> String {
    code.chars().filter(|c| c.is_ascii_alphanumeric() || *c == '_').take(64).collect()
}

/// Why a code was not redeemed.
enum Exchange {
    /// The client's network has used its allowance (or is paying for refused codes): come back
    /// in this many seconds.
    NetworkOverAllowance(u64),
    /// The provider or the budget said no.
    Failed(LoginError),
}
