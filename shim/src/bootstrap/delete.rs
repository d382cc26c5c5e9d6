//! `delete`: containerd runs it for each task of a shim that died (or failed to start), to
//! clean what the shim left, then reads nothing but the `DeleteResponse` protobuf on stdout.
//!
//! containerd 1.6 also runs it after every *normal* shim exit ("cleaning up after shim
//! disconnected"), while the shim may still be tearing its pod down after Shutdown. So a live
//! shim is left alone: its own teardown is bounded and always ends in its exit. Once the shim
//! is dead: the rootfs mount in the bundle, the container's binds in the pod share, and the
//! whole pod (hull-vmm, virtiofsd or the host agent, the pod cgroups, the share mounts, the
//! pod directory), all found through `pod.json` (`backend::record`), and the shim's socket.

use std::io::Write;

use containerd_shim::protos::protobuf::Message;
use containerd_shim::{DeleteResponse, Flags};

use super::{io_err, BootstrapError, SANDBOX_FILE};
use crate::address::socket_path;
use crate::backend::cleanup;
use crate::{mount, timestamp};

/// What a task killed with its shim reports: 128 + SIGKILL, as Kata.
const KILLED_STATUS: u32 = 137;

pub(crate) async fn run(flags: Flags) -> Result<(), BootstrapError> {
    let bundle = super::bundle_dir(&flags)?;
    mount::detach(&bundle.join("rootfs"));
    // No sandbox file: `start` never got that far, and no pod exists for this task.
    if let Ok(sid) = std::fs::read_to_string(bundle.join(SANDBOX_FILE)) {
        let sid = sid.trim();
        // containerd's identifiers start with a letter or digit and have no '/': anything
        // else must not become a path to delete.
        let plausible = sid.starts_with(|c: char| c.is_ascii_alphanumeric()) && !sid.contains('/');
        let dead = if plausible {
            cleanup::dead_pod_record(sid).await
        } else {
            None
        };
        if let Some(record) = dead {
            cleanup::dead_pod(sid, &record).await;
            // The dead shim's socket (shared by the pod's tasks, so only once it is dead).
            if let Ok(address) = std::fs::read_to_string(bundle.join("address")) {
                let path = socket_path(address.trim());
                if path.starts_with("/run/containerd/s/") {
                    let _ = std::fs::remove_file(path);
                }
            }
        }
    }
    let resp = DeleteResponse {
        exit_status: KILLED_STATUS,
        exited_at: Some(timestamp::of(std::time::SystemTime::now())).into(),
        ..Default::default()
    };
    let bytes = resp.write_to_bytes().map_err(|e| BootstrapError::Io {
        context: "encode DeleteResponse".into(),
        source: std::io::Error::other(e),
    })?;
    let mut out = std::io::stdout().lock();
    out.write_all(&bytes)
        .and_then(|()| out.flush())
        .map_err(io_err("write DeleteResponse"))
}
