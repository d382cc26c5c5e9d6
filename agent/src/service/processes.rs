//! Processes service.

use async_trait::async_trait;
use hull_proto::processes::*;
use hull_proto::processes_ttrpc::Processes;
use nix::sys::wait::WaitStatus;
use ttrpc::r#async::TtrpcContext;

use super::{handle, AgentState};
use crate::engine::exec::ExecRequest;
use crate::engine::process::Exit;
use crate::engine::stdio::MAX_CHUNK;

/// Serves the Processes service.
#[derive(Debug, Clone)]
pub(crate) struct ProcessesService(pub(crate) AgentState);

/// The wire form of an exit: code, or signal with status 128+n.
pub(crate) fn exit_status(exit: &Exit) -> ExitStatus {
    let mut s = ExitStatus {
        exited_at_ns: exit.info.exited_at_ns,
        oom_killed: exit.oom_killed,
        ..Default::default()
    };
    match exit.info.status {
        WaitStatus::Exited(_, code) => {
            let code = u32::try_from(code).unwrap_or(255);
            s.set_code(code);
            s.status = code;
        }
        WaitStatus::Signaled(_, sig, core) => {
            let n = u32::try_from(sig as i32).unwrap_or(0);
            s.set_signal(n);
            s.status = 128 + n;
            s.core_dumped = core;
        }
        _ => {}
    }
    s
}

#[async_trait]
impl Processes for ProcessesService {
    async fn exec_process(
        &self,
        _c: &TtrpcContext,
        r: ExecProcessRequest,
    ) -> ttrpc::Result<ExecProcessResponse> {
        handle("ExecProcess", async {
            let pid = self
                .0
                .engine
                .exec(ExecRequest {
                    id: r.container_id.clone(),
                    exec_id: r.exec_id.clone(),
                    process_json: r.process_json.clone(),
                    terminal: r.terminal,
                    stdin: r.stdin,
                })
                .await?;
            Ok(ExecProcessResponse {
                pid,
                ..Default::default()
            })
        })
        .await
    }

    async fn signal_process(
        &self,
        _c: &TtrpcContext,
        r: SignalProcessRequest,
    ) -> ttrpc::Result<SignalProcessResponse> {
        handle("SignalProcess", async {
            self.0
                .engine
                .signal(&r.container_id, &r.exec_id, r.signal, r.all)
                .await?;
            Ok(SignalProcessResponse::default())
        })
        .await
    }

    async fn wait_process(
        &self,
        _c: &TtrpcContext,
        r: WaitProcessRequest,
    ) -> ttrpc::Result<WaitProcessResponse> {
        handle("WaitProcess", async {
            let exit = self.0.engine.wait(&r.container_id, &r.exec_id).await?;
            Ok(WaitProcessResponse {
                exit: Some(exit_status(&exit)).into(),
                ..Default::default()
            })
        })
        .await
    }

    async fn write_stdin(
        &self,
        _c: &TtrpcContext,
        r: WriteStdinRequest,
    ) -> ttrpc::Result<WriteStdinResponse> {
        handle("WriteStdin", async {
            let n = self
                .0
                .engine
                .write_stdin(&r.container_id, &r.exec_id, &r.data)
                .await?;
            Ok(WriteStdinResponse {
                bytes_written: u32::try_from(n).unwrap_or(u32::MAX),
                ..Default::default()
            })
        })
        .await
    }

    async fn close_stdin(
        &self,
        _c: &TtrpcContext,
        r: CloseStdinRequest,
    ) -> ttrpc::Result<CloseStdinResponse> {
        handle("CloseStdin", async {
            self.0
                .engine
                .close_stdin(&r.container_id, &r.exec_id)
                .await?;
            Ok(CloseStdinResponse::default())
        })
        .await
    }

    async fn read_stdout(
        &self,
        _c: &TtrpcContext,
        r: ReadStreamRequest,
    ) -> ttrpc::Result<ReadStreamResponse> {
        self.read(r, false).await
    }

    async fn read_stderr(
        &self,
        _c: &TtrpcContext,
        r: ReadStreamRequest,
    ) -> ttrpc::Result<ReadStreamResponse> {
        self.read(r, true).await
    }

    async fn tty_win_resize(
        &self,
        _c: &TtrpcContext,
        r: TtyWinResizeRequest,
    ) -> ttrpc::Result<TtyWinResizeResponse> {
        handle("TtyWinResize", async {
            self.0
                .engine
                .resize(&r.container_id, &r.exec_id, r.rows, r.cols)
                .await?;
            Ok(TtyWinResizeResponse::default())
        })
        .await
    }
}

impl ProcessesService {
    async fn read(&self, r: ReadStreamRequest, stderr: bool) -> ttrpc::Result<ReadStreamResponse> {
        handle(if stderr { "ReadStderr" } else { "ReadStdout" }, async {
            let max = if r.max_len == 0 {
                MAX_CHUNK
            } else {
                usize::try_from(r.max_len).unwrap_or(MAX_CHUNK)
            };
            let (data, eof) = self
                .0
                .engine
                .read_output(&r.container_id, &r.exec_id, stderr, max)
                .await?;
            Ok(ReadStreamResponse {
                data,
                eof,
                ..Default::default()
            })
        })
        .await
    }
}
