//! The WebSocket leg of CRI PortForward: the URL containerd's PortForward answers is its
//! streaming server, which speaks kubelet's `v4.channel.k8s.io` protocol. This module opens it
//! and pumps our input to the pod's port and the port's answer to our output.
//!
//! Every binary message, both ways, starts with a channel byte: for one port, channel 0
//! carries the data and channel 1 the server's error text. The server's first payload on each
//! channel is the port, 2 bytes little-endian. WebSocket has no half-close, so the end of the
//! input is not forwarded: the stream ends when the server closes it (containerd does once the
//! pod's side of the connection ends), or when we close it after `max_bytes`.

use std::cell::Cell;
use std::time::Duration;

use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::error::ProtocolError;
use tokio_tungstenite::tungstenite::handshake::client::Request;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// The subprotocol: raw binary payloads behind the channel byte (the `v4.base64.` variant
/// would encode them).
pub const PROTOCOL: &str = "v4.channel.k8s.io";
/// Largest payload of one message we send (the server's own copies use 32 KiB buffers).
pub const CHUNK: usize = 32 << 10;
const DATA: u8 = 0;
const ERROR: u8 = 1;

/// Errors of a port-forward stream (an error text sent by the server is not one: it is the
/// [`Outcome`]'s).
#[derive(Debug, thiserror::Error)]
pub enum PortForwardError {
    #[error("streaming URL {url:?}: {reason}")]
    Url { url: String, reason: &'static str },
    #[error("WebSocket to {url}")]
    Connect {
        url: String,
        #[source]
        source: tungstenite::Error,
    },
    #[error("WebSocket to {url}: no upgrade within {after:?}")]
    ConnectTimeout { url: String, after: Duration },
    #[error("channel {channel}: the server announced port {got}, not {want}")]
    WrongPort { channel: u8, got: u16, want: u16 },
    #[error("message on channel {0}: only 0 (data) and 1 (error) exist for one port")]
    UnknownChannel(u8),
    #[error("the server closed the stream before announcing the port on both channels")]
    Unannounced,
    #[error("nothing moved in either direction for {0:?}")]
    Idle(Duration),
    #[error("no answer to our close within {0:?}")]
    CloseTimeout(Duration),
    #[error("receive")]
    Receive(#[source] tungstenite::Error),
    #[error("read the input")]
    Input(#[source] std::io::Error),
    #[error("write the output")]
    Output(#[source] std::io::Error),
}

/// The WebSocket URL of containerd's streaming `url`: `ws://` for `http://`, with
/// `port=PORT` in the query. containerd takes the ports from the PortForward request and
/// ignores the query, but kubelet's own streaming server reads the ports of a WebSocket
/// request from it alone (`NewV4Options`), so a kubelet-style client always sends it.
pub fn ws_url(url: &str, port: u16) -> Result<String, PortForwardError> {
    let bad = |reason| PortForwardError::Url {
        url: url.to_owned(),
        reason,
    };
    let rest = if let Some(rest) = url.strip_prefix("http://") {
        rest
    } else if url.starts_with("https://") {
        return Err(bad("TLS streaming servers are not supported"));
    } else {
        return Err(bad("not an http:// URL"));
    };
    let mut out = format!("ws://{rest}");
    match rest.split_once('?') {
        None => out.push('?'),
        Some((_, query)) => {
            if query
                .split('&')
                .any(|kv| kv.split('=').next() == Some("port"))
            {
                return Ok(out);
            }
            if !query.is_empty() && !query.ends_with('&') {
                out.push('&');
            }
        }
    }
    out.push_str(&format!("port={port}"));
    Ok(out)
}

/// The upgrade request for `url` (a `ws://` URL), asking for [`PROTOCOL`].
fn request(url: &str) -> Result<Request, tungstenite::Error> {
    let mut req = url.into_client_request()?;
    req.headers_mut()
        .insert("Sec-WebSocket-Protocol", HeaderValue::from_static(PROTOCOL));
    Ok(req)
}

/// Opens the WebSocket to containerd's streaming `url` for `port`, upgraded within `timeout`.
pub async fn connect(
    url: &str,
    port: u16,
    timeout: Duration,
) -> Result<WebSocketStream<MaybeTlsStream<TcpStream>>, PortForwardError> {
    let url = ws_url(url, port)?;
    let req = request(&url).map_err(|source| PortForwardError::Connect {
        url: url.clone(),
        source,
    })?;
    match tokio::time::timeout(timeout, tokio_tungstenite::connect_async(req)).await {
        Ok(Ok((ws, _))) => Ok(ws),
        Ok(Err(source)) => Err(PortForwardError::Connect { url, source }),
        Err(_) => Err(PortForwardError::ConnectTimeout {
            url,
            after: timeout,
        }),
    }
}

/// One data message: the data channel's byte, then `chunk`.
pub fn data_frame(chunk: &[u8]) -> Vec<u8> {
    let mut frame = Vec::with_capacity(chunk.len() + 1);
    frame.push(DATA);
    frame.extend_from_slice(chunk);
    frame
}

/// What one message from the server carries once its channel byte and port prefix are off.
#[derive(Debug, PartialEq, Eq)]
pub enum Payload<'a> {
    Data(&'a [u8]),
    Error(&'a [u8]),
    Nothing,
}

/// Splits the server's messages by channel and takes the port prefix off each channel.
#[derive(Debug)]
pub struct Demux {
    port: u16,
    /// The prefix bytes seen so far, per channel: the protocol promises a byte stream per
    /// channel, not that the prefix comes alone in one message.
    prefix: [[u8; 2]; 2],
    seen: [usize; 2],
}

impl Demux {
    pub fn new(port: u16) -> Self {
        Self {
            port,
            prefix: [[0; 2]; 2],
            seen: [0; 2],
        }
    }

    /// Whether both channels have announced the port.
    pub fn announced(&self) -> bool {
        self.seen == [2, 2]
    }

    pub fn feed<'a>(&mut self, msg: &'a [u8]) -> Result<Payload<'a>, PortForwardError> {
        let Some((&channel, mut rest)) = msg.split_first() else {
            return Ok(Payload::Nothing);
        };
        if channel != DATA && channel != ERROR {
            return Err(PortForwardError::UnknownChannel(channel));
        }
        let ch = usize::from(channel);
        let seen = self.seen[ch];
        if seen < 2 {
            let n = rest.len().min(2 - seen);
            self.prefix[ch][seen..seen + n].copy_from_slice(&rest[..n]);
            self.seen[ch] = seen + n;
            rest = &rest[n..];
            let got = u16::from_le_bytes(self.prefix[ch]);
            if self.seen[ch] == 2 && got != self.port {
                return Err(PortForwardError::WrongPort {
                    channel,
                    got,
                    want: self.port,
                });
            }
        }
        Ok(match (rest.is_empty(), channel) {
            (true, _) => Payload::Nothing,
            (false, DATA) => Payload::Data(rest),
            (false, _) => Payload::Error(rest),
        })
    }
}

/// Bounds of one forward.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Longest time with no message and no input in either direction.
    pub idle: Duration,
    /// Once this much data has arrived, close the stream ourselves.
    pub max_bytes: Option<u64>,
}

/// How a forward ended.
#[derive(Debug)]
pub struct Outcome {
    /// The server's error text, if it sent one (containerd: it could not reach the port).
    pub error: Option<String>,
}

/// Why the receiving side stopped.
#[derive(Debug, PartialEq, Eq)]
enum End {
    Closed,
    Limit,
}

/// The receiving side's state: demultiplexed data goes to `output`, error text is collected.
#[derive(Debug)]
struct Receiver<W> {
    demux: Demux,
    output: W,
    received: u64,
    error: Vec<u8>,
    max_bytes: Option<u64>,
}

impl<W: AsyncWrite + Unpin> Receiver<W> {
    /// Takes one binary message; true once `max_bytes` of data have arrived.
    async fn take(&mut self, msg: &[u8]) -> Result<bool, PortForwardError> {
        match self.demux.feed(msg)? {
            Payload::Data(data) => {
                // Flushed at once: whoever reads our output may wait for this answer before
                // sending more.
                self.output
                    .write_all(data)
                    .await
                    .map_err(PortForwardError::Output)?;
                self.output
                    .flush()
                    .await
                    .map_err(PortForwardError::Output)?;
                self.received += u64::try_from(data.len()).unwrap_or(u64::MAX);
                return Ok(self.max_bytes.is_some_and(|max| self.received >= max));
            }
            Payload::Error(text) => self.error.extend_from_slice(text),
            Payload::Nothing => {}
        }
        Ok(false)
    }

    /// Receives until the server closes the stream or `max_bytes` have arrived.
    async fn run<S>(
        &mut self,
        stream: &mut SplitStream<WebSocketStream<S>>,
        activity: &Cell<Instant>,
    ) -> Result<End, PortForwardError>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        while let Some(msg) = stream.next().await {
            activity.set(Instant::now());
            match msg {
                Ok(Message::Binary(msg)) => {
                    if self.take(&msg).await? {
                        return Ok(End::Limit);
                    }
                }
                // Pings are answered by tungstenite as long as we keep reading; a close frame
                // is followed by the end of the stream; text is not part of the protocol.
                Ok(_) => {}
                // A server that drops the connection without a close frame has closed too.
                Err(tungstenite::Error::Protocol(ProtocolError::ResetWithoutClosingHandshake)) => {
                    break
                }
                Err(e) => return Err(PortForwardError::Receive(e)),
            }
        }
        Ok(End::Closed)
    }

    /// Lets the server answer our close; only its error text still matters.
    async fn drain<S>(&mut self, stream: &mut SplitStream<WebSocketStream<S>>)
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        while let Some(Ok(msg)) = stream.next().await {
            if let Message::Binary(msg) = msg {
                if let Ok(Payload::Error(text)) = self.demux.feed(&msg) {
                    self.error.extend_from_slice(text);
                }
            }
        }
    }
}

/// Sends `input` as data messages of at most [`CHUNK`] bytes, then waits forever: WebSocket
/// cannot half-close, so the end of the input is not the end of the stream. Returns only if
/// reading `input` fails.
async fn send<S, R>(
    sink: &mut SplitSink<WebSocketStream<S>, Message>,
    mut input: R,
    activity: &Cell<Instant>,
) -> PortForwardError
where
    S: AsyncRead + AsyncWrite + Unpin,
    R: AsyncRead + Unpin,
{
    let mut buf = vec![0; CHUNK];
    loop {
        let n = match input.read(&mut buf).await {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) => return PortForwardError::Input(e),
        };
        activity.set(Instant::now());
        if sink
            .send(Message::binary(data_frame(&buf[..n])))
            .await
            .is_err()
        {
            // The connection is closing or broken: the receiving side sees which and says so.
            break;
        }
        activity.set(Instant::now());
    }
    std::future::pending().await
}

/// Returns once `idle` has passed since the last `activity`.
async fn idle_for(activity: &Cell<Instant>, idle: Duration) {
    loop {
        let deadline = activity.get() + idle;
        if Instant::now() >= deadline {
            return;
        }
        tokio::time::sleep_until(deadline).await;
    }
}

/// Forwards `input` to the port announced as `port` on `ws` and the port's data to `output`,
/// reading and writing concurrently (an echo server answers while we still send), until the
/// server closes the stream or `limits.max_bytes` have arrived; `output` is flushed.
pub async fn forward<S, R, W>(
    ws: WebSocketStream<S>,
    port: u16,
    input: R,
    output: W,
    limits: Limits,
) -> Result<Outcome, PortForwardError>
where
    S: AsyncRead + AsyncWrite + Unpin,
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let (mut sink, mut stream) = ws.split();
    let mut rx = Receiver {
        demux: Demux::new(port),
        output,
        received: 0,
        error: Vec::new(),
        max_bytes: limits.max_bytes,
    };
    let activity = Cell::new(Instant::now());
    let end = tokio::select! {
        end = rx.run(&mut stream, &activity) => end,
        e = send(&mut sink, input, &activity) => Err(e),
        () = idle_for(&activity, limits.idle) => Err(PortForwardError::Idle(limits.idle)),
    };
    let end = match end {
        Ok(End::Limit) => {
            // A close we cannot send means the server is already going: the drain then ends
            // at once.
            let closed = async {
                let _ = sink.close().await;
                rx.drain(&mut stream).await;
            };
            tokio::time::timeout(limits.idle, closed)
                .await
                .map_err(|_| PortForwardError::CloseTimeout(limits.idle))
        }
        Ok(End::Closed) if !rx.demux.announced() && rx.error.is_empty() => {
            Err(PortForwardError::Unannounced)
        }
        Ok(End::Closed) => Ok(()),
        Err(e) => Err(e),
    };
    let error = (!rx.error.is_empty()).then(|| String::from_utf8_lossy(&rx.error).into_owned());
    match end {
        // The server's own account of what went wrong comes first: whatever failed after
        // it followed from it.
        Err(e) if error.is_none() => Err(e),
        _ => Ok(Outcome { error }),
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::DuplexStream;
    use tokio::net::TcpListener;
    use tokio_tungstenite::tungstenite::handshake::server::{
        ErrorResponse, Request as ServerRequest, Response as ServerResponse,
    };

    use super::*;

    const PORT: u16 = 8080;
    /// 8080 little-endian.
    const LE: [u8; 2] = [0x90, 0x1f];

    #[test]
    fn the_url_turns_to_ws_and_gets_the_port_in_its_query() {
        let base = "http://127.0.0.1:35431/portforward/AbCdEf";
        assert_eq!(
            ws_url(base, PORT).expect("url"),
            "ws://127.0.0.1:35431/portforward/AbCdEf?port=8080"
        );
        assert_eq!(
            ws_url(&format!("{base}?x=1"), PORT).expect("url"),
            "ws://127.0.0.1:35431/portforward/AbCdEf?x=1&port=8080"
        );
        assert_eq!(
            ws_url(&format!("{base}?port=8080"), PORT).expect("url"),
            "ws://127.0.0.1:35431/portforward/AbCdEf?port=8080"
        );
        assert_eq!(
            ws_url(&format!("{base}?"), PORT).expect("url"),
            "ws://127.0.0.1:35431/portforward/AbCdEf?port=8080"
        );
        assert!(ws_url("https://127.0.0.1:1/portforward/x", PORT).is_err());
        assert!(ws_url("/portforward/x", PORT).is_err());
    }

    #[test]
    fn a_data_frame_is_channel_0_then_the_bytes() {
        assert_eq!(data_frame(b"ab"), [0, b'a', b'b']);
        assert_eq!(data_frame(b""), [0]);
    }

    #[test]
    fn the_port_prefix_is_taken_off_each_channel_once() {
        let mut d = Demux::new(PORT);
        assert_eq!(
            d.feed(&[0, LE[0], LE[1]]).expect("data prefix"),
            Payload::Nothing
        );
        assert!(!d.announced());
        assert_eq!(
            d.feed(&[1, LE[0], LE[1]]).expect("error prefix"),
            Payload::Nothing
        );
        assert!(d.announced());
        // The same bytes are data now.
        assert_eq!(
            d.feed(&[0, LE[0], LE[1]]).expect("data"),
            Payload::Data(&LE)
        );
        assert_eq!(
            d.feed(b"\x01refused").expect("error"),
            Payload::Error(b"refused")
        );
        assert_eq!(d.feed(&[]).expect("empty"), Payload::Nothing);
    }

    #[test]
    fn a_prefix_may_come_split_or_glued_to_data() {
        let mut d = Demux::new(PORT);
        assert_eq!(d.feed(&[0, LE[0]]).expect("half"), Payload::Nothing);
        assert_eq!(
            d.feed(&[0, LE[1], b'h', b'i']).expect("rest and data"),
            Payload::Data(b"hi")
        );
        assert_eq!(
            d.feed(&[1, LE[0], LE[1], b'x']).expect("prefix and error"),
            Payload::Error(b"x")
        );
        assert!(d.announced());
    }

    #[test]
    fn a_wrong_port_or_channel_is_refused() {
        let mut d = Demux::new(PORT);
        assert!(matches!(
            d.feed(&[1, 81, 0]),
            Err(PortForwardError::WrongPort {
                channel: 1,
                got: 81,
                want: PORT
            })
        ));
        assert!(matches!(
            Demux::new(PORT).feed(&[2, LE[0], LE[1]]),
            Err(PortForwardError::UnknownChannel(2))
        ));
    }

    /// containerd's side of the upgrade: checks what kubelet's streaming server needs (the
    /// subprotocol, the port in the query) and agrees to the subprotocol.
    // The signature is tungstenite's server callback's.
    #[allow(clippy::result_large_err)]
    fn upgrade(
        req: &ServerRequest,
        mut resp: ServerResponse,
    ) -> Result<ServerResponse, ErrorResponse> {
        assert_eq!(req.headers()["Sec-WebSocket-Protocol"], PROTOCOL);
        let query = req.uri().query().unwrap_or_default();
        assert!(query.split('&').any(|kv| kv == "port=8080"), "{query}");
        resp.headers_mut()
            .insert("Sec-WebSocket-Protocol", HeaderValue::from_static(PROTOCOL));
        Ok(resp)
    }

    /// containerd's side of a stream: the upgrade, then `PORT` announced on both channels.
    async fn accept<S>(io: S) -> WebSocketStream<S>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let mut ws = tokio_tungstenite::accept_hdr_async(io, upgrade)
            .await
            .expect("accept");
        for channel in [DATA, ERROR] {
            ws.send(Message::binary(vec![channel, LE[0], LE[1]]))
                .await
                .expect("announce");
        }
        ws
    }

    /// Runs `serve` on one end of an in-memory connection while `forward` runs on the other.
    /// Its buffers are small: a client that sent everything before reading would stall
    /// against an echo.
    async fn forward_against<F, Fut, R>(
        serve: F,
        input: R,
        limits: Limits,
    ) -> (Result<Outcome, PortForwardError>, Vec<u8>)
    where
        F: FnOnce(WebSocketStream<DuplexStream>) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()> + Send,
        R: AsyncRead + Unpin,
    {
        let (client, server) = tokio::io::duplex(16 << 10);
        let server = tokio::spawn(async move { serve(accept(server).await).await });
        let url = ws_url("http://streaming.test/portforward/AbCdEf", PORT).expect("url");
        let (ws, _) = tokio_tungstenite::client_async(request(&url).expect("request"), client)
            .await
            .expect("upgrade");
        let mut out = Vec::new();
        let outcome = tokio::time::timeout(
            Duration::from_secs(30),
            forward(ws, PORT, input, &mut out, limits),
        )
        .await
        .expect("forward hung");
        server.await.expect("server");
        (outcome, out)
    }

    /// Reads until the client's close has been answered.
    async fn until_closed<S: AsyncRead + AsyncWrite + Unpin>(mut ws: WebSocketStream<S>) {
        while let Some(Ok(_)) = ws.next().await {}
    }

    const LIMITS: Limits = Limits {
        idle: Duration::from_secs(10),
        max_bytes: None,
    };

    #[tokio::test]
    async fn a_mebibyte_comes_back_from_an_echo_while_it_is_still_being_sent() {
        const TOTAL: usize = 1 << 20;
        // Its period is not a divisor of the chunk size, so a lost or doubled chunk shows.
        let data: Vec<u8> = (0..=250u8).cycle().take(TOTAL).collect();
        let echo = |mut ws: WebSocketStream<DuplexStream>| async move {
            let (mut echoed, mut largest) = (0, 0);
            while echoed < TOTAL {
                let Some(Ok(Message::Binary(msg))) = ws.next().await else {
                    panic!("the client stopped after {echoed} bytes");
                };
                assert_eq!(msg[0], DATA);
                largest = largest.max(msg.len() - 1);
                echoed += msg.len() - 1;
                ws.send(Message::Binary(msg)).await.expect("echo");
            }
            assert_eq!(largest, CHUNK);
            ws.close(None).await.expect("close");
            until_closed(ws).await;
        };
        let (outcome, out) = forward_against(echo, &data[..], LIMITS).await;
        let outcome = outcome.expect("forward");
        assert_eq!(outcome.error, None);
        assert_eq!(out.len(), TOTAL);
        assert!(out == data, "the echo differs from what was sent");
    }

    #[tokio::test]
    async fn the_error_text_is_collected_and_the_servers_close_ends_an_open_input() {
        const TEXT: &str = "failed to connect to localhost:9 inside namespace \"x\", IPv4: \
                            dial tcp4 127.0.0.1:9: connect: connection refused";
        let fail = |mut ws: WebSocketStream<DuplexStream>| async move {
            let (a, b) = TEXT.as_bytes().split_at(10);
            for part in [a, b] {
                let mut msg = vec![ERROR];
                msg.extend_from_slice(part);
                ws.send(Message::binary(msg)).await.expect("error text");
            }
            ws.close(None).await.expect("close");
            until_closed(ws).await;
        };
        // An input that never ends: the end comes from the server.
        let (input, _keep) = tokio::io::duplex(64);
        let (outcome, out) = forward_against(fail, input, LIMITS).await;
        assert_eq!(outcome.expect("forward").error.as_deref(), Some(TEXT));
        assert!(out.is_empty());
    }

    #[tokio::test]
    async fn max_bytes_closes_a_stream_the_server_keeps_open() {
        let talk = |mut ws: WebSocketStream<DuplexStream>| async move {
            for word in [b"one.", b"two.", b"3rd."] {
                ws.send(Message::binary(data_frame(word)))
                    .await
                    .expect("data");
            }
            // Never closes by itself: the client's close ends it.
            loop {
                match ws.next().await {
                    Some(Ok(Message::Close(_))) => break,
                    Some(Ok(_)) => {}
                    other => panic!("no close from the client: {other:?}"),
                }
            }
            until_closed(ws).await;
        };
        let (input, _keep) = tokio::io::duplex(64);
        let limits = Limits {
            max_bytes: Some(8),
            ..LIMITS
        };
        let (outcome, out) = forward_against(talk, input, limits).await;
        assert_eq!(outcome.expect("forward").error, None);
        assert_eq!(out, b"one.two.");
    }

    #[tokio::test]
    async fn silence_fails_after_the_idle_time() {
        let silent = |ws: WebSocketStream<DuplexStream>| until_closed(ws);
        let (input, _keep) = tokio::io::duplex(64);
        let limits = Limits {
            idle: Duration::from_millis(200),
            ..LIMITS
        };
        let (outcome, _) = forward_against(silent, input, limits).await;
        assert!(
            matches!(outcome, Err(PortForwardError::Idle(_))),
            "{outcome:?}"
        );
    }

    #[tokio::test]
    async fn a_close_before_the_announcement_is_an_error() {
        let (client, server) = tokio::io::duplex(1 << 10);
        let server = tokio::spawn(async move {
            let mut ws = tokio_tungstenite::accept_hdr_async(server, upgrade)
                .await
                .expect("accept");
            ws.close(None).await.expect("close");
            until_closed(ws).await;
        });
        let url = ws_url("http://streaming.test/portforward/AbCdEf", PORT).expect("url");
        let (ws, _) = tokio_tungstenite::client_async(request(&url).expect("request"), client)
            .await
            .expect("upgrade");
        let outcome = forward(ws, PORT, &b""[..], Vec::new(), LIMITS).await;
        assert!(
            matches!(outcome, Err(PortForwardError::Unannounced)),
            "{outcome:?}"
        );
        server.await.expect("server");
    }

    #[tokio::test]
    async fn connect_dials_the_streaming_url_over_tcp() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let server = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.expect("accept");
            let mut ws = accept(tcp).await;
            ws.send(Message::binary(data_frame(b"hello")))
                .await
                .expect("data");
            ws.close(None).await.expect("close");
            until_closed(ws).await;
        });
        let url = format!("http://{addr}/portforward/AbCdEf");
        let ws = connect(&url, PORT, Duration::from_secs(10))
            .await
            .expect("connect");
        let mut out = Vec::new();
        let outcome = forward(ws, PORT, &b""[..], &mut out, LIMITS)
            .await
            .expect("forward");
        assert_eq!(outcome.error, None);
        assert_eq!(out, b"hello");
        server.await.expect("server");
    }
}
