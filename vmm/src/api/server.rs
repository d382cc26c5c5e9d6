//! The API Unix socket. Before boot the VMM waits on it (and on SIGTERM); after boot it is one
//! more event source of the VM's event loop. A connection carries one request; it is parsed
//! into a `VmmAction` and queued, and the main loop runs it against the `Controller` and
//! replies (the loop owns the VM, so handlers never share it).

use std::collections::VecDeque;
use std::io::Read;
use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use event_manager::{EventOps, Events, MutEventSubscriber};
use vmm_sys_util::epoll::EventSet;

use super::{http, parse_action, ApiError, Controller, VmmAction};
use crate::device_manager::bus::lock;

/// Requests parsed and waiting for the main loop.
pub type Pending = Arc<Mutex<VecDeque<(UnixStream, Result<VmmAction, ApiError>)>>>;

/// The listening API socket. Its file stays when hull-vmm ends: once the VM runs, hull-vmm
/// may not unlink anything (`seccomp.rs`), so the directory's owner removes it (the shim
/// removes the pod's), and the next hull-vmm on the same path replaces it.
#[derive(Debug)]
pub struct ApiServer {
    listener: UnixListener,
    pending: Pending,
}

impl ApiServer {
    /// Listens on `path`, replacing what a previous hull-vmm left there.
    pub fn bind(path: &Path) -> std::io::Result<Self> {
        let _ = std::fs::remove_file(path);
        let listener = UnixListener::bind(path)?;
        listener.set_nonblocking(true)?;
        Ok(ApiServer {
            listener,
            pending: Arc::new(Mutex::new(VecDeque::new())),
        })
    }

    pub fn pending(&self) -> Pending {
        self.pending.clone()
    }

    pub fn listener_fd(&self) -> i32 {
        self.listener.as_raw_fd()
    }

    /// Accepts every waiting connection and queues its request.
    pub fn accept_all(&self) {
        while let Ok((stream, _)) = self.listener.accept() {
            let parsed = (|| {
                stream.set_nonblocking(false).map_err(|e| e.to_string())?;
                stream
                    .set_read_timeout(Some(Duration::from_secs(2)))
                    .map_err(|e| e.to_string())?;
                let (first, file) = recv_with_file(&stream)?;
                let req = http::read_request(std::io::Cursor::new(first).chain(&stream))?;
                Ok::<_, String>((req, file))
            })();
            let action = parsed.map_err(ApiError::BadRequest).and_then(|(r, file)| {
                let a = parse_action(&r.method, &r.path, &r.body)?;
                Ok(with_file(a, file))
            });
            lock(&self.pending).push_back((stream, action));
        }
    }
}

/// A disk attach carries the image's descriptor (`SCM_RIGHTS`, with the request's first
/// bytes); any other request's descriptor is closed unused.
fn with_file(a: VmmAction, file: Option<std::fs::File>) -> VmmAction {
    match (a, file) {
        (
            VmmAction::AttachDisk {
                index, read_only, ..
            },
            Some(f),
        ) => VmmAction::AttachDisk {
            index,
            read_only,
            file: Some(super::PassedFile(Arc::new(f))),
        },
        (a, _) => a,
    }
}

/// The request's first bytes and the first descriptor sent with them (others are closed).
fn recv_with_file(stream: &UnixStream) -> Result<(Vec<u8>, Option<std::fs::File>), String> {
    use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
    use std::os::fd::FromRawFd;

    let mut buf = vec![0u8; 4096];
    let mut cmsg = nix::cmsg_space!([std::os::fd::RawFd; 4]);
    let mut iov = [std::io::IoSliceMut::new(&mut buf)];
    let msg = recvmsg::<()>(
        stream.as_raw_fd(),
        &mut iov,
        Some(&mut cmsg),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )
    .map_err(|e| e.to_string())?;
    let n = msg.bytes;
    let mut fds = Vec::new();
    for c in msg.cmsgs().map_err(|e| e.to_string())? {
        if let ControlMessageOwned::ScmRights(v) = c {
            fds.extend(v);
        }
    }
    let mut files = fds.into_iter().map(|fd| {
        // SAFETY: the kernel just installed `fd` in this process for this message
        // (SCM_RIGHTS); nothing else owns it, and it is wrapped exactly once.
        unsafe { std::fs::File::from_raw_fd(fd) }
    });
    let first = files.next();
    drop(files.collect::<Vec<_>>());
    buf.truncate(n);
    Ok((buf, first))
}

/// Runs every queued request against `ctl`; returns true when the process should end.
pub fn serve_pending(pending: &Pending, ctl: &mut Controller) -> bool {
    let mut end = false;
    loop {
        let Some((stream, action)) = lock(pending).pop_front() else {
            return end;
        };
        let result = action.and_then(|a| {
            end |= ctl.ends_process(&a);
            ctl.handle(a)
        });
        let _ = match result {
            Ok(reply) => {
                http::write_response(&stream, 200, reply.content_type(), reply.body().as_deref())
            }
            Err(e) => http::write_response(
                &stream,
                e.http_status(),
                "application/json",
                Some(&error_body(&e)),
            ),
        };
    }
}

/// `{"error": "one line"}`.
fn error_body(e: &ApiError) -> String {
    #[derive(serde::Serialize)]
    struct ErrorBody {
        error: String,
    }
    let body = ErrorBody {
        error: e.to_string(),
    };
    serde_json::to_string(&body).unwrap_or_default()
}

/// The API socket as an event source of the running VM.
#[derive(Debug)]
pub struct ApiSubscriber(pub ApiServer);

impl MutEventSubscriber for ApiSubscriber {
    fn init(&mut self, ops: &mut EventOps) {
        let _ = ops.add(Events::new_raw(self.0.listener_fd(), EventSet::IN));
    }
    fn process(&mut self, _events: Events, _ops: &mut EventOps) {
        self.0.accept_all();
    }
}
