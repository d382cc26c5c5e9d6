//! Guest service: details, logs, the kernel's log and the guest's load.

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

    async fn get_kernel_log(
        &self,
        _c: &TtrpcContext,
        r: GetKernelLogRequest,
    ) -> ttrpc::Result<GetKernelLogResponse> {
        let max = usize::try_from(r.max_records).unwrap_or(0);
        let read = crate::kmsg::read_from(r.cursor, max).map_err(|e| {
            ttrpc::Error::RpcStatus(ttrpc::get_status(
                ttrpc::Code::INTERNAL,
                format!("read /dev/kmsg: {e}"),
            ))
        })?;
        Ok(GetKernelLogResponse {
            records: read
                .records
                .into_iter()
                .map(|r| KernelLogRecord {
                    seq: r.seq,
                    timestamp_us: r.usec,
                    level: r.level,
                    message: r.text,
                    ..Default::default()
                })
                .collect(),
            next_cursor: read.next_cursor,
            dropped: read.dropped,
            ..Default::default()
        })
    }

    async fn guest_stats(
        &self,
        _c: &TtrpcContext,
        _r: GuestStatsRequest,
    ) -> ttrpc::Result<GuestStatsResponse> {
        let crate::guest::Load {
            mem: (total, free, available),
            pressure,
        } = crate::guest::load();
        Ok(GuestStatsResponse {
            mem_total_bytes: total,
            mem_free_bytes: free,
            mem_available_bytes: available,
            pressure: pressure
                .into_iter()
                .map(|(resource, some, full)| Pressure {
                    resource: resource.to_owned(),
                    some_total_us: some,
                    full_total_us: full,
                    ..Default::default()
                })
                .collect(),
            rpc_bucket_bounds_seconds: crate::rpc_stats::BUCKET_BOUNDS_SECONDS.to_vec(),
            rpc: self
                .0
                .rpc
                .snapshot()
                .into_iter()
                .map(|(method, l)| RpcLatency {
                    method,
                    count: l.count,
                    errors: l.errors,
                    sum_seconds: l.sum_seconds,
                    bucket_counts: l.buckets.to_vec(),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        })
    }
}
