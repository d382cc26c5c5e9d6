//! The hybrid-vsock handshake and port-forward header parsers, on both ends: hull-vmm's
//! `CONNECT <port>` and the host's `OK <port>` (`hull_contract::vsock`), and hull-proto's
//! port-forward exchange (`PORT <n>` read by the agent, `OK`/`ERR` read by the shim) on a
//! stream that holds the fuzzer's bytes. What a parser accepts must be what the writer of
//! that line would have written, and the bytes after a header line stay in the stream.
#![no_main]

use std::pin::Pin;
use std::task::{Context, Poll};

use hull_contract::vsock::{connect_request, ok_reply, parse_connect, parse_ok};
use hull_proto::portfwd;
use libfuzzer_sys::fuzz_target;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};

/// A peer that sends `input` and swallows what it is sent.
struct Peer<'a> {
    input: &'a [u8],
}

impl AsyncRead for Peer<'_> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.input).poll_read(cx, buf)
    }
}

impl AsyncWrite for Peer<'_> {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Poll::Ready(Ok(buf.len()))
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

fuzz_target!(|data: &[u8]| {
    // The VMM's reader gets at most MAX_REQUEST_LINE bytes, the host's MAX_REPLY_LINE; the
    // parsers themselves take any slice.
    if let Some(port) = parse_connect(data) {
        let canonical = connect_request(port);
        assert_eq!(parse_connect(canonical.trim_end().as_bytes()), Some(port));
    }
    if let Some(port) = parse_ok(data) {
        assert_eq!(parse_ok(ok_reply(port).trim_end().as_bytes()), Some(port));
    }
    hull_fuzz::block_on(async {
        // Agent side: the requested port, and what follows the header stays unread.
        let mut s = data;
        if let Ok(port) = portfwd::read_request(&mut s).await {
            assert_ne!(port, 0);
            let nl = data
                .iter()
                .position(|b| *b == b'\n')
                .expect("a header line");
            assert_eq!(
                s,
                &data[nl + 1..],
                "payload after the header is left in the stream"
            );
        }
        // Shim side: the agent's answer to a request for port 80.
        let mut peer = Peer { input: data };
        match portfwd::request(&mut peer, 80).await {
            Ok(()) => {
                assert!(data.starts_with(b"OK\n"));
                let mut rest = Vec::new();
                peer.read_to_end(&mut rest).await.expect("slice reads");
                assert_eq!(rest, &data[3..]);
            }
            Err(portfwd::PortFwdError::Refused { port, .. }) => assert_eq!(port, 80),
            Err(_) => {}
        }
    });
});
