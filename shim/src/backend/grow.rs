//! Growing a running pod's VM (issue 20; DESIGN §2 shim/: sizing). A pod boots with the
//! sandbox's size and a reserve ([`sizing::reserve`]): vCPUs its MP table declares but
//! hull-vmm does not run, and a virtio-mem region. When a container is added with limits, or
//! an update raises them, beyond what the VM has, the VM grows first:
//!
//! - vCPUs: hull-vmm starts the next vCPUs' threads (`PUT /hotplug/vcpus`), then the agent
//!   brings them online in the guest (`Guest.SetCpus`);
//! - memory: hull-vmm asks the guest's virtio-mem driver for more (`PUT /hotplug/memory`, in
//!   128 MiB blocks); the shim waits until the guest holds it and its kernel counts it
//!   (`Guest.GuestStats` MemTotal), so the container's limit is backed when it starts.
//!
//! The VM never outgrows its reserve or the pod's host cgroup (its memory plus
//! [`sizing::HOST_RESERVE_MIB`]), which the kubelet raises before an in-place resize reaches
//! the runtime: limits beyond them get what fits, with a warning, as a runc container's limit
//! above its pod's is bounded by the pod's. Growth is one way: a VM keeps what it was given
//! until the pod ends.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use hull_proto::guest::{GuestStatsRequest, SetCpusRequest};
use hull_proto::guest_ttrpc::GuestClient;
use hull_proto::vmm_api;
use tokio::sync::Mutex;

use hull_contract::HOTPLUG_BLOCK_MIB;

use crate::sizing::{self, Reserve, VmSize};

const MIB: u64 = 1 << 20;
/// One API request; hull-vmm answers at once (the guest's part is waited for separately).
const API_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the guest may take to plug and online memory: a fixed part and one per GiB
/// (the lab's emulated guest plugs 512 MiB in about 1 s).
const MEMORY_WAIT_BASE: Duration = Duration::from_secs(10);
const MEMORY_WAIT_PER_GIB: Duration = Duration::from_secs(5);
const POLL: Duration = Duration::from_millis(20);
/// Onlining a vCPU makes the guest wait up to 10 s for it (a vCPU the host does not run).
const SET_CPUS_TIMEOUT_NS: i64 = 30_000_000_000;

#[derive(Debug, thiserror::Error)]
pub(crate) enum GrowError {
    #[error(transparent)]
    Api(#[from] vmm_api::VmmApiError),
    #[error("the guest agent: {0}")]
    Agent(#[from] ttrpc::Error),
    #[error("the guest brought {online} CPUs online, not {want}")]
    CpusOffline { online: u32, want: u8 },
    #[error("the guest did not take {want_mib} MiB more memory within {secs} s (plugged {plugged_mib} MiB)")]
    MemoryTimeout {
        want_mib: u64,
        plugged_mib: u64,
        secs: u64,
    },
    #[error("hull-vmm's answer to GET /hotplug: {0}")]
    Status(String),
}

/// What the VM has now.
#[derive(Debug, Clone, Copy)]
struct Now {
    vcpus: u8,
    /// MiB of the virtio-mem region the guest holds (its last growth completed).
    plugged_mib: u64,
    /// The guest's MemTotal with nothing plugged, taken before the first growth: what a
    /// growth waits for is this plus the plugged size, so a retry after a timed-out one
    /// (whose memory may have arrived since) waits for the right total.
    base_total: Option<u64>,
}

/// A running VM's growth: its boot size, its reserve and what it has been given.
#[derive(Debug)]
pub(crate) struct Growth {
    api: PathBuf,
    boot: VmSize,
    reserve: Reserve,
    /// The pod's host cgroup, whose limit the VM must fit.
    cgroup: Option<PathBuf>,
    /// Held for a whole growth: two containers created at once grow one after the other.
    now: Mutex<Now>,
}

impl Growth {
    pub(crate) fn new(
        api: PathBuf,
        boot: VmSize,
        reserve: Reserve,
        cgroup: Option<PathBuf>,
    ) -> Self {
        Growth {
            api,
            boot,
            reserve,
            cgroup,
            now: Mutex::new(Now {
                vcpus: boot.vcpus,
                plugged_mib: 0,
                base_total: None,
            }),
        }
    }

    /// Grows the VM to at least `want` (never shrinks it), as far as the reserve and the
    /// pod's host cgroup allow (what bounds it is logged as a warning): a pod asking for more
    /// gets what fits, as a pod asking for more than hull's maximum at boot does.
    pub(crate) async fn grow(
        &self,
        agent: &ttrpc::asynchronous::Client,
        want: VmSize,
    ) -> Result<(), GrowError> {
        let mut now = self.now.lock().await;
        let guest = GuestClient::new(agent.clone());
        let vcpus = want.vcpus.min(self.reserve.max_vcpus);
        if vcpus > now.vcpus {
            let t = Instant::now();
            self.put("/hotplug/vcpus", &format!(r#"{{"count":{vcpus}}}"#))
                .await?;
            let r = guest
                .set_cpus(
                    ttrpc::context::with_timeout(SET_CPUS_TIMEOUT_NS),
                    &SetCpusRequest {
                        online: u32::from(vcpus),
                        ..Default::default()
                    },
                )
                .await?;
            if r.online != u32::from(vcpus) {
                return Err(GrowError::CpusOffline {
                    online: r.online,
                    want: vcpus,
                });
            }
            tracing::info!(from = now.vcpus, to = vcpus, elapsed = ?t.elapsed(), "vCPUs added");
            now.vcpus = vcpus;
        }
        if want.vcpus > vcpus {
            tracing::warn!(
                want = want.vcpus,
                max = self.reserve.max_vcpus,
                "the containers' CPU limits need more vCPUs than the VM may have"
            );
        }
        let have = u64::from(self.boot.memory_mib) + now.plugged_mib;
        let want_mib = u64::from(want.memory_mib);
        let plugged = if want_mib > have {
            self.memory_for(want_mib)
        } else {
            now.plugged_mib
        };
        if plugged > now.plugged_mib {
            let t = Instant::now();
            self.plug(&guest, &mut now, plugged).await?;
            tracing::info!(
                from_mib = have,
                to_mib = u64::from(self.boot.memory_mib) + plugged,
                elapsed = ?t.elapsed(),
                "guest memory added"
            );
            now.plugged_mib = plugged;
        }
        Ok(())
    }

    /// The MiB of the region to plug for `want_mib` of guest memory: whole blocks, within
    /// the reserve and the pod's host cgroup (read now: the kubelet raises it before an
    /// in-place resize reaches the runtime).
    fn memory_for(&self, want_mib: u64) -> u64 {
        let limit_mib = super::cgroup::pod_memory(self.cgroup.as_deref())
            .in_force
            .map(|b| b / MIB);
        let (plugged, bound) = plug_within(
            want_mib,
            u64::from(self.boot.memory_mib),
            u64::from(self.reserve.hotplug_mib),
            limit_mib,
        );
        if let Some(bound) = bound {
            // As a runc container's limit above its pod's: the pod's own bound wins.
            tracing::warn!(
                want_mib,
                has_mib = u64::from(self.boot.memory_mib) + plugged,
                "the containers' memory limits need more guest memory than {bound} allows"
            );
        }
        plugged
    }

    /// Raises the plugged part of the region to `to` MiB and waits until the guest's kernel
    /// counts it.
    async fn plug(&self, guest: &GuestClient, now: &mut Now, to: u64) -> Result<(), GrowError> {
        let total = || async {
            guest
                .guest_stats(
                    ttrpc::context::with_timeout(5_000_000_000),
                    &GuestStatsRequest::default(),
                )
                .await
                .map(|s| s.mem_total_bytes)
        };
        let base = match now.base_total {
            Some(b) => b,
            None => {
                let b = total().await?.saturating_sub(now.plugged_mib * MIB);
                *now.base_total.insert(b)
            }
        };
        self.put("/hotplug/memory", &format!(r#"{{"size_mib":{to}}}"#))
            .await?;
        let wait = MEMORY_WAIT_BASE
            + MEMORY_WAIT_PER_GIB * u32::try_from(to.div_ceil(1024)).unwrap_or(u32::MAX);
        let deadline = Instant::now() + wait;
        loop {
            if total().await? >= base + to * MIB {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(GrowError::MemoryTimeout {
                    want_mib: to - now.plugged_mib,
                    plugged_mib: self.plugged_bytes().await? / MIB,
                    secs: wait.as_secs(),
                });
            }
            tokio::time::sleep(POLL).await;
        }
    }

    async fn plugged_bytes(&self) -> Result<u64, GrowError> {
        let r = vmm_api::request(&self.api, "GET", "/hotplug", "", API_TIMEOUT)
            .await?
            .ok("GET /hotplug")?;
        let v: serde_json::Value =
            serde_json::from_str(&r.body).map_err(|e| GrowError::Status(e.to_string()))?;
        v.pointer("/memory/plugged_bytes")
            .and_then(serde_json::Value::as_u64)
            .ok_or_else(|| GrowError::Status(r.body.clone()))
    }

    async fn put(&self, path: &str, body: &str) -> Result<(), GrowError> {
        vmm_api::request(&self.api, "PUT", path, body, API_TIMEOUT)
            .await?
            .ok(&format!("PUT {path}"))?;
        Ok(())
    }
}

/// What bounded a growth.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Bound {
    /// `[vm] max_memory_mib`: the virtio-mem region.
    Reserve,
    /// The pod's host cgroup.
    Cgroup,
}

impl std::fmt::Display for Bound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Bound::Reserve => "the VM's reserve ([vm] max_memory_mib)",
            Bound::Cgroup => "the pod's host cgroup",
        })
    }
}

/// MiB of the region to plug for `want_mib` of guest memory in a VM booted with `boot_mib`:
/// whole blocks, at most the `region_mib` and what a host cgroup limit of `limit_mib` leaves
/// beside [`sizing::HOST_RESERVE_MIB`]; and what bounded it, if anything did.
fn plug_within(
    want_mib: u64,
    boot_mib: u64,
    region_mib: u64,
    limit_mib: Option<u64>,
) -> (u64, Option<Bound>) {
    let block = u64::from(HOTPLUG_BLOCK_MIB);
    let need = want_mib.saturating_sub(boot_mib).div_ceil(block) * block;
    let room =
        limit_mib.map(|l| l.saturating_sub(boot_mib + sizing::HOST_RESERVE_MIB) / block * block);
    let mut out = (need, None);
    if out.0 > region_mib {
        out = (region_mib, Some(Bound::Reserve));
    }
    if let Some(room) = room.filter(|r| out.0 > *r) {
        out = (room, Some(Bound::Cgroup));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn growth_is_whole_blocks_within_the_reserve_and_the_pod_cgroup() {
        // 512 MiB + 64 overhead in a VM booted at 192: 384 MiB, three blocks.
        assert_eq!(plug_within(576, 192, 4096, None), (384, None));
        assert_eq!(plug_within(577, 192, 4096, None), (512, None), "rounded up");
        assert_eq!(
            plug_within(100, 192, 4096, None),
            (0, None),
            "nothing to add"
        );
        assert_eq!(
            plug_within(8192, 192, 1024, None),
            (1024, Some(Bound::Reserve))
        );
        // A pod cgroup of 600 MiB leaves 600 - 192 - 16 = 392: three blocks.
        assert_eq!(
            plug_within(1024, 192, 4096, Some(600)),
            (384, Some(Bound::Cgroup))
        );
        assert_eq!(plug_within(576, 192, 4096, Some(1024)), (384, None));
        // A cgroup smaller than the VM already is: nothing more.
        assert_eq!(
            plug_within(576, 192, 4096, Some(100)),
            (0, Some(Bound::Cgroup))
        );
    }
}
