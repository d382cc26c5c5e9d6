//! The VMM API (DESIGN §1): requests on a Unix socket become one typed [`VmmAction`]; a thin
//! handler validates and runs it against the [`Controller`], which owns the (maybe not yet
//! booted) VM. The wire format is a minimal HTTP/1.1 subset, see `vmm/API.md`.

pub(crate) mod http;
pub mod server;

use serde::{Deserialize, Serialize};

use crate::builder::{self, BuildError};
use crate::config::{LimitConfig, VmConfig};
use crate::devices::virtio::{RateLimits, TYPE_BLOCK, TYPE_NET};
use crate::exit::ExitReason;
use crate::hostcheck::HostKvm;
use crate::hotplug::{HotplugError, HotplugStatus};
use crate::metrics::MetricsReport;
use crate::vmm::Vmm;
use crate::vstate::vcpu::VcpuState;

/// Everything the API can ask.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VmmAction {
    /// Set the VM configuration (before boot only).
    Configure(Box<VmConfig>),
    /// Build and start the configured VM.
    Boot,
    Pause,
    Resume,
    /// Stop the VM and exit the process.
    Shutdown,
    GetMetrics,
    /// The metrics in Prometheus' text format.
    GetMetricsPrometheus,
    GetState,
    /// New rate limits for the `index`th NIC or disk of the configuration.
    SetRateLimits {
        index: usize,
        limits: RateLimits,
    },
    /// Run this many vCPUs (up to the boot's `hotplug.max_vcpus`).
    SetVcpus(usize),
    /// Ask the guest to hold this many MiB of the virtio-mem region plugged.
    SetHotplugMemory(u64),
    /// What the running VM has and may grow to.
    GetHotplug,
    /// Put the disk image passed with the request in disk slot `index`.
    AttachDisk {
        index: usize,
        read_only: bool,
        file: Option<PassedFile>,
    },
    /// Empty disk slot `index`.
    DetachDisk(usize),
}

/// A file whose descriptor came with a request (`SCM_RIGHTS`): a disk image the caller
/// opened, since hull-vmm opens no path once the VM runs. Equal only to itself.
#[derive(Debug, Clone)]
pub struct PassedFile(pub std::sync::Arc<std::fs::File>);

impl PartialEq for PassedFile {
    fn eq(&self, other: &Self) -> bool {
        std::sync::Arc::ptr_eq(&self.0, &other.0)
    }
}
impl Eq for PassedFile {}

/// Where the VM is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum VmState {
    NotConfigured,
    Configured,
    Running,
    Paused,
}

impl std::fmt::Display for VmState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            VmState::NotConfigured => "not_configured",
            VmState::Configured => "configured",
            VmState::Running => "running",
            VmState::Paused => "paused",
        })
    }
}

/// `GET /vm`'s reply.
#[derive(Debug, Serialize)]
pub struct VmInfo {
    pub state: VmState,
    pub config: Option<VmConfig>,
    /// Each vCPU's state, once booted.
    pub vcpus: Option<Vec<VcpuState>>,
    /// Granted vCPUs and hot-plug memory, once booted.
    pub hotplug: Option<HotplugStatus>,
}

/// What an action answers: nothing (204), or a JSON body (200).
#[derive(Debug)]
pub enum Reply {
    Empty,
    Vm(Box<VmInfo>),
    Metrics(MetricsReport),
    /// `text/plain` Prometheus exposition.
    Prometheus(String),
    Hotplug(HotplugStatus),
    /// A disk went into a slot whose MMIO window starts here.
    DiskAttached {
        mmio_base: u64,
    },
}

impl Reply {
    /// The JSON body, if any.
    pub(crate) fn body(&self) -> Option<String> {
        match self {
            Reply::Empty => None,
            Reply::Vm(v) => serde_json::to_string(v).ok(),
            Reply::Metrics(m) => Some(m.to_string()),
            Reply::Prometheus(t) => Some(t.clone()),
            Reply::Hotplug(h) => serde_json::to_string(h).ok(),
            Reply::DiskAttached { mmio_base } => Some(format!(r#"{{"mmio_base":{mmio_base}}}"#)),
        }
    }

    pub(crate) fn content_type(&self) -> &'static str {
        match self {
            Reply::Prometheus(_) => "text/plain; version=0.0.4",
            _ => "application/json",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("bad request: {0}")]
    BadRequest(String),
    #[error("not found: {0}")]
    NotFound(String),
    #[error("not allowed in state {state}: {what}")]
    WrongState { state: VmState, what: String },
    #[error("boot failed: {0}")]
    Boot(#[from] BuildError),
    #[error("vCPU control failed: {0}")]
    Vcpu(#[from] crate::vstate::vcpu::VcpuError),
}

impl From<HotplugError> for ApiError {
    fn from(e: HotplugError) -> Self {
        match e {
            HotplugError::Vcpu(v) => ApiError::Vcpu(v),
            HotplugError::NoSlot { .. } => ApiError::NotFound(e.to_string()),
            HotplugError::SlotFull(_) | HotplugError::SlotEmpty(_) => ApiError::WrongState {
                state: VmState::Running,
                what: e.to_string(),
            },
            other => ApiError::BadRequest(other.to_string()),
        }
    }
}

impl ApiError {
    pub(crate) fn http_status(&self) -> u16 {
        match self {
            ApiError::BadRequest(_) => 400,
            ApiError::NotFound(_) => 404,
            ApiError::WrongState { .. } => 409,
            ApiError::Boot(_) | ApiError::Vcpu(_) => 500,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ActionBody {
    action: String,
}

/// `PUT /net/N/rate_limits`: both directions; one left out is unlimited.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NetLimitsBody {
    #[serde(default)]
    rx: LimitConfig,
    #[serde(default)]
    tx: LimitConfig,
}

/// `PUT /hotplug/vcpus`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct VcpusBody {
    count: usize,
}

/// `PUT /hotplug/memory`: MiB of the region to hold plugged.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MemoryBody {
    size_mib: u64,
}

/// `PUT /hotplug/disks/N`: how the disk is attached (its image's descriptor comes with the
/// request).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DiskBody {
    #[serde(default)]
    read_only: bool,
}

/// `PUT` or `DELETE /hotplug/disks/N`.
fn disk_slot(method: &str, path: &str, body: &[u8]) -> Option<Result<VmmAction, ApiError>> {
    let index = path
        .strip_prefix("/hotplug/disks/")?
        .parse::<usize>()
        .ok()?;
    Some(match method {
        "PUT" => serde_json::from_slice::<DiskBody>(body)
            .map_err(|e| ApiError::BadRequest(e.to_string()))
            .map(|b| VmmAction::AttachDisk {
                index,
                read_only: b.read_only,
                file: None,
            }),
        "DELETE" => Ok(VmmAction::DetachDisk(index)),
        _ => return None,
    })
}

/// `/net/N/rate_limits` or `/disks/N/rate_limits` with `body`.
fn rate_limits(path: &str, body: &[u8]) -> Option<Result<VmmAction, ApiError>> {
    let rest = path.strip_suffix("/rate_limits")?;
    let (kind, index) = rest.strip_prefix('/')?.split_once('/')?;
    let index = index.parse::<usize>().ok()?;
    let bad = |e: serde_json::Error| ApiError::BadRequest(e.to_string());
    let limits = match kind {
        "net" => serde_json::from_slice::<NetLimitsBody>(body)
            .map(|b| RateLimits::Net { rx: b.rx, tx: b.tx }),
        "disks" => serde_json::from_slice::<LimitConfig>(body).map(RateLimits::Disk),
        _ => return None,
    };
    Some(
        limits
            .map_err(bad)
            .map(|limits| VmmAction::SetRateLimits { index, limits }),
    )
}

/// Maps a request line and body to an action.
pub(crate) fn parse_action(method: &str, path: &str, body: &[u8]) -> Result<VmmAction, ApiError> {
    let bad = |e: serde_json::Error| ApiError::BadRequest(e.to_string());
    match (method, path) {
        ("PUT", "/vm") => Ok(VmmAction::Configure(Box::new(
            serde_json::from_slice(body).map_err(bad)?,
        ))),
        ("GET", "/vm") => Ok(VmmAction::GetState),
        ("GET", "/metrics") => Ok(VmmAction::GetMetrics),
        ("GET", "/metrics/prometheus") => Ok(VmmAction::GetMetricsPrometheus),
        ("GET", "/hotplug") => Ok(VmmAction::GetHotplug),
        ("PUT", "/hotplug/vcpus") => Ok(VmmAction::SetVcpus(
            serde_json::from_slice::<VcpusBody>(body)
                .map_err(bad)?
                .count,
        )),
        ("PUT", "/hotplug/memory") => Ok(VmmAction::SetHotplugMemory(
            serde_json::from_slice::<MemoryBody>(body)
                .map_err(bad)?
                .size_mib,
        )),
        ("PUT", "/actions") => {
            let a: ActionBody = serde_json::from_slice(body).map_err(bad)?;
            match a.action.as_str() {
                "boot" => Ok(VmmAction::Boot),
                "pause" => Ok(VmmAction::Pause),
                "resume" => Ok(VmmAction::Resume),
                "shutdown" => Ok(VmmAction::Shutdown),
                other => Err(ApiError::BadRequest(format!("unknown action {other:?}"))),
            }
        }
        (m, p) if p.starts_with("/hotplug/disks/") => {
            disk_slot(m, p, body).unwrap_or_else(|| Err(ApiError::NotFound(format!("{m} {p}"))))
        }
        ("PUT", p) => {
            rate_limits(p, body).unwrap_or_else(|| Err(ApiError::NotFound(format!("PUT {p}"))))
        }
        (m, p) => Err(ApiError::NotFound(format!("{m} {p}"))),
    }
}

/// Owns the VM across its life: configured → running ⇄ paused → stopped.
#[derive(Debug)]
pub struct Controller {
    /// Detected at the first boot (reading /proc/cpuinfo costs time before API-ready).
    host: Option<HostKvm>,
    config: Option<VmConfig>,
    vmm: Option<Vmm>,
    state: VmState,
}

impl Controller {
    /// `host` None: detect the host's KVM flavour when booting.
    pub fn new(host: Option<HostKvm>, config: Option<VmConfig>) -> Self {
        let state = match config {
            Some(_) => VmState::Configured,
            None => VmState::NotConfigured,
        };
        Controller {
            host,
            config,
            vmm: None,
            state,
        }
    }

    pub(crate) fn state(&self) -> VmState {
        self.state
    }

    pub fn vmm_mut(&mut self) -> Option<&mut Vmm> {
        self.vmm.as_mut()
    }

    pub fn take_vmm(&mut self) -> Option<Vmm> {
        self.vmm.take()
    }

    fn wrong(&self, what: &str) -> ApiError {
        ApiError::WrongState {
            state: self.state(),
            what: what.to_string(),
        }
    }

    /// Runs one action.
    pub fn handle(&mut self, action: VmmAction) -> Result<Reply, ApiError> {
        match action {
            VmmAction::Configure(c) => {
                if self.vmm.is_some() {
                    return Err(self.wrong("configure"));
                }
                c.validate()
                    .map_err(|e| ApiError::BadRequest(e.to_string()))?;
                self.config = Some(*c);
                self.state = VmState::Configured;
                Ok(Reply::Empty)
            }
            VmmAction::Boot => {
                let Some(cfg) = (self.vmm.is_none()).then_some(()).and(self.config.as_ref()) else {
                    return Err(self.wrong("boot"));
                };
                let host = *self.host.get_or_insert_with(|| {
                    HostKvm::detect(&crate::hostcheck::HostPaths::default())
                });
                self.vmm = Some(builder::build_and_boot(cfg, host)?);
                self.state = VmState::Running;
                Ok(Reply::Empty)
            }
            VmmAction::Pause | VmmAction::Resume => {
                let pause = action == VmmAction::Pause;
                let Some(vmm) = self.vmm.as_mut() else {
                    return Err(self.wrong(if pause { "pause" } else { "resume" }));
                };
                if pause {
                    vmm.pause()?;
                } else {
                    vmm.resume()?;
                }
                self.state = if pause {
                    VmState::Paused
                } else {
                    VmState::Running
                };
                Ok(Reply::Empty)
            }
            VmmAction::Shutdown => {
                if let Some(vmm) = &self.vmm {
                    vmm.request_stop();
                }
                Ok(Reply::Empty)
            }
            VmmAction::GetMetrics => Ok(Reply::Metrics(self.metrics())),
            VmmAction::GetMetricsPrometheus => Ok(Reply::Prometheus(
                crate::metrics::prometheus::render(&self.metrics()),
            )),
            VmmAction::SetRateLimits { index, limits } => {
                self.set_rate_limits(index, limits)?;
                Ok(Reply::Empty)
            }
            VmmAction::GetState => Ok(Reply::Vm(Box::new(VmInfo {
                state: self.state,
                config: self.config.clone(),
                vcpus: self.vmm.as_ref().map(Vmm::vcpu_states),
                hotplug: self.vmm.as_ref().map(Vmm::hotplug_status),
            }))),
            VmmAction::GetHotplug => match &self.vmm {
                Some(v) => Ok(Reply::Hotplug(v.hotplug_status())),
                None => Err(self.wrong("hotplug")),
            },
            VmmAction::SetVcpus(n) => {
                let Some(vmm) = self.vmm.as_mut() else {
                    return Err(self.wrong("hotplug vcpus"));
                };
                vmm.set_vcpus(n)?;
                Ok(Reply::Empty)
            }
            VmmAction::AttachDisk {
                index,
                read_only,
                file,
            } => {
                let Some(vmm) = self.vmm.as_mut() else {
                    return Err(self.wrong("attach a disk"));
                };
                let file = file
                    .and_then(|f| std::sync::Arc::try_unwrap(f.0).ok())
                    .ok_or_else(|| {
                        ApiError::BadRequest(
                            "the disk image's descriptor must come with the request (SCM_RIGHTS)"
                                .into(),
                        )
                    })?;
                let mmio_base = vmm.attach_disk(index, file, read_only)?;
                Ok(Reply::DiskAttached { mmio_base })
            }
            VmmAction::DetachDisk(index) => {
                let Some(vmm) = self.vmm.as_mut() else {
                    return Err(self.wrong("detach a disk"));
                };
                vmm.detach_disk(index)?;
                Ok(Reply::Empty)
            }
            VmmAction::SetHotplugMemory(mib) => {
                let Some(vmm) = self.vmm.as_ref() else {
                    return Err(self.wrong("hotplug memory"));
                };
                let bytes = mib
                    .checked_mul(1 << 20)
                    .ok_or_else(|| ApiError::BadRequest(format!("size_mib {mib} is too large")))?;
                vmm.set_hotplug_memory(bytes)?;
                Ok(Reply::Empty)
            }
        }
    }

    fn metrics(&self) -> MetricsReport {
        match &self.vmm {
            Some(v) => v.metrics(),
            None => MetricsReport::new(vec![]),
        }
    }

    /// New limits go to the configuration (so `GET /vm` shows them, and a VM not booted yet
    /// starts with them) and to the running device.
    fn set_rate_limits(&mut self, index: usize, limits: RateLimits) -> Result<(), ApiError> {
        let Some(cfg) = self.config.as_mut() else {
            return Err(self.wrong("rate_limits"));
        };
        let missing = || ApiError::NotFound(format!("device {index}"));
        let device_type = match limits {
            RateLimits::Net { rx, tx } => {
                rx.validate("rx")
                    .and_then(|()| tx.validate("tx"))
                    .map_err(ApiError::BadRequest)?;
                let n = cfg.net.get_mut(index).ok_or_else(missing)?;
                (n.rx, n.tx) = (rx, tx);
                TYPE_NET
            }
            RateLimits::Disk(l) => {
                l.validate("disk").map_err(ApiError::BadRequest)?;
                cfg.disks.get_mut(index).ok_or_else(missing)?.limit = l;
                TYPE_BLOCK
            }
        };
        if let Some(vmm) = &self.vmm {
            vmm.set_rate_limits(device_type, index, &limits)
                .map_err(ApiError::BadRequest)?;
        }
        Ok(())
    }

    /// Whether the process should end because of this action (shutdown before boot).
    pub(crate) fn ends_process(&self, action: &VmmAction) -> bool {
        *action == VmmAction::Shutdown && self.vmm.is_none()
    }

    /// Exit reason once the running VM ended.
    pub fn exit_reason(&self) -> Option<ExitReason> {
        self.vmm.as_ref().and_then(|v| v.exit_handle().reason())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_map_to_actions() {
        assert_eq!(
            parse_action("GET", "/metrics", b"").unwrap(),
            VmmAction::GetMetrics
        );
        assert_eq!(
            parse_action("PUT", "/actions", br#"{"action":"pause"}"#).unwrap(),
            VmmAction::Pause
        );
        assert!(matches!(
            parse_action("PUT", "/actions", br#"{"action":"explode"}"#),
            Err(ApiError::BadRequest(_))
        ));
        assert!(matches!(
            parse_action("PUT", "/vm", br#"{"kernel":"/k","vcpus":2}"#),
            Ok(VmmAction::Configure(_))
        ));
        assert!(matches!(
            parse_action("DELETE", "/vm", b""),
            Err(ApiError::NotFound(_))
        ));
        assert_eq!(
            parse_action("PUT", "/hotplug/vcpus", br#"{"count":3}"#).unwrap(),
            VmmAction::SetVcpus(3)
        );
        assert_eq!(
            parse_action("PUT", "/hotplug/memory", br#"{"size_mib":512}"#).unwrap(),
            VmmAction::SetHotplugMemory(512)
        );
        assert_eq!(
            parse_action("GET", "/hotplug", b"").unwrap(),
            VmmAction::GetHotplug
        );
        for (path, body) in [
            ("/hotplug/vcpus", r#"{"count":-1}"#),
            ("/hotplug/vcpus", r#"{"n":1}"#),
            ("/hotplug/memory", r#"{"size_mib":1,"x":2}"#),
        ] {
            assert!(
                matches!(
                    parse_action("PUT", path, body.as_bytes()),
                    Err(ApiError::BadRequest(_))
                ),
                "{path} {body}"
            );
        }
        assert_eq!(
            parse_action("PUT", "/hotplug/disks/1", br#"{"read_only":true}"#).unwrap(),
            VmmAction::AttachDisk {
                index: 1,
                read_only: true,
                file: None
            }
        );
        assert_eq!(
            parse_action("DELETE", "/hotplug/disks/0", b"").unwrap(),
            VmmAction::DetachDisk(0)
        );
        for (m, p) in [("GET", "/hotplug/disks/0"), ("PUT", "/hotplug/disks/x")] {
            assert_eq!(
                parse_action(m, p, b"{}").unwrap_err().http_status(),
                404,
                "{m} {p}"
            );
        }
        // Before boot there is nothing to grow.
        let mut c = Controller::new(Some(HostKvm::Hardware), None);
        for a in [
            VmmAction::SetVcpus(2),
            VmmAction::SetHotplugMemory(128),
            VmmAction::GetHotplug,
            VmmAction::DetachDisk(0),
        ] {
            assert_eq!(c.handle(a).unwrap_err().http_status(), 409);
        }
    }

    #[test]
    fn state_machine_refuses_out_of_order_actions() {
        let mut c = Controller::new(Some(HostKvm::Hardware), None);
        assert_eq!(c.state(), VmState::NotConfigured);
        assert_eq!(c.handle(VmmAction::Boot).unwrap_err().http_status(), 409);
        assert_eq!(c.handle(VmmAction::Pause).unwrap_err().http_status(), 409);
        let bad = VmConfig::default(); // no kernel
        assert_eq!(
            c.handle(VmmAction::Configure(Box::new(bad)))
                .unwrap_err()
                .http_status(),
            400
        );
        let cfg = VmConfig {
            kernel: Some("/nonexistent".into()),
            ..Default::default()
        };
        c.handle(VmmAction::Configure(Box::new(cfg))).unwrap();
        assert_eq!(c.state(), VmState::Configured);
        assert!(c.ends_process(&VmmAction::Shutdown));
        let Reply::Metrics(m) = c.handle(VmmAction::GetMetrics).unwrap() else {
            panic!("metrics reply expected");
        };
        let m: serde_json::Value = serde_json::from_str(&m.to_string()).unwrap();
        assert!(
            m["boot"].is_object() && m["devices"] == serde_json::json!([]),
            "{m}"
        );
        let body = c.handle(VmmAction::GetState).unwrap().body().unwrap();
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["state"], "configured");
        assert_eq!(v["config"]["kernel"], "/nonexistent");
        assert!(v["vcpus"].is_null(), "{v}");
    }

    #[test]
    fn rate_limits_map_to_actions_and_go_into_the_configuration() {
        let put = |path: &str, body: &str| parse_action("PUT", path, body.as_bytes());
        let net = put("/net/0/rate_limits", r#"{"rx":{"bytes":{"rate":1000}}}"#).unwrap();
        let VmmAction::SetRateLimits {
            index: 0,
            limits: RateLimits::Net { rx, tx },
        } = net
        else {
            panic!("{net:?}");
        };
        assert_eq!(rx.bytes.map(|b| b.rate), Some(1000));
        assert_eq!(tx, LimitConfig::default(), "left out: unlimited");
        let disk = put("/disks/1/rate_limits", r#"{"ops":{"rate":5,"burst":1}}"#).unwrap();
        assert!(matches!(
            disk,
            VmmAction::SetRateLimits {
                index: 1,
                limits: RateLimits::Disk(l)
            } if l.ops.is_some_and(|o| o.rate == 5 && o.burst == Some(1))
        ));
        for (path, body, status) in [
            ("/net/0/rate_limits", r#"{"bytes":{"rate":1}}"#, 400),
            ("/disks/0/rate_limits", r#"{"rx":{}}"#, 400),
            (
                "/net/0/rate_limits",
                r#"{"rx":{"ops":{"rate":1,"speed":2}}}"#,
                400,
            ),
            ("/net/x/rate_limits", "{}", 404),
            ("/vsock/0/rate_limits", "{}", 404),
            ("/net/0", "{}", 404),
        ] {
            assert_eq!(
                put(path, body).unwrap_err().http_status(),
                status,
                "{path} {body}"
            );
        }

        // Before boot the configuration takes them (GET /vm shows them); a zero rate and a
        // device that is not there are refused.
        let mut c = Controller::new(Some(HostKvm::Hardware), None);
        assert_eq!(c.handle(net.clone()).unwrap_err().http_status(), 409);
        let cfg = VmConfig {
            kernel: Some("/nonexistent".into()),
            net: vec!["tap=t0,mac=02:00:00:00:00:01".parse().unwrap()],
            ..Default::default()
        };
        c.handle(VmmAction::Configure(Box::new(cfg))).unwrap();
        c.handle(net).unwrap();
        let body = c.handle(VmmAction::GetState).unwrap().body().unwrap();
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["config"]["net"][0]["rx"]["bytes"]["rate"], 1000, "{v}");
        let zero = put("/net/0/rate_limits", r#"{"tx":{"ops":{"rate":0}}}"#).unwrap();
        assert_eq!(c.handle(zero).unwrap_err().http_status(), 400);
        let missing = put("/net/1/rate_limits", "{}").unwrap();
        assert_eq!(c.handle(missing).unwrap_err().http_status(), 404);
        assert_eq!(c.handle(disk).unwrap_err().http_status(), 404);
    }
}
