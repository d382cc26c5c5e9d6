//! Sandbox service.

use async_trait::async_trait;
use hull_proto::sandbox::*;
use hull_proto::sandbox_ttrpc::Sandbox;
use ttrpc::r#async::TtrpcContext;

use super::{handle, AgentState};
use crate::sandbox::SandboxRequest;

/// Serves the Sandbox service.
#[derive(Debug, Clone)]
pub(crate) struct SandboxService(pub(crate) AgentState);

#[async_trait]
impl Sandbox for SandboxService {
    async fn create_sandbox(
        &self,
        _c: &TtrpcContext,
        r: CreateSandboxRequest,
    ) -> ttrpc::Result<CreateSandboxResponse> {
        handle("CreateSandbox", async {
            let dns = r.dns.clone().unwrap_or_default();
            let mut sysctls: Vec<(String, String)> = r.sysctls.clone().into_iter().collect();
            sysctls.sort();
            self.0
                .sandbox
                .do_create(SandboxRequest {
                    id: r.sandbox_id.clone(),
                    hostname: r.hostname.clone(),
                    dns_servers: dns.servers.clone(),
                    dns_searches: dns.searches.clone(),
                    dns_options: dns.options.clone(),
                    resolv_conf: r.resolv_conf.clone(),
                    hosts: r.hosts.clone(),
                    storages: r.storages.clone(),
                    sysctls,
                })
                .await?;
            Ok(CreateSandboxResponse::default())
        })
        .await
    }

    async fn destroy_sandbox(
        &self,
        _c: &TtrpcContext,
        r: DestroySandboxRequest,
    ) -> ttrpc::Result<DestroySandboxResponse> {
        handle("DestroySandbox", async {
            self.0
                .sandbox
                .do_destroy(&self.0.engine, &r.sandbox_id)
                .await?;
            Ok(DestroySandboxResponse::default())
        })
        .await
    }
}
