//! Task events to containerd, in the order they were sent: one queue feeding one task that
//! hands each event to the crate's `RemotePublisher` (which reconnects after a containerd
//! restart). Ordering matters: `/tasks/exit` must follow `/tasks/start`, and `ctr run --rm`
//! deletes on exit.

use containerd_shim::event::Event;
use containerd_shim::publisher::RemotePublisher;
use protobuf::MessageDyn;
use tokio::sync::mpsc;

/// Per-event deadline, as runc-shim: a stuck containerd must not pile up forever.
const PUBLISH_TIMEOUT_NS: i64 = 5_000_000_000;

#[derive(Debug, Clone)]
pub struct Events {
    tx: mpsc::UnboundedSender<(String, Box<dyn MessageDyn>)>,
    namespace: String,
}

impl Events {
    /// Starts the forwarding task; events go to `namespace` through `publisher`.
    pub fn start(publisher: RemotePublisher, namespace: String) -> Self {
        let (tx, mut rx) = mpsc::unbounded_channel::<(String, Box<dyn MessageDyn>)>();
        let ns = namespace.clone();
        tokio::spawn(async move {
            while let Some((topic, ev)) = rx.recv().await {
                let ctx = ttrpc::context::with_timeout(PUBLISH_TIMEOUT_NS);
                if let Err(e) = publisher.publish(ctx, &topic, &ns, ev).await {
                    tracing::error!(%topic, "publish: {e}");
                }
            }
        });
        Events { tx, namespace }
    }

    /// A sender whose events go nowhere, for tests of the task logic.
    pub fn discard() -> Self {
        let (tx, _) = mpsc::unbounded_channel();
        Events {
            tx,
            namespace: String::new(),
        }
    }

    /// The containerd namespace the pod's tasks live in.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    pub fn send<E: Event + MessageDyn + 'static>(&self, ev: E) {
        let topic = ev.topic();
        tracing::debug!(%topic, "event");
        let _ = self.tx.send((topic, Box::new(ev)));
    }
}
