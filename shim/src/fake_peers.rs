//! Test stand-ins for the shim's two peers, as real ttrpc servers on Unix sockets: a
//! containerd event service that records what it gets, and a hostile guest agent whose
//! replies a test scripts. Also a capture of the shim's log lines.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use containerd_shim::api::Empty;
use containerd_shim::protos::shim::event::Envelope;
use containerd_shim::protos::shim::events::ForwardRequest;
use containerd_shim::protos::shim::events_ttrpc_async::{create_events, Events as EventsSvc};
use hull_proto::events::{GetOomEventRequest, GetOomEventResponse};
use hull_proto::events_ttrpc::{create_events as create_agent_events, Events as AgentEvents};
use hull_proto::processes::{ReadStreamRequest, ReadStreamResponse};
use hull_proto::processes_ttrpc::{create_processes, Processes};
use ttrpc::asynchronous::{Server, TtrpcContext};

use crate::events::Events;

/// containerd's event service: every envelope it was sent.
#[derive(Debug, Default)]
pub(crate) struct Sink(Mutex<Vec<Envelope>>);

#[async_trait]
impl EventsSvc for Sink {
    async fn forward(&self, _: &TtrpcContext, req: ForwardRequest) -> ttrpc::Result<Empty> {
        self.0
            .lock()
            .unwrap()
            .push(req.envelope.unwrap_or_default());
        Ok(Empty::new())
    }
}

impl Sink {
    pub(crate) fn got(&self) -> Vec<Envelope> {
        self.0.lock().unwrap().clone()
    }
}

fn addr(p: &Path) -> String {
    format!("unix://{}", p.display())
}

/// containerd's event service recording into `sink`, bound at `sock` (not started yet).
pub(crate) fn event_server(sock: &Path, sink: &Arc<Sink>) -> Server {
    Server::new()
        .bind(&addr(sock))
        .unwrap()
        .register_service(create_events(
            Arc::clone(sink) as Arc<dyn EventsSvc + Send + Sync>
        ))
}

/// A fake containerd: its event sink and an `Events` queue connected to it.
pub(crate) async fn containerd(dir: &Path) -> (Server, Arc<Sink>, Events) {
    let sock = dir.join("containerd.sock");
    let sink = Arc::new(Sink::default());
    let mut server = event_server(&sock, &sink);
    server.start().await.unwrap();
    let events = Events::connect(sock.to_str().unwrap(), "ns".into())
        .await
        .unwrap();
    (server, sink, events)
}

/// The agent's replies, in order; once they run out a call waits forever (a long poll
/// with nothing to report).
#[derive(Debug, Default)]
pub(crate) struct Script<T>(Mutex<VecDeque<T>>);

impl<T> Script<T> {
    pub(crate) fn new(replies: impl IntoIterator<Item = T>) -> Self {
        Script(Mutex::new(replies.into_iter().collect()))
    }

    async fn next(&self) -> T {
        let next = self.0.lock().unwrap().pop_front();
        match next {
            Some(r) => r,
            None => std::future::pending().await,
        }
    }
}

/// A hostile agent: `GetOomEvent` and `ReadStdout` answer from their scripts.
#[derive(Debug, Default)]
pub(crate) struct Agent {
    pub(crate) oom: Script<String>,
    pub(crate) stdout: Script<ReadStreamResponse>,
}

#[async_trait]
impl AgentEvents for Agent {
    async fn get_oom_event(
        &self,
        _: &TtrpcContext,
        _: GetOomEventRequest,
    ) -> ttrpc::Result<GetOomEventResponse> {
        Ok(GetOomEventResponse {
            container_id: self.oom.next().await,
            ..Default::default()
        })
    }
}

#[async_trait]
impl Processes for Agent {
    async fn read_stdout(
        &self,
        _: &TtrpcContext,
        _: ReadStreamRequest,
    ) -> ttrpc::Result<ReadStreamResponse> {
        Ok(self.stdout.next().await)
    }
}

/// Serves `agent` in `dir`; returns the server and a client connected to it.
pub(crate) async fn agent(dir: &Path, agent: Agent) -> (Server, ttrpc::asynchronous::Client) {
    let sock: PathBuf = dir.join("agent.sock");
    let agent = Arc::new(agent);
    let mut server = Server::new()
        .bind(&addr(&sock))
        .unwrap()
        .register_service(create_agent_events(
            Arc::clone(&agent) as Arc<dyn AgentEvents + Send + Sync>
        ))
        .register_service(create_processes(agent as Arc<dyn Processes + Send + Sync>));
    server.start().await.unwrap();
    let client = ttrpc::asynchronous::Client::connect(&addr(&sock))
        .await
        .unwrap();
    (server, client)
}

/// Stops a server whose calls may never end.
pub(crate) async fn stop(mut server: Server) {
    let _ = tokio::time::timeout(Duration::from_secs(1), server.shutdown()).await;
}

/// The shim's log lines while the guard lives, on this thread (a current-thread runtime
/// runs every task of the test here).
#[derive(Debug, Clone, Default)]
pub(crate) struct Logs(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Logs {
    pub(crate) fn capture(&self) -> tracing::subscriber::DefaultGuard {
        let logs = self.clone();
        let sub = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::DEBUG)
            .with_ansi(false)
            .with_writer(move || logs.clone())
            .finish();
        tracing::subscriber::set_default(sub)
    }

    pub(crate) fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}
