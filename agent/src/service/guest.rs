//! Guest service: details and logs.

use async_trait::async_trait;
use hull_proto::guest::log_line::Level as WireLevel;
use hull_proto::guest::*;
use hull_proto::guest_ttrpc::Guest;
use tracing::Level;
use ttrpc::r#async::TtrpcContext;

use super::AgentState;

/// Serves the Guest service.
#[derive(Debug, Clone)]
pub(crate) struct GuestService(pub(crate) AgentState);

fn level(l: Level) -> WireLevel {
    match l {
        Level::ERROR => WireLevel::ERROR,
        Level::WARN => WireLevel::WARN,
        Level::INFO => WireLevel::INFO,
        Level::DEBUG => WireLevel::DEBUG,
        Level::TRACE => WireLevel::TRACE,
    }
}

#[async_trait]
impl Guest for GuestService {
    async fn guest_details(
        &self,
        _c: &TtrpcContext,
        _r: GuestDetailsRequest,
    ) -> ttrpc::Result<GuestDetailsResponse> {
        let (mem_block_size_bytes, kernel_release, agent_version, features) =
            crate::guest::details();
        Ok(GuestDetailsResponse {
            mem_block_size_bytes,
            kernel_release,
            agent_version,
            features,
            ..Default::default()
        })
    }

    async fn get_logs(
        &self,
        _c: &TtrpcContext,
        r: GetLogsRequest,
    ) -> ttrpc::Result<GetLogsResponse> {
        let read = self
            .0
            .logs
            .read(r.cursor, usize::try_from(r.max_lines).unwrap_or(0));
        Ok(GetLogsResponse {
            lines: read
                .lines
                .into_iter()
                .map(|l| LogLine {
                    seq: l.seq,
                    timestamp_ns: l.timestamp_ns,
                    level: level(l.level).into(),
                    target: l.target,
                    message: l.message,
                    ..Default::default()
                })
                .collect(),
            next_cursor: read.next_cursor,
            dropped: read.dropped,
            ..Default::default()
        })
    }
}
