//! Containers service.

use async_trait::async_trait;
use hull_proto::containers::*;
use hull_proto::containers_ttrpc::Containers;
use ttrpc::r#async::TtrpcContext;

use super::{handle, AgentState};
use crate::engine::create::CreateRequest;
use crate::storage;

/// Serves the Containers service.
#[derive(Debug, Clone)]
pub(crate) struct ContainersService(pub(crate) AgentState);

#[async_trait]
impl Containers for ContainersService {
    async fn create_container(
        &self,
        _c: &TtrpcContext,
        r: CreateContainerRequest,
    ) -> ttrpc::Result<CreateContainerResponse> {
        handle("CreateContainer", async {
            crate::engine::validate_id(&r.container_id, "container id")?;
            let cfg = self.0.sandbox.storage_config().clone();
            let storages = r.storages.clone();
            let t = std::time::Instant::now();
            let mounted = tokio::task::spawn_blocking(move || storage::mount_all(&cfg, &storages))
                .await
                .map_err(|e| crate::engine::EngineError::Internal(e.to_string()))??;
            tracing::debug!(container = %r.container_id, elapsed = ?t.elapsed(), "storages mounted");
            let req = CreateRequest {
                id: r.container_id.clone(),
                exec_id: r.exec_id.clone(),
                spec_json: r.oci_spec_json.clone(),
                terminal: r.terminal,
                stdin: r.stdin,
                storages: mounted.clone(),
            };
            match self.0.engine.create(req).await {
                Ok(pid) => Ok(CreateContainerResponse {
                    pid,
                    ..Default::default()
                }),
                Err(e) => {
                    for m in mounted.iter().rev() {
                        storage::unmount(m);
                    }
                    Err(e)
                }
            }
        })
        .await
    }

    async fn start_container(
        &self,
        _c: &TtrpcContext,
        r: StartContainerRequest,
    ) -> ttrpc::Result<StartContainerResponse> {
        handle("StartContainer", async {
            self.0.engine.start(&r.container_id).await?;
            Ok(StartContainerResponse::default())
        })
        .await
    }

    async fn remove_container(
        &self,
        _c: &TtrpcContext,
        r: RemoveContainerRequest,
    ) -> ttrpc::Result<RemoveContainerResponse> {
        handle("RemoveContainer", async {
            self.0.engine.remove(&r.container_id, r.timeout_ms).await?;
            Ok(RemoveContainerResponse::default())
        })
        .await
    }

    async fn update_container(
        &self,
        _c: &TtrpcContext,
        r: UpdateContainerRequest,
    ) -> ttrpc::Result<UpdateContainerResponse> {
        handle("UpdateContainer", async {
            self.0
                .engine
                .update(&r.container_id, &r.resources_json)
                .await?;
            Ok(UpdateContainerResponse::default())
        })
        .await
    }

    async fn stats_container(
        &self,
        _c: &TtrpcContext,
        r: StatsContainerRequest,
    ) -> ttrpc::Result<StatsContainerResponse> {
        handle("StatsContainer", async {
            let stats = self.0.engine.stats(&r.container_id).await?;
            Ok(StatsContainerResponse {
                stats: Some(stats).into(),
                ..Default::default()
            })
        })
        .await
    }

    async fn pause_container(
        &self,
        _c: &TtrpcContext,
        r: PauseContainerRequest,
    ) -> ttrpc::Result<PauseContainerResponse> {
        handle("PauseContainer", async {
            self.0.engine.pause(&r.container_id, true).await?;
            Ok(PauseContainerResponse::default())
        })
        .await
    }

    async fn resume_container(
        &self,
        _c: &TtrpcContext,
        r: ResumeContainerRequest,
    ) -> ttrpc::Result<ResumeContainerResponse> {
        handle("ResumeContainer", async {
            self.0.engine.pause(&r.container_id, false).await?;
            Ok(ResumeContainerResponse::default())
        })
        .await
    }

    async fn list_pids(
        &self,
        _c: &TtrpcContext,
        r: ListPidsRequest,
    ) -> ttrpc::Result<ListPidsResponse> {
        handle("ListPids", async {
            let listed = self.0.engine.pids(&r.container_id).await?;
            Ok(ListPidsResponse {
                pids: listed.iter().map(|p| p.pid).collect(),
                processes: listed
                    .into_iter()
                    .map(|p| ProcessPid {
                        pid: p.pid,
                        exec_id: p.exec_id,
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            })
        })
        .await
    }
}
