//! Guest service: details, logs, the kernel's log, the guest's load, and hot-plug (CPUs and
//! disks, `crate::hotplug`), which host mode refuses: there it would change the host.

use async_trait::async_trait;
use hull_proto::guest::log_line::Level as WireLevel;
use hull_proto::guest::*;
use hull_proto::guest_ttrpc::Guest;
use tracing::Level;
use ttrpc::r#async::TtrpcContext;

use super::{handle, AgentState};
use crate::engine::error::chain;
use crate::engine::EngineError;
use crate::hotplug::cpus::{set_cpus, CpuError};
use crate::hotplug::disks::{attach_disk, detach_disk, Detached, DiskError, ATTACH_WAIT};
use crate::hotplug::{Roots, Sysfs};

/// Serves the Guest service.
#[derive(Debug, Clone)]
pub(crate) struct GuestService(pub(crate) AgentState);

impl From<CpuError> for EngineError {
    fn from(e: CpuError) -> EngineError {
        let msg = chain(&e);
        match e {
            CpuError::NoneOnline | CpuError::NotPresent { .. } => EngineError::InvalidArgument(msg),
            CpuError::NoSwitch { .. } | CpuError::Write { .. } => {
                EngineError::FailedPrecondition(msg)
            }
            CpuError::Read { .. } | CpuError::Malformed { .. } => EngineError::Internal(msg),
        }
    }
}

impl From<DiskError> for EngineError {
    fn from(e: DiskError) -> EngineError {
        let msg = chain(&e);
        match e {
            DiskError::NoDevice { .. } | DiskError::NotInSysfs { .. } => EngineError::NotFound(msg),
            DiskError::NotVirtioMmio { .. } | DiskError::NotABlockDevice { .. } => {
                EngineError::InvalidArgument(msg)
            }
            DiskError::OtherDriver { .. }
            | DiskError::Bind { .. }
            | DiskError::NoDisk { .. }
            | DiskError::Mounted { .. }
            | DiskError::Unbind { .. } => EngineError::FailedPrecondition(msg),
            DiskError::Read { .. } | DiskError::Malformed { .. } | DiskError::Node { .. } => {
                EngineError::Internal(msg)
            }
        }
    }
}

impl GuestService {
    /// Hot-plug drives the kernel the agent runs on: in host mode, the host's.
    fn guest_only(&self) -> crate::engine::Result<()> {
        if self.0.engine.config().host_mode {
            return Err(EngineError::FailedPrecondition(
                "not in a guest: host mode never changes this host's CPUs or devices".into(),
            ));
        }
        Ok(())
    }
}

/// Runs hot-plug work on the blocking pool: it waits on the kernel (a CPU coming up, a probe).
async fn blocking<T, E>(
    work: impl FnOnce() -> Result<T, E> + Send + 'static,
) -> crate::engine::Result<T>
where
    T: Send + 'static,
    E: Into<EngineError> + Send + 'static,
{
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| EngineError::Internal(format!("hot-plug task: {e}")))?
        .map_err(Into::into)
}

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

    async fn set_cpus(
        &self,
        _c: &TtrpcContext,
        r: SetCpusRequest,
    ) -> ttrpc::Result<SetCpusResponse> {
        handle("SetCpus", async {
            self.guest_only()?;
            let wanted = r.online;
            tracing::info!(online = wanted, "hot-plug: setting the online CPUs");
            let now = blocking(move || set_cpus(&Roots::guest(), &Sysfs, wanted)).await?;
            tracing::info!(
                online = now.online,
                present = now.present,
                "hot-plug: CPUs set"
            );
            Ok(SetCpusResponse {
                online: now.online,
                present: now.present,
                ..Default::default()
            })
        })
        .await
    }

    async fn attach_disk(
        &self,
        _c: &TtrpcContext,
        r: AttachDiskRequest,
    ) -> ttrpc::Result<AttachDiskResponse> {
        handle("AttachDisk", async {
            self.guest_only()?;
            let base = r.mmio_base;
            tracing::info!("hot-plug: attaching the disk at MMIO base {base:#x}");
            let disk =
                blocking(move || attach_disk(&Roots::guest(), &Sysfs, base, ATTACH_WAIT)).await?;
            tracing::info!(
                "hot-plug: disk {} ({}:{}) attached at MMIO base {base:#x}",
                disk.node.display(),
                disk.major,
                disk.minor
            );
            Ok(AttachDiskResponse {
                device: disk.node.to_string_lossy().into_owned(),
                major: disk.major,
                minor: disk.minor,
                ..Default::default()
            })
        })
        .await
    }

    async fn detach_disk(
        &self,
        _c: &TtrpcContext,
        r: DetachDiskRequest,
    ) -> ttrpc::Result<DetachDiskResponse> {
        handle("DetachDisk", async {
            self.guest_only()?;
            let base = r.mmio_base;
            match blocking(move || detach_disk(&Roots::guest(), &Sysfs, base)).await? {
                Detached::Unbound(slot) => {
                    tracing::info!("hot-plug: {slot} at MMIO base {base:#x} unbound");
                }
                Detached::NotBound(slot) => {
                    tracing::info!("hot-plug: {slot} at MMIO base {base:#x} was not bound");
                }
            }
            Ok(DetachDiskResponse::default())
        })
        .await
    }
}
