//! What an operator does to users' sign-ins from the admin listener: list a user's sessions,
//! end one or all of them ("sign out everywhere"), put their bearer tokens on the deny-list for
//! a while and lift it. A user is named by `sub` and, optionally, the provider: without one,
//! every provider's user of that `sub` is meant. Through a shared store every instance follows
//! at once (the store announces each change); the memory store is this instance's only.

use serde::Serialize;

use super::BrowserAuth;
use crate::codec::hex_lower;
use crate::session::StoreError;

/// One session as an operator sees it: never a token, cookie value or address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ListedSession {
    /// A short public id of the session (the start of its store key), to end just it.
    pub id: String,
    /// The provider it was signed in with.
    pub provider: String,
    /// Sign-in time, seconds since the epoch.
    pub created: u64,
    /// Last use by any instance, seconds (within an instance's 5 s reuse of a read).
    pub last_used: u64,
    /// Absolute end, seconds.
    pub expires: u64,
}

/// Why an operator's request could not be carried out.
#[derive(Debug, thiserror::Error)]
pub enum OperatorError {
    /// No provider has that name.
    #[error("no provider is named {0:?}")]
    UnknownProvider(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A session's public id: 64 bits of its store key (unique among one user's) in hex.
fn public_id(key: &crate::session::SessionKey) -> String {
    hex_lower(&key.0[..8])
}

impl BrowserAuth {
    /// The providers meant (by name) and the user's keyed hash with each.
    fn operator_users<'a>(
        &'a self,
        sub: &str,
        provider: Option<&str>,
    ) -> Result<Vec<(&'a str, [u8; 32])>, OperatorError> {
        let meant: Vec<(usize, &str)> = self
            .clients()
            .enumerate()
            .map(|(i, c)| (i, c.name()))
            .filter(|(_, name)| provider.is_none_or(|p| p == *name))
            .collect();
        if meant.is_empty() {
            return Err(OperatorError::UnknownProvider(provider.unwrap_or_default().to_owned()));
        }
        Ok(meant.into_iter().map(|(i, name)| (name, self.user_index(&self.user_key(i, sub)))).collect())
    }

    /// The user's live sessions, oldest first.
    pub async fn list_sessions(
        &self,
        sub: &str,
        provider: Option<&str>,
    ) -> Result<Vec<ListedSession>, OperatorError> {
        let mut listed = Vec::new();
        for (name, user) in self.operator_users(sub, provider)? {
            for s in self.store.user_sessions(&user).await? {
                listed.push(ListedSession {
                    id: public_id(&s.key),
                    provider: name.to_owned(),
                    created: s.created_at,
                    last_used: s.last_used,
                    expires: s.expires_at,
                });
            }
        }
        listed.sort_by(|a, b| (a.created, &a.id).cmp(&(b.created, &b.id)));
        Ok(listed)
    }

    /// Ends the user's sessions, or only the one whose id is `only`; returns how many ended.
    pub async fn end_sessions(
        &self,
        sub: &str,
        provider: Option<&str>,
        only: Option<&str>,
    ) -> Result<usize, OperatorError> {
        let mut ended = 0;
        for (_, user) in self.operator_users(sub, provider)? {
            match only {
                // every session, whenever it began: the announcement drops cached copies too
                None => ended += self.store.delete_user(&user, u64::MAX).await?,
                Some(id) => {
                    for s in self.store.user_sessions(&user).await? {
                        if public_id(&s.key).eq_ignore_ascii_case(id) {
                            self.store.delete(&s.key).await?;
                            ended += 1;
                        }
                    }
                }
            }
        }
        Ok(ended)
    }

    /// Refuses the user's bearer tokens until `until` (seconds since the epoch).
    pub async fn deny_bearer(
        &self,
        sub: &str,
        provider: Option<&str>,
        until: u64,
    ) -> Result<(), OperatorError> {
        for (_, user) in self.operator_users(sub, provider)? {
            self.revocations.deny(&user, until).await?;
        }
        Ok(())
    }

    /// Lifts an operator's deny-list entry for the user; returns until when the user stays
    /// denied anyway (a provider's suspension), if they do.
    pub async fn lift_bearer(&self, sub: &str, provider: Option<&str>) -> Result<Option<u64>, OperatorError> {
        let mut remaining = None;
        for (_, user) in self.operator_users(sub, provider)? {
            remaining = remaining.max(self.revocations.lift(&user).await?);
        }
        Ok(remaining)
    }
}
