//! The containerd task API (`containerd.task.v2.Task`, served as v3 as well): thin handlers
//! that turn wire requests into `Pod::do_*` calls and errors into ttrpc codes. Every RPC but
//! Checkpoint, which answers UNIMPLEMENTED (a VM's memory is not a runc checkpoint).
//! Every error leaves through [`out`], which bounds its message: much of it can be the
//! guest agent's words.

use std::sync::Arc;

use async_trait::async_trait;
use containerd_shim::api::{
    CheckpointTaskRequest, CloseIORequest, ConnectRequest, ConnectResponse, CreateTaskRequest,
    CreateTaskResponse, DeleteRequest, DeleteResponse, Empty, ExecProcessRequest, KillRequest,
    PauseRequest, PidsRequest, PidsResponse, ResizePtyRequest, ResumeRequest, ShutdownRequest,
    StartRequest, StartResponse, StateRequest, StateResponse, StatsRequest, StatsResponse, Status,
    UpdateTaskRequest, WaitRequest, WaitResponse,
};
use containerd_shim::protos::api::ProcessInfo;
use containerd_shim::protos::events::task::TaskCreate;
use containerd_shim::protos::protobuf::well_known_types::timestamp::Timestamp;
use containerd_shim::protos::protobuf::MessageField;
use containerd_shim::{Task, TtrpcContext, TtrpcResult};

use crate::bounds::clip_status;
use crate::errors::ShimError;
use crate::pod::{CreateSpec, Exit, Pod, ProcStatus};
use crate::stdio::StdioPaths;
use crate::typeurl;
use crate::{stats, timestamp};

#[derive(Debug, Clone)]
pub(crate) struct TaskService {
    pod: Arc<Pod>,
}

impl TaskService {
    pub(crate) fn new(pod: Arc<Pod>) -> Self {
        TaskService { pod }
    }
}

/// A handler's error as containerd gets it: its code, and a message of bounded length.
fn out(e: ShimError) -> ttrpc::Error {
    clip_status(e.into())
}

fn ts(exit: Option<Exit>) -> MessageField<Timestamp> {
    exit.map(|e| timestamp::of(e.at)).into()
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
        let pid = self
            .pod
            .do_create(spec, &req.rootfs)
            .await
            .map_err(|e| {
                tracing::error!(id = %req.id, "create: {e}");
                e
            })
            .map_err(out)?;
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
        tracing::info!(id = %req.id, exec = %req.exec_id, "start");
        let pid = self
            .pod
            .do_start(&req.id, &req.exec_id)
            .await
            .map_err(out)?;
        // A process now runs and the shim mostly waits: hand back what setting it up (the VM,
        // the spec, the mounts) left free in the heap, which the stream-sized trim threshold
        // (`hull_heap`) would otherwise keep for the life of the pod.
        hull_heap::release_free_memory();
        Ok(StartResponse {
            pid,
            ..Default::default()
        })
    }

    async fn state(&self, _ctx: &TtrpcContext, req: StateRequest) -> TtrpcResult<StateResponse> {
        let c = self.pod.info(&req.id, &req.exec_id).map_err(out)?;
        Ok(StateResponse {
            id: c.id,
            exec_id: c.exec_id,
            bundle: c.bundle.display().to_string(),
            pid: c.pid,
            status: match c.status {
                ProcStatus::Created => Status::CREATED,
                ProcStatus::Running => Status::RUNNING,
                ProcStatus::Paused => Status::PAUSED,
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
        let exit = self.pod.do_wait(&req.id, &req.exec_id).await.map_err(out)?;
        Ok(WaitResponse {
            exit_status: exit.status,
            exited_at: ts(Some(exit)),
            ..Default::default()
        })
    }

    async fn kill(&self, _ctx: &TtrpcContext, req: KillRequest) -> TtrpcResult<Empty> {
        tracing::info!(id = %req.id, exec = %req.exec_id, signal = req.signal, all = req.all, "kill");
        self.pod
            .do_kill(&req.id, &req.exec_id, req.signal, req.all)
            .await
            .map_err(out)?;
        Ok(Empty::new())
    }

    async fn delete(&self, _ctx: &TtrpcContext, req: DeleteRequest) -> TtrpcResult<DeleteResponse> {
        tracing::info!(id = %req.id, exec = %req.exec_id, "delete");
        let c = self
            .pod
            .do_delete(&req.id, &req.exec_id)
            .await
            .map_err(out)?;
        hull_heap::release_free_memory();
        Ok(DeleteResponse {
            pid: c.pid,
            exit_status: c.exit.map_or(0, |e| e.status),
            exited_at: ts(c.exit),
            ..Default::default()
        })
    }

    async fn pids(&self, _ctx: &TtrpcContext, req: PidsRequest) -> TtrpcResult<PidsResponse> {
        let pids = self.pod.do_pids(&req.id).await.map_err(out)?;
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
        tracing::debug!(id = %req.id, exec = %req.exec_id, stdin = req.stdin, "close io");
        if req.stdin {
            self.pod.do_close_io(&req.id, &req.exec_id).map_err(out)?;
        }
        Ok(Empty::new())
    }

    async fn exec(&self, _ctx: &TtrpcContext, req: ExecProcessRequest) -> TtrpcResult<Empty> {
        tracing::info!(id = %req.id, exec = %req.exec_id, "exec");
        let stdio = StdioPaths {
            stdin: req.stdin.clone(),
            stdout: req.stdout.clone(),
            stderr: req.stderr.clone(),
            terminal: req.terminal,
        };
        let process = req.spec.as_ref().map(|a| a.value.as_slice()).unwrap_or(&[]);
        self.pod
            .do_exec(&req.id, &req.exec_id, stdio, process)
            .map_err(out)?;
        Ok(Empty::new())
    }

    async fn resize_pty(&self, _ctx: &TtrpcContext, req: ResizePtyRequest) -> TtrpcResult<Empty> {
        self.pod
            .do_resize_pty(&req.id, &req.exec_id, req.width, req.height)
            .await
            .map_err(out)?;
        Ok(Empty::new())
    }

    async fn pause(&self, _ctx: &TtrpcContext, req: PauseRequest) -> TtrpcResult<Empty> {
        tracing::info!(id = %req.id, "pause");
        self.pod.do_pause(&req.id).await.map_err(out)?;
        Ok(Empty::new())
    }

    async fn resume(&self, _ctx: &TtrpcContext, req: ResumeRequest) -> TtrpcResult<Empty> {
        tracing::info!(id = %req.id, "resume");
        self.pod.do_resume(&req.id).await.map_err(out)?;
        Ok(Empty::new())
    }

    async fn update(&self, _ctx: &TtrpcContext, req: UpdateTaskRequest) -> TtrpcResult<Empty> {
        tracing::info!(id = %req.id, "update");
        // containerd marshals the OCI LinuxResources as JSON inside the Any.
        let resources = req
            .resources
            .as_ref()
            .map(|a| a.value.clone())
            .unwrap_or_default();
        self.pod.do_update(&req.id, resources).await.map_err(out)?;
        Ok(Empty::new())
    }

    async fn stats(&self, _ctx: &TtrpcContext, req: StatsRequest) -> TtrpcResult<StatsResponse> {
        let stats = self.pod.do_stats(&req.id).await.map_err(out)?;
        let any = typeurl::pack(typeurl::CGROUPS_V2, &stats::to_metrics(&stats))
            .map_err(|source| ShimError::Encode {
                what: "metrics",
                source,
            })
            .map_err(out)?;
        Ok(StatsResponse {
            stats: Some(any).into(),
            ..Default::default()
        })
    }

    async fn checkpoint(
        &self,
        _ctx: &TtrpcContext,
        _req: CheckpointTaskRequest,
    ) -> TtrpcResult<Empty> {
        Err(ShimError::Unimplemented("checkpoint").into())
    }

    async fn connect(
        &self,
        _ctx: &TtrpcContext,
        req: ConnectRequest,
    ) -> TtrpcResult<ConnectResponse> {
        let task_pid = self
            .pod
            .info(&req.id, "")
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
        self.pod.do_shutdown();
        Ok(Empty::new())
    }
}
