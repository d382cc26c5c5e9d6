//! The vhost-user conversation with the virtio-fs back end (virtiofsd): ownership and feature
//! negotiation when the VM is built, the memory table and the vrings when the guest driver
//! starts the device, and noticing when the back end goes away.

use std::os::fd::AsRawFd;
use std::path::Path;

use nix::errno::Errno;
use nix::sys::socket::{recv, MsgFlags};
use vhost::vhost_user::message::VhostUserHeaderFlag;
use vhost::vhost_user::{
    Frontend, VhostUserFrontend, VhostUserProtocolFeatures, VhostUserVirtioFeatures,
};
use vhost::{VhostBackend, VhostUserMemoryRegionInfo, VringConfigData};
use vm_memory::GuestMemoryBackend;
use vmm_sys_util::eventfd::EventFd;

use crate::vstate::memory::GuestMemoryMmap;

/// hiprio + one request queue (virtio spec 5.11.2).
pub const NUM_QUEUES: usize = 2;
/// VHOST_USER_F_PROTOCOL_FEATURES: a vhost-user bit in the features word, never a guest one.
const PROTOCOL_FEATURES: u64 = VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits();

#[derive(Debug, thiserror::Error)]
pub enum FsError {
    // The cause is in the message and not a `source`, so chain printers do not repeat it.
    #[error("cannot connect to the virtio-fs back end at {path}: {cause}")]
    Connect { path: String, cause: vhost::Error },
    #[error("virtio-fs back end at {path}: {op} failed: {cause}")]
    Protocol {
        path: String,
        op: &'static str,
        cause: vhost::Error,
    },
    #[error("virtio-fs back end at {path} serves {got} queues; the device needs {NUM_QUEUES}")]
    TooFewQueues { path: String, got: u64 },
    #[error("virtio-fs back end at {path} does not offer VIRTIO_F_VERSION_1")]
    NoVersion1 { path: String },
    #[error("virtio-fs tag {0:?} must be 1..=36 bytes")]
    BadTag(String),
    #[error("cannot create the virtio-fs device: {0}")]
    Io(#[from] std::io::Error),
}

/// Where one vring lives, checked against guest memory when the driver started the device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VringPlan {
    pub index: usize,
    pub size: u16,
    pub max_size: u16,
    /// Host virtual addresses: vhost-user speaks in the frontend's addresses and the back end
    /// translates them through the memory table.
    pub desc: u64,
    pub avail: u64,
    pub used: u64,
}

/// One connected, negotiated back end.
pub struct Backend {
    fe: Frontend,
    path: String,
    /// What the back end offered in GET_FEATURES.
    features: u64,
    /// What we enabled with SET_PROTOCOL_FEATURES; None when the back end has none.
    protocol: Option<VhostUserProtocolFeatures>,
}

impl std::fmt::Debug for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Backend")
            .field("path", &self.path)
            .field("features", &format_args!("{:#x}", self.features))
            .field("protocol", &self.protocol)
            .finish()
    }
}

impl Backend {
    /// Connects to the back end's socket and negotiates (build time).
    pub fn connect(path: &Path) -> Result<Self, FsError> {
        let shown = path.display().to_string();
        // vhost retries a refused connection for half a second: a back end started just before
        // may have made its socket file but not be listening yet.
        let fe = Frontend::connect(path, NUM_QUEUES as u64).map_err(|cause| FsError::Connect {
            path: shown.clone(),
            cause,
        })?;
        Self::negotiate(fe, shown)
    }

    /// SET_OWNER, GET_FEATURES and, when offered, the protocol features. Only MQ (to check
    /// the queue count) and REPLY_ACK (so every later message is confirmed and a back end
    /// that cannot map guest memory fails activation loudly) are taken: hull needs no back
    /// end requests, config space or inflight tracking from virtiofsd.
    pub fn negotiate(mut fe: Frontend, path: String) -> Result<Self, FsError> {
        let err = |op| {
            let path = path.clone();
            move |cause| FsError::Protocol { path, op, cause }
        };
        fe.set_owner().map_err(err("SET_OWNER"))?;
        let features = fe.get_features().map_err(err("GET_FEATURES"))?;
        if features & crate::devices::virtio::VIRTIO_F_VERSION_1 == 0 {
            return Err(FsError::NoVersion1 { path });
        }
        let mut protocol = None;
        if features & PROTOCOL_FEATURES != 0 {
            let offered = fe
                .get_protocol_features()
                .map_err(err("GET_PROTOCOL_FEATURES"))?;
            let wanted =
                offered & (VhostUserProtocolFeatures::MQ | VhostUserProtocolFeatures::REPLY_ACK);
            fe.set_protocol_features(wanted)
                .map_err(err("SET_PROTOCOL_FEATURES"))?;
            if wanted.contains(VhostUserProtocolFeatures::MQ) {
                let got = fe.get_queue_num().map_err(err("GET_QUEUE_NUM"))?;
                if got < NUM_QUEUES as u64 {
                    return Err(FsError::TooFewQueues { path, got });
                }
            }
            // From here on only SET_* messages follow, which the back end then acknowledges.
            if wanted.contains(VhostUserProtocolFeatures::REPLY_ACK) {
                fe.set_hdr_flags(VhostUserHeaderFlag::NEED_REPLY);
            }
            protocol = Some(wanted);
        }
        Ok(Backend {
            fe,
            path,
            features,
            protocol,
        })
    }

    pub fn features(&self) -> u64 {
        self.features
    }

    pub fn protocol(&self) -> Option<VhostUserProtocolFeatures> {
        self.protocol
    }

    pub fn path(&self) -> &str {
        &self.path
    }

    /// Hands the back end everything it needs to serve the queues itself: the features the
    /// driver acked, every guest memory region (fd + offset of the memfd), and per vring its
    /// size, host addresses, start index, the device's irqfd and the queue's KVM ioeventfd.
    pub fn start(
        &mut self,
        acked: u64,
        mem: &GuestMemoryMmap,
        vrings: &[VringPlan],
        call: &EventFd,
        kicks: &[EventFd],
    ) -> Result<(), FsError> {
        let path = self.path.clone();
        let err = |op| {
            let path = path.clone();
            move |cause| FsError::Protocol { path, op, cause }
        };
        let bit30 = if self.protocol.is_some() {
            PROTOCOL_FEATURES
        } else {
            0
        };
        self.fe
            .set_features((acked & self.features) | bit30)
            .map_err(err("SET_FEATURES"))?;
        let regions = mem
            .iter()
            .map(VhostUserMemoryRegionInfo::from_guest_region)
            .collect::<Result<Vec<_>, _>>()
            .map_err(err("describing guest memory"))?;
        self.fe
            .set_mem_table(&regions)
            .map_err(err("SET_MEM_TABLE"))?;
        for v in vrings {
            let i = v.index;
            let kick = kicks.get(i).ok_or_else(|| FsError::Protocol {
                path: path.clone(),
                op: "SET_VRING_KICK",
                cause: vhost::Error::InvalidQueue,
            })?;
            let addrs = VringConfigData {
                queue_max_size: v.max_size,
                queue_size: v.size,
                flags: 0,
                desc_table_addr: v.desc,
                used_ring_addr: v.used,
                avail_ring_addr: v.avail,
                log_addr: None,
            };
            self.fe
                .set_vring_num(i, v.size)
                .map_err(err("SET_VRING_NUM"))?;
            self.fe
                .set_vring_addr(i, &addrs)
                .map_err(err("SET_VRING_ADDR"))?;
            self.fe
                .set_vring_base(i, 0)
                .map_err(err("SET_VRING_BASE"))?;
            self.fe
                .set_vring_call(i, call)
                .map_err(err("SET_VRING_CALL"))?;
            self.fe
                .set_vring_kick(i, kick)
                .map_err(err("SET_VRING_KICK"))?;
            // Without protocol features a ring runs as soon as it is kicked (vhost-user spec,
            // "Ring states"); with them it starts disabled.
            if self.protocol.is_some() {
                self.fe
                    .set_vring_enable(i, true)
                    .map_err(err("SET_VRING_ENABLE"))?;
            }
        }
        Ok(())
    }

    /// The socket the event loop watches.
    pub fn socket_fd(&self) -> std::os::fd::RawFd {
        self.fe.as_raw_fd()
    }

    /// Why the connection is unusable, if it is. The back end never writes unless asked (no
    /// BACKEND_REQ channel is negotiated), so a readable socket between requests means the
    /// peer closed it or broke the protocol.
    pub fn broken(&self) -> Option<String> {
        let mut b = [0u8; 1];
        match recv(
            self.socket_fd(),
            &mut b,
            MsgFlags::MSG_PEEK | MsgFlags::MSG_DONTWAIT,
        ) {
            Ok(0) => Some("closed the connection".into()),
            Ok(_) => Some("sent a message nobody asked for".into()),
            Err(Errno::EAGAIN | Errno::EINTR) => None,
            Err(e) => Some(format!("connection failed: {e}")),
        }
    }
}
