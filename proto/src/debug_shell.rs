//! Reading `hull_contract::debug_shell` frames from an async stream: the one reader for both
//! ends of `hullctl debug` (hull-agent serves it, hullctl speaks it). The frames' format is
//! the contract crate's; this only brings it to tokio streams.

use hull_contract::debug_shell::{parse_header, DecodeError, Kind, HEADER_LEN};
use tokio::io::{AsyncRead, AsyncReadExt};

/// Why no frame was read.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The stream failed or ended (an end mid-frame too).
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The header is not a frame's.
    #[error("{0}")]
    Decode(#[from] DecodeError),
}

/// Reads one frame: its kind and payload (at most `MAX_PAYLOAD` bytes, checked before the
/// payload is read).
pub async fn read_frame<R: AsyncRead + Unpin>(r: &mut R) -> Result<(Kind, Vec<u8>), FrameError> {
    let mut h = [0u8; HEADER_LEN];
    r.read_exact(&mut h).await?;
    let (kind, len) = parse_header(h)?;
    let mut payload = vec![0u8; len];
    r.read_exact(&mut payload).await?;
    Ok((kind, payload))
}

#[cfg(test)]
mod tests {
    use super::*;
    use hull_contract::debug_shell::frame;

    #[tokio::test]
    async fn frames_come_back_and_bad_ones_are_refused() {
        let mut bytes = frame(Kind::Stdout, b"hi");
        bytes.extend(frame(Kind::Exit, &3u32.to_le_bytes()));
        let mut r = &bytes[..];
        assert_eq!(
            read_frame(&mut r).await.unwrap(),
            (Kind::Stdout, b"hi".to_vec())
        );
        assert_eq!(read_frame(&mut r).await.unwrap().0, Kind::Exit);
        assert!(matches!(read_frame(&mut r).await, Err(FrameError::Io(_))));
        let mut bad = &[0u8, 0, 0, 0, 0][..];
        assert!(matches!(
            read_frame(&mut bad).await,
            Err(FrameError::Decode(DecodeError::UnknownKind(0)))
        ));
    }
}
