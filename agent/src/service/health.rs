//! Health service: liveness and version of the agent.

use async_trait::async_trait;
use hull_proto::health::check_response::ServingStatus;
use hull_proto::health::{CheckRequest, CheckResponse, VersionRequest, VersionResponse};
use hull_proto::health_ttrpc::Health;
use ttrpc::r#async::TtrpcContext;

use crate::AGENT_VERSION;

/// Answers health checks. The agent serves as soon as its listener is up; deeper checks
/// (engine state) will join when the engine has state worth checking.
#[derive(Debug, Clone)]
pub(crate) struct HealthService {
    kernel_release: String,
}

impl HealthService {
    pub(crate) fn new() -> Self {
        let kernel_release = nix::sys::utsname::uname()
            .map(|u| u.release().to_string_lossy().into_owned())
            .unwrap_or_default();
        HealthService { kernel_release }
    }

    /// The version reply, independent of ttrpc.
    pub(crate) fn do_version(&self) -> VersionResponse {
        VersionResponse {
            agent_version: AGENT_VERSION.to_owned(),
            protocol_version: hull_proto::PROTOCOL_VERSION,
            kernel_release: self.kernel_release.clone(),
            ..Default::default()
        }
    }
}

impl Default for HealthService {
    fn default() -> Self {
        Self::new()
    }
}

#[async_trait]
impl Health for HealthService {
    async fn check(&self, _ctx: &TtrpcContext, _req: CheckRequest) -> ttrpc::Result<CheckResponse> {
        Ok(CheckResponse {
            status: ServingStatus::SERVING.into(),
            ..Default::default()
        })
    }

    async fn version(
        &self,
        _ctx: &TtrpcContext,
        _req: VersionRequest,
    ) -> ttrpc::Result<VersionResponse> {
        Ok(self.do_version())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_names_agent_and_running_kernel() {
        let v = HealthService::new().do_version();
        assert_eq!(v.agent_version, env!("CARGO_PKG_VERSION"));
        assert_eq!(v.protocol_version, hull_proto::PROTOCOL_VERSION);
        let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
        assert_eq!(v.kernel_release, release.trim());
    }
}
