//! Reading one `\n`-terminated header line from a stream whose remaining bytes belong to
//! someone else: the hybrid vsock handshake and the port-forward header both end in a line,
//! and whatever follows it is payload that must stay in the stream.

use tokio::io::{AsyncRead, AsyncReadExt};

/// What [`read_line`] saw.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Line {
    /// The line without its `\n`.
    Text(Vec<u8>),
    /// The peer closed (or reset) before a newline.
    Closed,
    /// More than `max` bytes without a newline.
    TooLong,
}

/// Reads up to and including the next `\n`, byte by byte so that nothing after it is consumed.
/// A reset counts as closed: a peer that closes with our request unread resets the connection.
pub(crate) async fn read_line<S: AsyncRead + Unpin>(
    s: &mut S,
    max: usize,
) -> std::io::Result<Line> {
    let mut line = Vec::new();
    loop {
        let mut b = [0u8; 1];
        let n = match s.read(&mut b).await {
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => 0,
            r => r?,
        };
        if n == 0 {
            return Ok(Line::Closed);
        }
        if b[0] == b'\n' {
            return Ok(Line::Text(line));
        }
        if line.len() == max {
            return Ok(Line::TooLong);
        }
        line.push(b[0]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn stops_at_the_newline_and_bounds_the_length() {
        let mut s: &[u8] = b"OK 5\nrest";
        assert_eq!(
            read_line(&mut s, 8).await.unwrap(),
            Line::Text(b"OK 5".to_vec())
        );
        assert_eq!(s, b"rest");
        let mut s: &[u8] = b"abc";
        assert_eq!(read_line(&mut s, 8).await.unwrap(), Line::Closed);
        let mut s: &[u8] = b"abcdefghij\n";
        assert_eq!(read_line(&mut s, 4).await.unwrap(), Line::TooLong);
        let mut s: &[u8] = b"abcd\n";
        assert_eq!(
            read_line(&mut s, 4).await.unwrap(),
            Line::Text(b"abcd".to_vec())
        );
    }
}
