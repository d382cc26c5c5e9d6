//! Files service.

use async_trait::async_trait;
use hull_proto::files::*;
use hull_proto::files_ttrpc::Files;
use ttrpc::r#async::TtrpcContext;

use super::{handle, AgentState};
use crate::files::{do_copy_file, CopyChunk};

/// Serves the Files service.
#[derive(Debug, Clone)]
pub(crate) struct FilesService(pub(crate) AgentState);

#[async_trait]
impl Files for FilesService {
    async fn copy_file(
        &self,
        _c: &TtrpcContext,
        r: CopyFileRequest,
    ) -> ttrpc::Result<CopyFileResponse> {
        handle("CopyFile", async {
            let root = self.0.copy_root.clone();
            let chunk = CopyChunk {
                path: r.path.clone(),
                file_size: r.file_size,
                offset: r.offset,
                data: r.data.clone(),
                file_mode: r.file_mode,
                uid: r.uid,
                gid: r.gid,
                dir_mode: r.dir_mode,
            };
            tokio::task::spawn_blocking(move || do_copy_file(&root, &chunk))
                .await
                .map_err(|e| crate::engine::EngineError::Internal(e.to_string()))??;
            Ok(CopyFileResponse::default())
        })
        .await
    }
}
