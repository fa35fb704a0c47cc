//! The parts of a test's HTTP relay (a TCP listener between floe and a server it calls, which a
//! test can make lose or hold requests and answers): one request read whole, forwarded on a
//! connection of its own, and its answer passed back. Each test file decides what its relay does
//! with what.

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// One HTTP request as a client sent it.
pub struct Request {
    /// The request line and headers.
    pub head: String,
    bytes: Vec<u8>,
    head_end: usize,
}

impl Request {
    /// The request line, e.g. `POST /v1/namespaces/ns/tables/t HTTP/1.1`.
    pub fn line(&self) -> &str {
        self.head.lines().next().unwrap_or_default()
    }
}

/// Reads one request whole (head and a `content-length` body); `None` when the client closed
/// first.
pub async fn read_request(client: &mut TcpStream) -> std::io::Result<Option<Request>> {
    let mut bytes = Vec::new();
    let mut buf = [0u8; 8192];
    let head_end = loop {
        let n = client.read(&mut buf).await?;
        if n == 0 {
            return Ok(None);
        }
        bytes.extend_from_slice(&buf[..n]);
        if let Some(at) = bytes.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
    };
    let head = String::from_utf8_lossy(&bytes[..head_end]).to_string();
    let length: usize = head
        .lines()
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().ok())?
        })
        .unwrap_or(0);
    while bytes.len() < head_end + length {
        let n = client.read(&mut buf).await?;
        if n == 0 {
            return Ok(None);
        }
        bytes.extend_from_slice(&buf[..n]);
    }
    Ok(Some(Request {
        head,
        bytes,
        head_end,
    }))
}

/// Sends `request` to `target` (`host:port`), asking it to close the connection after answering,
/// and reads its whole answer.
pub async fn forward(target: &str, request: &Request) -> std::io::Result<Vec<u8>> {
    let (first_line, rest) = request.head.split_once("\r\n").unwrap();
    let mut sent = format!("{first_line}\r\nConnection: close\r\n").into_bytes();
    sent.extend(
        rest.lines()
            .filter(|line| !line.to_ascii_lowercase().starts_with("connection:"))
            .flat_map(|line| format!("{line}\r\n").into_bytes()),
    );
    sent.extend_from_slice(&request.bytes[request.head_end..]);
    let mut server = TcpStream::connect(target).await?;
    server.write_all(&sent).await?;
    let mut answer = Vec::new();
    server.read_to_end(&mut answer).await?;
    Ok(answer)
}

/// Passes `answer` back to the client, telling it too that the connection closes (so that it
/// does not send its next request on it).
pub async fn answer(client: &mut TcpStream, answer: &[u8]) -> std::io::Result<()> {
    let status_line_end = answer.windows(2).position(|w| w == b"\r\n").unwrap_or(0) + 2;
    client.write_all(&answer[..status_line_end]).await?;
    client.write_all(b"Connection: close\r\n").await?;
    client.write_all(&answer[status_line_end..]).await?;
    client.shutdown().await
}
