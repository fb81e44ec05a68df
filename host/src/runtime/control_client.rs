//! The client side of the control API, for the CLI (`headwater savepoint --control ADDR`):
//! one request per connection, with the bearer token when there is one.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use super::control_auth::ControlToken;

/// A request to the control API that did not get an answer.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach the control API on {address}: {source}; is the run started with --control {address}?")]
    Connect {
        address: SocketAddr,
        source: std::io::Error,
    },
    #[error("the control API on {address} did not answer: {source}")]
    Exchange {
        address: SocketAddr,
        source: std::io::Error,
    },
    #[error("the control API on {address} answered something that is not HTTP: {head}")]
    Garbled { address: SocketAddr, head: String },
}

/// An answer: the status code and the body.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub body: String,
}

impl Answer {
    /// The body's `error` field when it is JSON with one, else the body.
    pub fn error_message(&self) -> String {
        serde_json::from_str::<serde_json::Value>(&self.body)
            .ok()
            .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_string))
            .unwrap_or_else(|| self.body.trim().to_string())
    }
}

/// Sends `method target` (`/savepoint?to=...`) and waits up to `wait` for the answer.
pub fn request(
    address: SocketAddr,
    method: &str,
    target: &str,
    token: Option<&ControlToken>,
    wait: Duration,
) -> Result<Answer, ClientError> {
    request_with_body(address, method, target, token, &[], &[], wait)
}

/// [`request`] with more headers (`("X-Headwater-User", "ana")`) and a body.
pub fn request_with_body(
    address: SocketAddr,
    method: &str,
    target: &str,
    token: Option<&ControlToken>,
    headers: &[(&str, &str)],
    body: &[u8],
    wait: Duration,
) -> Result<Answer, ClientError> {
    let exchange = |source| ClientError::Exchange { address, source };
    let mut stream = TcpStream::connect_timeout(&address, Duration::from_secs(10))
        .map_err(|source| ClientError::Connect { address, source })?;
    stream.set_read_timeout(Some(wait)).map_err(exchange)?;
    let auth = token
        .map(|t| format!("Authorization: Bearer {}\r\n", t.expose()))
        .unwrap_or_default();
    let extra: String = headers
        .iter()
        .map(|(name, value)| format!("{name}: {value}\r\n"))
        .collect();
    write!(
        stream,
        "{method} {target} HTTP/1.1\r\nHost: {address}\r\n{auth}{extra}Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .map_err(exchange)?;
    stream.write_all(body).map_err(exchange)?;
    stream.flush().map_err(exchange)?;
    let mut raw = String::new();
    stream.read_to_string(&mut raw).map_err(exchange)?;
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((raw.as_str(), ""));
    let status = head
        .lines()
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| ClientError::Garbled {
            address,
            head: head.lines().next().unwrap_or_default().to_string(),
        })?;
    Ok(Answer {
        status,
        body: body.to_string(),
    })
}

/// Percent-encodes a query value (everything but unreserved characters and `/`).
pub fn encode_query_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~' | b'/' | b':') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_values_are_encoded() {
        assert_eq!(
            encode_query_value("s3://b/save points/a&b=c"),
            "s3://b/save%20points/a%26b%3Dc"
        );
    }
}
