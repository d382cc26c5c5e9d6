//! The containerd task API (`containerd.task.v2.Task`, served as v3 as well): thin handlers
//! that turn wire requests into `Pod::do_*` calls and errors into ttrpc codes. Exec,
//! ResizePty, Pause/Resume, Stats and Update come with M3; Checkpoint never.

use std::sync::Arc;

use async_trait::async_trait;
use containerd_shim::api::{
    CloseIORequest, ConnectRequest, ConnectResponse, CreateTaskRequest, CreateTaskResponse,
    DeleteRequest, DeleteResponse, Empty, ExecProcessRequest, KillRequest, PidsRequest,
    PidsResponse, ShutdownRequest, StartRequest, StartResponse, StateRequest, StateResponse,
    Status, WaitRequest, WaitResponse,
};
use containerd_shim::protos::api::ProcessInfo;
use containerd_shim::protos::events::task::TaskCreate;
use containerd_shim::protos::protobuf::well_known_types::timestamp::Timestamp;
use containerd_shim::protos::protobuf::MessageField;
use containerd_shim::{Task, TtrpcContext, TtrpcResult};

use crate::errors::ShimError;
use crate::pod::{timestamp, CreateSpec, Exit, Pod, ProcStatus, StdioPaths};

#[derive(Debug, Clone)]
pub struct TaskService {
    pod: Arc<Pod>,
}

impl TaskService {
    pub fn new(pod: Arc<Pod>) -> Self {
        TaskService { pod }
    }
}

fn ts(exit: Option<Exit>) -> MessageField<Timestamp> {
    exit.map(|e| timestamp(e.at)).into()
}

/// hull runs no exec processes yet (M3); an exec id names nothing.
fn init_only(exec_id: &str) -> Result<(), ShimError> {
    if exec_id.is_empty() {
        Ok(())
    } else {
        Err(ShimError::NotFound(format!("exec {exec_id}")))
    }
}

#[async_trait]
impl Task for TaskService {
    async fn create(
        &self,
        _ctx: &TtrpcContext,
        req: CreateTaskRequest,
    ) -> TtrpcResult<CreateTaskResponse> {
        tracing::info!(id = %req.id, bundle = %req.bundle, "create");
        if !req.checkpoint.is_empty() {
            return Err(ShimError::Unimplemented("restoring a checkpoint").into());
        }
        let spec = CreateSpec {
            id: req.id.clone(),
            bundle: req.bundle.clone().into(),
            stdio: StdioPaths {
                stdin: req.stdin.clone(),
                stdout: req.stdout.clone(),
                stderr: req.stderr.clone(),
                terminal: req.terminal,
            },
        };
        let pid = self.pod.do_create(spec, &req.rootfs).await.map_err(|e| {
            tracing::error!(id = %req.id, "create: {e}");
            e
        })?;
        self.pod.events().send(TaskCreate {
            container_id: req.id.clone(),
            bundle: req.bundle.clone(),
            rootfs: req.rootfs.clone(),
            io: Some(containerd_shim::protos::events::task::TaskIO {
                stdin: req.stdin.clone(),
                stdout: req.stdout.clone(),
                stderr: req.stderr.clone(),
                terminal: req.terminal,
                ..Default::default()
            })
            .into(),
            checkpoint: req.checkpoint.clone(),
            pid,
            ..Default::default()
        });
        Ok(CreateTaskResponse {
            pid,
            ..Default::default()
        })
    }

    async fn start(&self, _ctx: &TtrpcContext, req: StartRequest) -> TtrpcResult<StartResponse> {
        tracing::info!(id = %req.id, "start");
        init_only(&req.exec_id)?;
        let pid = self.pod.do_start(&req.id).await?;
        Ok(StartResponse {
            pid,
            ..Default::default()
        })
    }

    async fn state(&self, _ctx: &TtrpcContext, req: StateRequest) -> TtrpcResult<StateResponse> {
        init_only(&req.exec_id)?;
        let c = self.pod.info(&req.id)?;
        Ok(StateResponse {
            id: c.id,
            bundle: c.bundle.display().to_string(),
            pid: c.pid,
            status: match c.status {
                ProcStatus::Created => Status::CREATED,
                ProcStatus::Running => Status::RUNNING,
                ProcStatus::Stopped => Status::STOPPED,
            }
            .into(),
            stdin: c.stdio.stdin,
            stdout: c.stdio.stdout,
            stderr: c.stdio.stderr,
            terminal: c.stdio.terminal,
            exit_status: c.exit.map_or(0, |e| e.status),
            exited_at: ts(c.exit),
            ..Default::default()
        })
    }

    async fn wait(&self, _ctx: &TtrpcContext, req: WaitRequest) -> TtrpcResult<WaitResponse> {
        init_only(&req.exec_id)?;
        let exit = self.pod.do_wait(&req.id).await?;
        Ok(WaitResponse {
            exit_status: exit.status,
            exited_at: ts(Some(exit)),
            ..Default::default()
        })
    }

    async fn kill(&self, _ctx: &TtrpcContext, req: KillRequest) -> TtrpcResult<Empty> {
        tracing::info!(id = %req.id, signal = req.signal, all = req.all, "kill");
        init_only(&req.exec_id)?;
        self.pod.do_kill(&req.id, req.signal, req.all).await?;
        Ok(Empty::new())
    }

    async fn delete(&self, _ctx: &TtrpcContext, req: DeleteRequest) -> TtrpcResult<DeleteResponse> {
        tracing::info!(id = %req.id, "delete");
        init_only(&req.exec_id)?;
        let c = self.pod.do_delete(&req.id).await?;
        Ok(DeleteResponse {
            pid: c.pid,
            exit_status: c.exit.map_or(0, |e| e.status),
            exited_at: ts(c.exit),
            ..Default::default()
        })
    }

    async fn pids(&self, _ctx: &TtrpcContext, req: PidsRequest) -> TtrpcResult<PidsResponse> {
        let pids = self.pod.do_pids(&req.id).await?;
        Ok(PidsResponse {
            processes: pids
                .into_iter()
                .map(|pid| ProcessInfo {
                    pid,
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        })
    }

    async fn close_io(&self, _ctx: &TtrpcContext, req: CloseIORequest) -> TtrpcResult<Empty> {
        init_only(&req.exec_id)?;
        self.pod.do_close_io(&req.id)?;
        Ok(Empty::new())
    }

    async fn exec(&self, _ctx: &TtrpcContext, _req: ExecProcessRequest) -> TtrpcResult<Empty> {
        Err(ShimError::Unimplemented("exec (issue 5 M3)").into())
    }

    async fn connect(
        &self,
        _ctx: &TtrpcContext,
        req: ConnectRequest,
    ) -> TtrpcResult<ConnectResponse> {
        let task_pid = self
            .pod
            .info(&req.id)
            .map(|c| c.pid)
            .unwrap_or_else(|_| self.pod.any_pid());
        Ok(ConnectResponse {
            shim_pid: std::process::id(),
            task_pid,
            ..Default::default()
        })
    }

    async fn shutdown(&self, _ctx: &TtrpcContext, _req: ShutdownRequest) -> TtrpcResult<Empty> {
        tracing::info!("shutdown");
        self.pod.do_shutdown().await?;
        Ok(Empty::new())
    }
}
