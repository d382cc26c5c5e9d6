//! Host listeners for guest-initiated hybrid-vsock connections (`<uds>_P`), shared by the
//! vsock targets. A target makes its set once per process: the listeners outlive every
//! iteration's muxer.

use std::os::unix::net::UnixListener;
use std::path::PathBuf;

use hull_contract::vsock::guest_initiated_path;

#[derive(Debug)]
pub struct VsockHost {
    _dir: tempfile::TempDir,
    /// The muxer's host socket path (`Muxer::new(cid, &uds)`).
    pub uds: PathBuf,
    /// One non-blocking listener per port, in the order given.
    pub listeners: Vec<UnixListener>,
}

impl VsockHost {
    pub fn new(ports: &[u32]) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let uds = dir.path().join("vsock");
        let listeners = ports
            .iter()
            .map(|p| {
                let l = UnixListener::bind(guest_initiated_path(&uds, *p)).expect("listen");
                l.set_nonblocking(true).expect("nonblocking");
                l
            })
            .collect();
        VsockHost {
            _dir: dir,
            uds,
            listeners,
        }
    }
}
