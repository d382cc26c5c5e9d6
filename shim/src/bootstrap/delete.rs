//! `delete`: containerd runs it when a shim died, to clean what the shim left, then prints
//! nothing but the `DeleteResponse` protobuf on stdout. Full crash cleanup (pod.json, VM
//! processes by pid+starttime) is M6; today it unmounts the rootfs and answers 128+SIGKILL.

use std::io::Write;

use containerd_shim::protos::protobuf::Message;
use containerd_shim::{DeleteResponse, Flags};

use super::{io_err, BootstrapError};
use crate::pod::{timestamp, unmount};

/// What a task killed with its shim reports: 128 + SIGKILL, as Kata.
const KILLED_STATUS: u32 = 137;

pub(crate) async fn run(flags: Flags) -> Result<(), BootstrapError> {
    let bundle = super::bundle_dir(&flags)?;
    unmount(&bundle.join("rootfs"));
    let resp = DeleteResponse {
        exit_status: KILLED_STATUS,
        exited_at: Some(timestamp(std::time::SystemTime::now())).into(),
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
