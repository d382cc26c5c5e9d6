//! Wait and stdio of a process: WaitProcess, WriteStdin, CloseStdin, ReadStdout/ReadStderr,
//! TtyWinResize.

use super::error::Result;
use super::process::Exit;
use super::Engine;

impl Engine {
    pub(crate) async fn wait(&self, id: &str, exec_id: &str) -> Result<Exit> {
        let p = self.registry().process(id, exec_id).await?;
        p.wait().await
    }

    pub(crate) async fn write_stdin(&self, id: &str, exec_id: &str, data: &[u8]) -> Result<usize> {
        self.registry()
            .process(id, exec_id)
            .await?
            .write_stdin(data)
            .await
    }

    pub(crate) async fn close_stdin(&self, id: &str, exec_id: &str) -> Result<()> {
        self.registry()
            .process(id, exec_id)
            .await?
            .close_stdin()
            .await
    }

    pub(crate) async fn read_output(
        &self,
        id: &str,
        exec_id: &str,
        stderr: bool,
        max: usize,
    ) -> Result<(Vec<u8>, bool)> {
        self.registry()
            .process(id, exec_id)
            .await?
            .read(stderr, max)
            .await
    }

    pub(crate) async fn resize(&self, id: &str, exec_id: &str, rows: u32, cols: u32) -> Result<()> {
        self.registry()
            .process(id, exec_id)
            .await?
            .resize(rows, cols)
    }
}
