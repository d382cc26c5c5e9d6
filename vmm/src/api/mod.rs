//! The VMM API (DESIGN §1): requests on a Unix socket become one typed [`VmmAction`]; a thin
//! handler validates and runs it against the [`Controller`], which owns the (maybe not yet
//! booted) VM. The wire format is a minimal HTTP/1.1 subset, see `vmm/API.md`.

pub(crate) mod http;
pub mod server;

use serde::{Deserialize, Serialize};

use crate::builder::{self, BuildError};
use crate::config::VmConfig;
use crate::exit::ExitReason;
use crate::hostcheck::HostKvm;
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
    GetState,
}

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
}

/// What an action answers: nothing (204), or a JSON body (200).
#[derive(Debug)]
pub enum Reply {
    Empty,
    Vm(Box<VmInfo>),
    Metrics(MetricsReport),
}

impl Reply {
    /// The JSON body, if any.
    pub(crate) fn body(&self) -> Option<String> {
        match self {
            Reply::Empty => None,
            Reply::Vm(v) => serde_json::to_string(v).ok(),
            Reply::Metrics(m) => Some(m.to_string()),
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

/// Maps a request line and body to an action.
pub(crate) fn parse_action(method: &str, path: &str, body: &[u8]) -> Result<VmmAction, ApiError> {
    let bad = |e: serde_json::Error| ApiError::BadRequest(e.to_string());
    match (method, path) {
        ("PUT", "/vm") => Ok(VmmAction::Configure(Box::new(
            serde_json::from_slice(body).map_err(bad)?,
        ))),
        ("GET", "/vm") => Ok(VmmAction::GetState),
        ("GET", "/metrics") => Ok(VmmAction::GetMetrics),
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
            VmmAction::GetMetrics => Ok(Reply::Metrics(match &self.vmm {
                Some(v) => v.metrics(),
                None => MetricsReport::new(vec![]),
            })),
            VmmAction::GetState => Ok(Reply::Vm(Box::new(VmInfo {
                state: self.state,
                config: self.config.clone(),
                vcpus: self.vmm.as_ref().map(Vmm::vcpu_states),
            }))),
        }
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
}
