//! Execs (`ctr task exec`, `kubectl exec`): containerd's Exec only records the process and
//! its stdio; its Start runs it in the agent. Also terminal resizes, for any process.

use std::sync::Arc;

use containerd_shim::protos::events::task::{TaskExecAdded, TaskExecStarted};
use hull_proto::processes::{ExecProcessRequest, TtyWinResizeRequest};

use super::process::Process;
use super::{ctx, not_found, Pod, ProcStatus};
use crate::errors::ShimError;
use crate::spec;
use crate::stdio::{ProcRef, Stdio, StdioPaths};

impl Pod {
    /// Records exec `exec_id` of container `id`: `process_json` is the OCI Process containerd
    /// sent (JSON in an `Any`).
    pub(crate) fn do_exec(
        &self,
        id: &str,
        exec_id: &str,
        stdio: StdioPaths,
        process_json: &[u8],
    ) -> Result<(), ShimError> {
        if exec_id.is_empty() {
            return Err(ShimError::InvalidArgument(
                "an exec needs an exec id".into(),
            ));
        }
        let process = spec::exec_process(process_json)?;
        {
            let mut map = self.lock();
            let c = map.get_mut(id).ok_or_else(|| not_found(id, ""))?;
            if c.init.status(false) == ProcStatus::Stopped {
                return Err(ShimError::FailedPrecondition(format!(
                    "container {id} has stopped"
                )));
            }
            if c.execs.contains_key(exec_id) {
                return Err(ShimError::AlreadyExists(format!(
                    "exec {exec_id} of container {id}"
                )));
            }
            c.execs
                .insert(exec_id.to_owned(), Process::new(0, stdio, None, process));
        }
        self.events.send(TaskExecAdded {
            container_id: id.to_owned(),
            exec_id: exec_id.to_owned(),
            ..Default::default()
        });
        Ok(())
    }

    /// Runs a recorded exec in the agent and connects its stdio.
    pub(super) async fn start_exec(
        &self,
        id: &str,
        exec_id: &str,
    ) -> Result<(u32, Arc<Stdio>), ShimError> {
        let (stdio, process_json) = self
            .lock()
            .get(id)
            .and_then(|c| c.execs.get(exec_id))
            .map(|p| (p.stdio.clone(), p.spec.clone()))
            .ok_or_else(|| not_found(id, exec_id))?;
        let (_, processes) = self.clients()?;
        let req = ExecProcessRequest {
            container_id: id.to_owned(),
            exec_id: exec_id.to_owned(),
            process_json,
            terminal: stdio.terminal,
            stdin: !stdio.stdin.is_empty(),
            ..Default::default()
        };
        let r = processes
            .exec_process(ctx(), &req)
            .await
            .map_err(ShimError::agent(format!("exec {exec_id} in {id}")))?;
        let pid = self.backend()?.task_pid(r.pid);
        // The process runs already; its output waits in the agent until the pumps read it.
        let io = Stdio::open(
            &processes,
            &ProcRef::new(id, exec_id),
            &stdio,
            self.events.namespace(),
        )
        .await;
        let io = match io {
            Ok(io) => Arc::new(io),
            Err(e) => {
                // Nobody could see its output or feed its input: do not leave it running.
                let _ = self.do_kill(id, exec_id, libc::SIGKILL as u32, false).await;
                return Err(e);
            }
        };
        if let Some(p) = self
            .lock()
            .get_mut(id)
            .and_then(|c| c.execs.get_mut(exec_id))
        {
            p.pid = pid;
            p.started = true;
            p.io = Some(Arc::clone(&io));
        }
        self.events.send(TaskExecStarted {
            container_id: id.to_owned(),
            exec_id: exec_id.to_owned(),
            pid,
            ..Default::default()
        });
        Ok((pid, io))
    }

    /// Resizes the terminal of a process (`width` × `height` character cells).
    pub(crate) async fn do_resize_pty(
        &self,
        id: &str,
        exec_id: &str,
        width: u32,
        height: u32,
    ) -> Result<(), ShimError> {
        let info = self.info(id, exec_id)?;
        if !info.stdio.terminal {
            return Err(ShimError::FailedPrecondition(format!(
                "{} has no terminal",
                info.id
            )));
        }
        let (_, processes) = self.clients()?;
        let req = TtyWinResizeRequest {
            container_id: id.to_owned(),
            exec_id: exec_id.to_owned(),
            rows: height,
            cols: width,
            ..Default::default()
        };
        processes
            .tty_win_resize(ctx(), &req)
            .await
            .map_err(ShimError::agent(format!(
                "resize the terminal of {}",
                info.id
            )))?;
        Ok(())
    }
}
