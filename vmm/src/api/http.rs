//! The smallest HTTP/1.1 the API needs: one request per connection, `Content-Length` bodies,
//! JSON replies. Anything else is a 400.

use std::io::{BufRead, BufReader, Read, Write};

/// Largest request accepted (headers + body).
const MAX_BODY: usize = 64 * 1024;
const MAX_HEADER_LINES: usize = 64;

/// A parsed request.
#[derive(Debug, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    pub path: String,
    pub body: Vec<u8>,
}

/// Reads one request from `r`.
pub fn read_request(r: impl Read) -> Result<Request, String> {
    let mut r = BufReader::new(r.take((MAX_BODY + 8192) as u64));
    let mut line = String::new();
    r.read_line(&mut line).map_err(|e| e.to_string())?;
    let mut parts = line.split_whitespace();
    let (Some(method), Some(path)) = (parts.next(), parts.next()) else {
        return Err("malformed request line".into());
    };
    let (method, path) = (method.to_string(), path.to_string());
    let mut len = 0usize;
    for _ in 0..MAX_HEADER_LINES {
        line.clear();
        r.read_line(&mut line).map_err(|e| e.to_string())?;
        let l = line.trim_end();
        if l.is_empty() {
            let mut body = vec![0u8; len];
            r.read_exact(&mut body).map_err(|e| e.to_string())?;
            return Ok(Request { method, path, body });
        }
        if let Some((k, v)) = l.split_once(':') {
            if k.eq_ignore_ascii_case("content-length") {
                len = v.trim().parse().map_err(|_| "bad Content-Length")?;
                if len > MAX_BODY {
                    return Err("body too large".into());
                }
            }
        }
    }
    Err("too many header lines".into())
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        204 => "No Content",
        400 => "Bad Request",
        404 => "Not Found",
        409 => "Conflict",
        _ => "Internal Server Error",
    }
}

/// Writes a reply with a JSON `body`; a 200 without one is a 204.
pub fn write_response(
    mut w: impl Write,
    status: u16,
    content_type: &str,
    body: Option<&str>,
) -> std::io::Result<()> {
    let text = body.unwrap_or_default();
    let status = if body.is_none() && status == 200 {
        204
    } else {
        status
    };
    write!(
        w,
        "HTTP/1.1 {status} {}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}",
        reason(status),
        text.len()
    )?;
    w.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_requests() {
        let raw = b"PUT /actions HTTP/1.1\r\nContent-Length: 17\r\n\r\n{\"action\":\"boot\"}";
        let r = read_request(&raw[..]).unwrap();
        assert_eq!((r.method.as_str(), r.path.as_str()), ("PUT", "/actions"));
        assert_eq!(r.body, br#"{"action":"boot"}"#);
        assert!(read_request(&b"\r\n"[..]).is_err());
        assert!(read_request(&b"GET / HTTP/1.1\r\nContent-Length: 99999999\r\n\r\n"[..]).is_err());
        let mut out = Vec::new();
        write_response(&mut out, 200, "application/json", None).unwrap();
        assert!(out.starts_with(b"HTTP/1.1 204"));
        let mut out = Vec::new();
        write_response(&mut out, 200, "text/plain; version=0.0.4", Some("m 1\n")).unwrap();
        let out = String::from_utf8(out).unwrap();
        assert!(
            out.contains("Content-Type: text/plain; version=0.0.4\r\n"),
            "{out}"
        );
    }
}
