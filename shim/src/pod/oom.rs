//! OOM kills in the guest become containerd's `/tasks/oom`: one long-poll of the agent's
//! `GetOomEvent` at a time, for the whole pod, as long as the pod lives.

use std::time::Duration;

use containerd_shim::protos::events::task::TaskOOM;
use hull_proto::events::GetOomEventRequest;
use hull_proto::events_ttrpc::EventsClient;

use crate::events::Events;

/// Pause after a failed poll, so a broken agent connection is not spun on.
const RETRY: Duration = Duration::from_secs(1);

/// Starts polling `agent`; the pod aborts the task at Shutdown.
pub(crate) fn spawn(
    agent: ttrpc::asynchronous::Client,
    events: Events,
) -> tokio::task::JoinHandle<()> {
    let client = EventsClient::new(agent);
    tokio::spawn(async move {
        loop {
            let req = GetOomEventRequest::default();
            match client
                .get_oom_event(ttrpc::context::Context::default(), &req)
                .await
            {
                Ok(r) => {
                    tracing::info!(id = %r.container_id, "OOM kill");
                    events.send(TaskOOM {
                        container_id: r.container_id,
                        ..Default::default()
                    });
                }
                Err(e) => {
                    tracing::debug!("OOM event poll: {e}");
                    tokio::time::sleep(RETRY).await;
                }
            }
        }
    })
}
