//! The admin listener's client, for the command line (`authgate reload`, `sessions`, `deny`):
//! one HTTP/1.1 request on a plain connection. Hand-written because it is one request to a
//! known local listener; an HTTP client crate would add a runtime to a synchronous CLI.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::time::Duration;

/// Sends `method path_and_query` to the admin listener at `admin` with the admin token when
/// given; returns the status and the body.
pub fn request(
    admin: SocketAddr,
    method: &str,
    path_and_query: &str,
    token: Option<&str>,
) -> Result<(u16, String), String> {
    let mut stream = std::net::TcpStream::connect_timeout(&admin, Duration::from_secs(5))
        .map_err(|e| format!("cannot reach the admin listener at {admin}: {e}"))?;
    stream.set_read_timeout(Some(Duration::from_secs(30))).map_err(|e| e.to_string())?;
    let auth = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
    let head = format!(
        "{method} {path_and_query} HTTP/1.1\r\nHost: {admin}\r\n{auth}Content-Length: 0\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).map_err(|e| e.to_string())?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).map_err(|e| e.to_string())?;
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((answer.as_str(), ""));
    let status = head
        .lines()
        .next()
        .and_then(|line| line.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("the admin listener at {admin} answered no HTTP"))?;
    Ok((status, body.trim().to_owned()))
}

/// Asks a running gateway to reload its config, through `POST /reload` on its admin listener
/// (what `authgate reload` does), with the admin token when one is configured. Returns the
/// answer's body on success.
pub fn request_reload(admin: SocketAddr, token: Option<&str>) -> Result<String, String> {
    match request(admin, "POST", "/reload", token)? {
        (200, body) => Ok(body),
        (_, body) => Err(body),
    }
}
