//! Task events to containerd, in the order they were sent: one queue feeding one task that
//! forwards each envelope to containerd's ttrpc `Events` service. Ordering matters:
//! `/tasks/exit` must follow `/tasks/start`, and `ctr run --rm` deletes on exit.
//!
//! Not the crate's `RemotePublisher`: it types each event through protobuf reflection (see
//! `typeurl`), and after a failure it requeues the event behind later ones, so a containerd
//! restart could deliver `/tasks/exit` before `/tasks/start`. Here a failed event is retried in
//! place (reconnecting when containerd closed the connection) and later ones wait for it.
//!
//! The queue is bounded ([`QUEUE`]): events the guest can cause (OOM kills, exits) must not
//! grow the shim while containerd is slow or away. The OOM poller paces itself far below it;
//! an event that finds the queue full is dropped and counted, with a log line at each power
//! of two.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use containerd_shim::event::Event;
use containerd_shim::protos::protobuf::well_known_types::timestamp::Timestamp;
use containerd_shim::protos::protobuf::Message;
use containerd_shim::protos::shim::event::Envelope;
use containerd_shim::protos::shim::events::ForwardRequest;
use containerd_shim::protos::shim::events_ttrpc_async::EventsClient;
use tokio::sync::mpsc;

use crate::typeurl;

/// Per-attempt deadline, as runc's shim: a stuck containerd must not hold the queue forever.
const PUBLISH_TIMEOUT_NS: i64 = 5_000_000_000;
/// Attempts per event; attempt n waits n seconds before the next, so an event survives a
/// containerd restart of up to ~10 s (what the crate's publisher allowed too).
const ATTEMPTS: u32 = 5;
/// Events waiting for containerd. A pod's lifecycle makes a handful per container; this many
/// queued means containerd has not answered for a while.
const QUEUE: usize = 1024;

#[derive(Debug, thiserror::Error)]
#[error("connect to containerd's event service at {address}: {source}")]
pub struct EventsError {
    address: String,
    source: ttrpc::Error,
}

#[derive(Debug, Clone)]
pub(crate) struct Events {
    tx: mpsc::Sender<Envelope>,
    namespace: String,
    dropped: Arc<AtomicU64>,
}

impl Events {
    /// Connects to containerd's ttrpc `address` (`TTRPC_ADDRESS`) and starts the forwarding
    /// task; events go to `namespace`.
    pub(crate) async fn connect(address: &str, namespace: String) -> Result<Self, EventsError> {
        let client = dial(address).await?;
        let (tx, rx) = mpsc::channel(QUEUE);
        tokio::spawn(forward_all(address.to_owned(), client, rx));
        Ok(Events {
            tx,
            namespace,
            dropped: Arc::default(),
        })
    }

    /// The containerd namespace the pod's tasks live in.
    pub(crate) fn namespace(&self) -> &str {
        &self.namespace
    }

    /// Queues `ev` (a message of containerd's `containerd.events` package).
    pub(crate) fn send<E: Event + Message>(&self, ev: E) {
        let topic = ev.topic();
        tracing::debug!(%topic, "event");
        let event = match typeurl::pack(typeurl::EVENTS, &ev) {
            Ok(any) => any,
            Err(e) => {
                tracing::error!(%topic, "event not sent: encode: {e}");
                return;
            }
        };
        let envelope = Envelope {
            timestamp: Some(Timestamp::now()).into(),
            namespace: self.namespace.clone(),
            topic,
            event: Some(event).into(),
            ..Default::default()
        };
        match self.tx.try_send(envelope) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(e)) => {
                let n = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
                if n.is_power_of_two() {
                    tracing::error!(topic = %e.topic, dropped = n, "event queue full ({QUEUE}): event dropped");
                }
            }
            // The forwarding task has ended: the runtime is shutting down.
            Err(mpsc::error::TrySendError::Closed(_)) => {}
        }
    }

    /// Events dropped because the queue was full.
    #[cfg(test)]
    pub(crate) fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

async fn dial(address: &str) -> Result<EventsClient, EventsError> {
    // ttrpc wants the scheme; containerd's TTRPC_ADDRESS is a bare path.
    let path = crate::address::socket_path(address);
    ttrpc::asynchronous::Client::connect(&format!("unix://{path}"))
        .await
        .map(EventsClient::new)
        .map_err(|source| EventsError {
            address: address.to_owned(),
            source,
        })
}

async fn forward_all(address: String, mut client: EventsClient, mut rx: mpsc::Receiver<Envelope>) {
    while let Some(envelope) = rx.recv().await {
        let topic = envelope.topic.clone();
        let req = ForwardRequest {
            envelope: Some(envelope).into(),
            ..Default::default()
        };
        for attempt in 1..=ATTEMPTS {
            let ctx = ttrpc::context::with_timeout(PUBLISH_TIMEOUT_NS);
            let Err(e) = client.forward(ctx, &req).await else {
                break;
            };
            if attempt == ATTEMPTS {
                tracing::error!(%topic, "event dropped after {ATTEMPTS} attempts: {e}");
                break;
            }
            tracing::warn!(%topic, attempt, "publish: {e}; retrying");
            tokio::time::sleep(Duration::from_secs(attempt.into())).await;
            // Anything but an answer from containerd: the connection is gone or broken.
            if !matches!(e, ttrpc::Error::RpcStatus(_)) {
                match dial(&address).await {
                    Ok(c) => client = c,
                    Err(e) => tracing::warn!(%topic, "{e}"),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use async_trait::async_trait;
    use containerd_shim::api::Empty;
    use containerd_shim::protos::events::task::{TaskExit, TaskStart};
    use containerd_shim::protos::shim::events_ttrpc_async::{create_events, Events as EventsSvc};
    use ttrpc::asynchronous::{Server, TtrpcContext};

    use super::*;
    use crate::fake_peers::{event_server as serve, Sink};

    async fn wait_for(sink: &Sink, n: usize) -> Vec<Envelope> {
        for _ in 0..500 {
            let got = sink.got();
            if got.len() >= n {
                return got;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("fewer than {n} events arrived");
    }

    /// Events arrive in order, typed and enveloped as containerd decodes them, and the queue
    /// survives the event service going away and coming back on the same address (a
    /// containerd restart).
    #[tokio::test(flavor = "current_thread")]
    async fn in_order_typed_and_across_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("ttrpc.sock");
        let sink = Arc::new(Sink::default());
        let mut server = serve(&sock, &sink);
        server.start().await.unwrap();
        let events = Events::connect(sock.to_str().unwrap(), "ns1".into())
            .await
            .unwrap();
        events.send(TaskStart {
            container_id: "c".into(),
            pid: 7,
            ..Default::default()
        });
        events.send(TaskExit {
            container_id: "c".into(),
            exit_status: 3,
            ..Default::default()
        });
        let got = wait_for(&sink, 2).await;
        assert_eq!(got[0].topic, "/tasks/start");
        assert_eq!(got[1].topic, "/tasks/exit");
        assert_eq!(got[1].namespace, "ns1");
        assert_eq!(got[1].event.type_url, "containerd.events.TaskExit");
        let exit = TaskExit::parse_from_bytes(&got[1].event.value).unwrap();
        assert_eq!(exit.exit_status, 3);
        assert!(got[1].timestamp.seconds > 0);

        server.shutdown().await.unwrap();
        drop(server);
        let _ = std::fs::remove_file(&sock);
        events.send(TaskExit {
            container_id: "after-restart".into(),
            ..Default::default()
        });
        tokio::time::sleep(Duration::from_millis(300)).await;
        let mut server = serve(&sock, &sink);
        server.start().await.unwrap();
        let got = wait_for(&sink, 3).await;
        let exit = TaskExit::parse_from_bytes(&got[2].event.value).unwrap();
        assert_eq!(exit.container_id, "after-restart");
        server.shutdown().await.unwrap();
    }

    /// A containerd that never answers: the queue holds [`QUEUE`] events and drops the rest,
    /// counted, instead of growing with whatever the guest makes the shim send.
    #[tokio::test(flavor = "current_thread")]
    async fn a_stuck_containerd_bounds_the_queue() {
        struct Stuck;
        #[async_trait]
        impl EventsSvc for Stuck {
            async fn forward(&self, _: &TtrpcContext, _: ForwardRequest) -> ttrpc::Result<Empty> {
                std::future::pending().await
            }
        }
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("ttrpc.sock");
        let mut server = Server::new()
            .bind(&format!("unix://{}", sock.display()))
            .unwrap()
            .register_service(create_events(Arc::new(Stuck)));
        server.start().await.unwrap();
        let events = Events::connect(sock.to_str().unwrap(), "ns".into())
            .await
            .unwrap();
        // The forwarder has not run yet on this one thread: the queue alone takes the load.
        for i in 0..3 * QUEUE {
            events.send(TaskExit {
                container_id: format!("c{i}"),
                ..Default::default()
            });
        }
        assert_eq!(events.dropped(), 2 * QUEUE as u64);
        assert_eq!(events.tx.capacity(), 0);
        // Its one request never ends; the server's shutdown may wait for it.
        let _ = tokio::time::timeout(Duration::from_secs(1), server.shutdown()).await;
    }
}
