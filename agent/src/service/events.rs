//! Events service: OOM long-poll.

use async_trait::async_trait;
use hull_proto::events::*;
use hull_proto::events_ttrpc::Events;
use ttrpc::r#async::TtrpcContext;

use super::{handle, AgentState};
use crate::engine::EngineError;

/// Serves the Events service.
#[derive(Debug, Clone)]
pub(crate) struct EventsService(pub(crate) AgentState);

#[async_trait]
impl Events for EventsService {
    async fn get_oom_event(
        &self,
        _c: &TtrpcContext,
        _r: GetOomEventRequest,
    ) -> ttrpc::Result<GetOomEventResponse> {
        handle("GetOomEvent", async {
            let id = self
                .0
                .engine
                .oom_events()
                .next()
                .await
                .ok_or_else(|| EngineError::Internal("OOM event queue closed".into()))?;
            Ok(GetOomEventResponse {
                container_id: id,
                ..Default::default()
            })
        })
        .await
    }
}
