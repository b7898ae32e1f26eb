//! A minimal HTTP/1.1 GET client over std's TcpStream, enough to scrape the daemon in tests.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// GETs `path` from `addr` ("127.0.0.1:PORT"); returns the body, or Err naming the failure.
pub fn http_get(addr: &str, path: &str) -> Result<String, String> {
    let what = format!("GET http://{addr}{path}");
    let mut stream = TcpStream::connect(addr).map_err(|e| format!("{what}: connect: {e}"))?;
    let timeout = Some(Duration::from_secs(10));
    stream
        .set_read_timeout(timeout)
        .map_err(|e| format!("{what}: {e}"))?;
    stream
        .set_write_timeout(timeout)
        .map_err(|e| format!("{what}: {e}"))?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream
        .write_all(request.as_bytes())
        .map_err(|e| format!("{what}: send: {e}"))?;
    let mut raw = Vec::new();
    stream
        .read_to_end(&mut raw)
        .map_err(|e| format!("{what}: read: {e}"))?;

    let split = find(&raw, b"\r\n\r\n").ok_or_else(|| format!("{what}: no end of headers"))?;
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let body_raw = &raw[split + 4..];
    let mut head_lines = head.lines();
    let status_line = head_lines.next().unwrap_or_default();
    let status: u16 = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("{what}: bad status line {status_line:?}"))?;
    let chunked = head_lines.any(|l| {
        let l = l.to_ascii_lowercase();
        l.starts_with("transfer-encoding:") && l.contains("chunked")
    });
    let body_bytes = if chunked {
        dechunk(body_raw).map_err(|e| format!("{what}: {e}"))?
    } else {
        body_raw.to_vec()
    };
    let body = String::from_utf8(body_bytes).map_err(|e| format!("{what}: body: {e}"))?;
    if status != 200 {
        return Err(format!("{what}: {status_line}: {body}"));
    }
    Ok(body)
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Decodes a chunked transfer-encoded body (trailers are ignored).
fn dechunk(mut raw: &[u8]) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    loop {
        let line_end = find(raw, b"\r\n").ok_or("chunk size line not terminated")?;
        let size_text = String::from_utf8_lossy(&raw[..line_end]);
        let size_hex = size_text.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_hex, 16)
            .map_err(|e| format!("bad chunk size {size_hex:?}: {e}"))?;
        raw = &raw[line_end + 2..];
        if size == 0 {
            return Ok(body);
        }
        if raw.len() < size + 2 {
            return Err(format!("chunk of {size} bytes truncated"));
        }
        body.extend_from_slice(&raw[..size]);
        raw = &raw[size + 2..];
    }
}
