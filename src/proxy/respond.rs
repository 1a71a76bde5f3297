//! Writing a `Reply` to the client.

use pingora::http::ResponseHeader;
use pingora::proxy::Session as Downstream;

use crate::http_util::prefers_html;
use crate::reply::{Rejection, Reply};

/// A rejection as the reply this request's client prefers (HTML or problem JSON).
pub fn rejection_reply(
    req: &pingora::http::RequestHeader,
    rejection: &Rejection,
    resource_metadata: Option<&str>,
) -> Reply {
    rejection.reply(prefers_html(req.headers.get(http::header::ACCEPT)), resource_metadata)
}

/// Writes a reply.
pub async fn send_reply(downstream: &mut Downstream, reply: Reply) -> pingora::Result<()> {
    let mut resp = ResponseHeader::build(reply.status, Some(reply.headers.len() + 1))?;
    for (name, value) in reply.headers {
        resp.append_header(name, value)?;
    }
    resp.insert_header(http::header::CONTENT_LENGTH, reply.body.len())?;
    downstream.write_response_header(Box::new(resp), false).await?;
    downstream.write_response_body(Some(reply.body), true).await?;
    Ok(())
}
