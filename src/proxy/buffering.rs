//! Request-body buffering for legacy backends: a body of up to `server.limits.request_buffer`
//! bytes is read whole, under `request_body_timeout`, before the upstream is contacted (as
//! nginx does by default), so a slow client never holds a thread-per-connection backend and a
//! body with broken framing never reaches it. Larger bodies stream.
//!
//! Pingora 0.9 sends a body read before `upstream_peer` only through its retry buffer (64 KiB,
//! fixed): a body within it is sent from there. A longer `Content-Length` body is read with the
//! retry buffer switched on for its last 64 KiB only, so that Pingora still sends something, and
//! `request_body_filter` swaps in the whole body (`BufferedBody::Whole`); a single read is at
//! most 64 KiB (HTTP/1 reads, HTTP/2 frames of 16 KiB), so the tail never overflows it. A body of unknown
//! length (chunked, or HTTP/2 without `Content-Length`) can only be held within the retry
//! buffer without overflowing it on the next read: its first read is taken before the upstream
//! is contacted (a body that ends there is whole; a framing error there is a 400), the rest
//! streams.

use bytes::{Bytes, BytesMut};
use http::HeaderMap;
use pingora::proxy::Session as Downstream;

use crate::http_util::declared_length;
use crate::reply::Rejection;

/// Pingora's retry buffer: what it sends by itself from a body read before the upstream.
const RETRY_BUFFER: usize = 64 * 1024;

/// Bytes of bodies over the retry buffer held at once by the whole process: past it, further
/// large bodies stream (as with buffering off) instead of being held, so that many slow clients
/// cannot make the gateway hold `request_buffer` each.
const HELD_BYTES_LIMIT: usize = 256 * 1024 * 1024;
static HELD_BYTES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// A share of `HELD_BYTES_LIMIT`, given back when dropped (with the request's context).
pub struct Held(usize);

impl Held {
    fn take(bytes: usize) -> Option<Held> {
        use std::sync::atomic::Ordering;
        let mut current = HELD_BYTES.load(Ordering::Relaxed);
        loop {
            let next = current.checked_add(bytes).filter(|n| *n <= HELD_BYTES_LIMIT)?;
            match HELD_BYTES.compare_exchange_weak(current, next, Ordering::AcqRel, Ordering::Relaxed) {
                Ok(_) => return Some(Held(bytes)),
                Err(actual) => current = actual,
            }
        }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        HELD_BYTES.fetch_sub(self.0, std::sync::atomic::Ordering::AcqRel);
    }
}

/// How a request's body is read before the upstream is contacted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyPlan {
    /// No body, buffering off, or too large: Pingora streams it.
    Stream,
    /// `Content-Length` within the retry buffer: read whole, Pingora sends it.
    Small,
    /// `Content-Length` over the retry buffer but within the limit: read whole and kept here.
    Large(usize),
    /// Length unknown (chunked, HTTP/2): the first read only.
    FirstRead,
}

/// Decides how to read a body with these headers under `limit` (0 = stream everything).
pub fn plan(headers: &HeaderMap, body_empty: bool, limit: usize) -> BodyPlan {
    if limit == 0 || body_empty {
        return BodyPlan::Stream;
    }
    match declared_length(headers) {
        Some(n) if n > limit => BodyPlan::Stream,
        Some(n) if n <= RETRY_BUFFER => BodyPlan::Small,
        Some(n) => BodyPlan::Large(n),
        None => BodyPlan::FirstRead,
    }
}

/// A body read before the upstream, for `request_body_filter` to put in place.
#[derive(Default)]
pub enum BufferedBody {
    /// Nothing to replace: Pingora sends what it holds.
    #[default]
    None,
    /// The whole body, to replace the tail Pingora holds, and its share of what the process holds.
    Whole {
        /// The body.
        body: Bytes,
        /// Given back with the context.
        _held: Held,
    },
}

impl std::fmt::Debug for BufferedBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BufferedBody::None => f.write_str("None"),
            BufferedBody::Whole { body, .. } => write!(f, "Whole({} bytes)", body.len()),
        }
    }
}

/// Reads the body as `plan` says, within `deadline`. `Err` is the answer instead: 408 when the
/// body is too slow, 400 when its framing is broken.
pub async fn read(
    downstream: &mut Downstream,
    plan: BodyPlan,
    deadline: std::time::Duration,
) -> pingora::Result<Result<BufferedBody, Rejection>> {
    if plan == BodyPlan::Stream {
        return Ok(Ok(BufferedBody::None));
    }
    // a client waiting for 100 Continue would wait until its own timeout: answer it here
    if is_expecting_continue(&downstream.req_header().headers) {
        downstream.downstream_session.write_continue_response().await?;
    }
    match tokio::time::timeout(deadline, read_planned(downstream, plan)).await {
        Ok(Ok(body)) => Ok(Ok(body)),
        Ok(Err(e)) if e.esource() == &pingora::ErrorSource::Downstream => match e.etype() {
            // the client went away: nobody to answer
            pingora::ErrorType::ConnectionClosed | pingora::ErrorType::ReadError => Err(e),
            _ => Ok(Err(Rejection::new(400, "bad_request", "The request body is malformed."))),
        },
        Ok(Err(e)) => Ok(Err({
            tracing::debug!(error = %e, "request body refused");
            Rejection::new(400, "bad_request", "The request body is malformed.")
        })),
        Err(_) => Ok(Err(Rejection::new(408, "timeout", "The request body was too slow."))),
    }
}

async fn read_planned(downstream: &mut Downstream, plan: BodyPlan) -> pingora::Result<BufferedBody> {
    match plan {
        BodyPlan::Stream => Ok(BufferedBody::None),
        BodyPlan::Small => {
            downstream.enable_retry_buffering();
            while downstream.read_request_body().await?.is_some() {}
            Ok(BufferedBody::None)
        }
        BodyPlan::FirstRead => {
            downstream.enable_retry_buffering();
            downstream.read_request_body().await?;
            // a first read past the retry buffer (bytes read with large headers) would be lost
            if downstream.retry_buffer_truncated() {
                return Err(pingora::Error::explain(
                    pingora::ErrorType::InvalidHTTPHeader,
                    "the request body could not be held",
                ));
            }
            Ok(BufferedBody::None)
        }
        BodyPlan::Large(length) => {
            // too much held by the process already: this one streams
            let Some(held) = Held::take(length) else {
                tracing::debug!(length, "request body streamed: the buffers of the process are full");
                return Ok(BufferedBody::None);
            };
            // grown as bytes arrive, not sized from the header: a client that announces a
            // megabyte and sends a byte holds a byte
            let mut whole = BytesMut::with_capacity(RETRY_BUFFER);
            let mut buffering = false;
            loop {
                // the last 64 KiB also go to the retry buffer, so that Pingora sends them and
                // `request_body_filter` runs: there they are replaced by the whole body
                if !buffering && length.saturating_sub(whole.len()) <= RETRY_BUFFER {
                    downstream.enable_retry_buffering();
                    buffering = true;
                }
                match downstream.read_request_body().await? {
                    Some(chunk) => whole.extend_from_slice(&chunk),
                    None => break,
                }
            }
            // Pingora sends a body read before the upstream only from its retry buffer: without
            // the tail there (headers larger than it, read with the first bytes) nothing would go
            if downstream.get_retry_buffer().is_none() {
                return Err(pingora::Error::explain(
                    pingora::ErrorType::InvalidHTTPHeader,
                    "the request body could not be held",
                ));
            }
            Ok(BufferedBody::Whole { body: whole.freeze(), _held: held })
        }
    }
}

/// `Expect: 100-continue` (any case)?
pub fn is_expecting_continue(headers: &HeaderMap) -> bool {
    headers.get(http::header::EXPECT).is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(k, v)| (http::HeaderName::from_bytes(k.as_bytes()).unwrap(), v.parse().unwrap()))
            .collect()
    }

    #[test]
    fn bodies_are_buffered_up_to_the_limit() {
        let mib = 1024 * 1024;
        let cl = |n: usize| headers(&[("content-length", &n.to_string())]);
        assert_eq!(plan(&cl(10), false, mib), BodyPlan::Small);
        assert_eq!(plan(&cl(RETRY_BUFFER), false, mib), BodyPlan::Small);
        assert_eq!(plan(&cl(RETRY_BUFFER + 1), false, mib), BodyPlan::Large(RETRY_BUFFER + 1));
        assert_eq!(plan(&cl(mib), false, mib), BodyPlan::Large(mib));
        assert_eq!(plan(&cl(mib + 1), false, mib), BodyPlan::Stream, "larger bodies stream");
        assert_eq!(plan(&cl(10), false, 0), BodyPlan::Stream, "0 turns buffering off");
        assert_eq!(plan(&cl(0), true, mib), BodyPlan::Stream, "no body");
        assert_eq!(plan(&headers(&[("transfer-encoding", "chunked")]), false, mib), BodyPlan::FirstRead);
    }

    #[test]
    fn expect_continue_is_recognised_in_any_case() {
        assert!(is_expecting_continue(&headers(&[("expect", "100-Continue")])));
        assert!(!is_expecting_continue(&headers(&[("expect", "200-ok")])));
        assert!(!is_expecting_continue(&HeaderMap::new()));
    }
}

#[cfg(test)]
mod held_tests {
    use super::*;

    #[test]
    fn the_process_holds_at_most_its_limit_and_gets_it_back() {
        let a = Held::take(HELD_BYTES_LIMIT / 2).unwrap();
        let b = Held::take(HELD_BYTES_LIMIT / 2).unwrap();
        assert!(Held::take(1).is_none(), "the limit is reached: the next body streams");
        drop(a);
        assert!(Held::take(1024).is_some());
        drop(b);
        assert!(Held::take(HELD_BYTES_LIMIT).is_some());
    }
}
