//! A vhost-user back end for the unit tests: vhost's own request parser in front of a handler
//! that records every message (with the fds that came along) and answers like virtiofsd.

use std::fs::File;
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use vhost::vhost_user::message::{
    VhostTransferStateDirection, VhostTransferStatePhase, VhostUserConfigFlags, VhostUserInflight,
    VhostUserLog, VhostUserMemoryRegion, VhostUserShMemConfig, VhostUserSharedMsg,
    VhostUserSingleMemoryRegion, VhostUserVringAddrFlags, VhostUserVringState,
};
use vhost::vhost_user::{
    Backend, BackendReqHandler, Error, GpuBackend, Result, VhostUserBackendReqHandlerMut,
    VhostUserProtocolFeatures, VhostUserVirtioFeatures,
};
use vhost::VhostUserMemoryRegionBase;

/// One memory table entry (copied out of the packed wire struct).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Region {
    pub gpa: u64,
    pub size: u64,
    pub user_addr: u64,
    pub offset: u64,
}

/// One request as the back end saw it.
#[derive(Debug)]
pub enum Msg {
    SetOwner,
    GetFeatures,
    SetFeatures(u64),
    GetProtocolFeatures,
    SetProtocolFeatures(u64),
    GetQueueNum,
    SetMemTable(Vec<Region>, Vec<File>),
    SetVringNum(u32, u32),
    /// index, desc, used, avail
    SetVringAddr(u32, u64, u64, u64),
    SetVringBase(u32, u32),
    SetVringCall(u8, Option<File>),
    SetVringKick(u8, Option<File>),
    SetVringEnable(u32, bool),
    Other(&'static str),
}

impl Msg {
    /// The request's name, for order checks.
    pub fn name(&self) -> &'static str {
        match self {
            Msg::SetOwner => "SET_OWNER",
            Msg::GetFeatures => "GET_FEATURES",
            Msg::SetFeatures(_) => "SET_FEATURES",
            Msg::GetProtocolFeatures => "GET_PROTOCOL_FEATURES",
            Msg::SetProtocolFeatures(_) => "SET_PROTOCOL_FEATURES",
            Msg::GetQueueNum => "GET_QUEUE_NUM",
            Msg::SetMemTable(..) => "SET_MEM_TABLE",
            Msg::SetVringNum(..) => "SET_VRING_NUM",
            Msg::SetVringAddr(..) => "SET_VRING_ADDR",
            Msg::SetVringBase(..) => "SET_VRING_BASE",
            Msg::SetVringCall(..) => "SET_VRING_CALL",
            Msg::SetVringKick(..) => "SET_VRING_KICK",
            Msg::SetVringEnable(..) => "SET_VRING_ENABLE",
            Msg::Other(n) => n,
        }
    }
}

/// What the mock offers and what it received.
#[derive(Debug)]
pub struct Recorder {
    pub features: u64,
    pub protocol: VhostUserProtocolFeatures,
    pub queue_num: u64,
    /// Refuse SET_MEM_TABLE, as a back end that cannot map guest memory would.
    pub refuse_mem_table: bool,
    pub log: Vec<Msg>,
}

impl Recorder {
    /// virtiofsd's offer (its `src/vhost_user.rs`), minus what the frontend must not take.
    pub fn like_virtiofsd() -> Self {
        Recorder {
            features: (1 << 32)
                | (1 << 28)
                | (1 << 29)
                | VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits(),
            protocol: VhostUserProtocolFeatures::MQ
                | VhostUserProtocolFeatures::REPLY_ACK
                | VhostUserProtocolFeatures::BACKEND_REQ
                | VhostUserProtocolFeatures::CONFIGURE_MEM_SLOTS,
            queue_num: 2,
            refuse_mem_table: false,
            log: Vec::new(),
        }
    }

    pub fn names(&self) -> Vec<&'static str> {
        self.log.iter().map(Msg::name).collect()
    }

    fn record(&mut self, m: Msg) -> Result<()> {
        self.log.push(m);
        Ok(())
    }

    fn unsupported<T>(&mut self, name: &'static str) -> Result<T> {
        self.log.push(Msg::Other(name));
        Err(Error::InvalidOperation(name))
    }
}

/// Serves `rec` on `sock` in a thread until the frontend goes away.
pub fn serve(sock: UnixStream, rec: Arc<Mutex<Recorder>>) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let mut h = BackendReqHandler::from_stream(sock, rec);
        while h.handle_request().is_ok() {}
    })
}

impl VhostUserBackendReqHandlerMut for Recorder {
    fn set_owner(&mut self) -> Result<()> {
        self.record(Msg::SetOwner)
    }
    fn reset_owner(&mut self) -> Result<()> {
        self.unsupported("RESET_OWNER")
    }
    fn reset_device(&mut self) -> Result<()> {
        self.unsupported("RESET_DEVICE")
    }
    fn get_features(&mut self) -> Result<u64> {
        self.log.push(Msg::GetFeatures);
        Ok(self.features)
    }
    fn set_features(&mut self, features: u64) -> Result<()> {
        self.record(Msg::SetFeatures(features))
    }
    fn set_mem_table(
        &mut self,
        ctx: &[VhostUserMemoryRegion],
        files: Vec<File>,
        _postcopy: Option<bool>,
    ) -> Result<Option<Vec<VhostUserMemoryRegionBase>>> {
        let regions = ctx
            .iter()
            .map(|r| Region {
                gpa: r.guest_phys_addr,
                size: r.memory_size,
                user_addr: r.user_addr,
                offset: r.mmap_offset,
            })
            .collect();
        self.log.push(Msg::SetMemTable(regions, files));
        if self.refuse_mem_table {
            return Err(Error::InvalidParam);
        }
        Ok(None)
    }
    fn set_vring_num(&mut self, index: u32, num: u32) -> Result<()> {
        self.record(Msg::SetVringNum(index, num))
    }
    fn set_vring_addr(
        &mut self,
        index: u32,
        _flags: VhostUserVringAddrFlags,
        descriptor: u64,
        used: u64,
        available: u64,
        _log: u64,
    ) -> Result<()> {
        self.record(Msg::SetVringAddr(index, descriptor, used, available))
    }
    fn set_vring_base(&mut self, index: u32, base: u32) -> Result<()> {
        self.record(Msg::SetVringBase(index, base))
    }
    fn get_vring_base(&mut self, _index: u32) -> Result<VhostUserVringState> {
        self.unsupported("GET_VRING_BASE")
    }
    fn set_vring_kick(&mut self, index: u8, fd: Option<File>) -> Result<()> {
        self.record(Msg::SetVringKick(index, fd))
    }
    fn set_vring_call(&mut self, index: u8, fd: Option<File>) -> Result<()> {
        self.record(Msg::SetVringCall(index, fd))
    }
    fn set_vring_err(&mut self, _index: u8, _fd: Option<File>) -> Result<()> {
        self.unsupported("SET_VRING_ERR")
    }
    fn get_protocol_features(&mut self) -> Result<VhostUserProtocolFeatures> {
        self.log.push(Msg::GetProtocolFeatures);
        Ok(self.protocol)
    }
    fn set_protocol_features(&mut self, features: u64) -> Result<()> {
        self.record(Msg::SetProtocolFeatures(features))
    }
    fn get_queue_num(&mut self) -> Result<u64> {
        self.log.push(Msg::GetQueueNum);
        Ok(self.queue_num)
    }
    fn set_vring_enable(&mut self, index: u32, enable: bool) -> Result<()> {
        self.record(Msg::SetVringEnable(index, enable))
    }
    fn get_config(&mut self, _: u32, _: u32, _: VhostUserConfigFlags) -> Result<Vec<u8>> {
        self.unsupported("GET_CONFIG")
    }
    fn set_config(&mut self, _: u32, _: &[u8], _: VhostUserConfigFlags) -> Result<()> {
        self.unsupported("SET_CONFIG")
    }
    fn set_backend_req_fd(&mut self, _backend: Backend) {
        self.log.push(Msg::Other("SET_BACKEND_REQ_FD"));
    }
    fn set_gpu_socket(&mut self, _gpu_backend: GpuBackend) -> Result<()> {
        self.unsupported("GPU_SET_SOCKET")
    }
    fn get_shared_object(&mut self, _uuid: VhostUserSharedMsg) -> Result<File> {
        self.unsupported("GET_SHARED_OBJECT")
    }
    fn get_inflight_fd(&mut self, _: &VhostUserInflight) -> Result<(VhostUserInflight, File)> {
        self.unsupported("GET_INFLIGHT_FD")
    }
    fn set_inflight_fd(&mut self, _: &VhostUserInflight, _: File) -> Result<()> {
        self.unsupported("SET_INFLIGHT_FD")
    }
    fn get_max_mem_slots(&mut self) -> Result<u64> {
        self.unsupported("GET_MAX_MEM_SLOTS")
    }
    fn add_mem_region(
        &mut self,
        _: &VhostUserSingleMemoryRegion,
        _: File,
        _: Option<bool>,
    ) -> Result<Option<VhostUserMemoryRegionBase>> {
        self.unsupported("ADD_MEM_REG")
    }
    fn remove_mem_region(&mut self, _: &VhostUserSingleMemoryRegion) -> Result<()> {
        self.unsupported("REM_MEM_REG")
    }
    fn set_device_state_fd(
        &mut self,
        _: VhostTransferStateDirection,
        _: VhostTransferStatePhase,
        _: File,
    ) -> Result<Option<File>> {
        self.unsupported("SET_DEVICE_STATE_FD")
    }
    fn check_device_state(&mut self) -> Result<()> {
        self.unsupported("CHECK_DEVICE_STATE")
    }
    fn get_shmem_config(&mut self) -> Result<VhostUserShMemConfig> {
        self.unsupported("GET_SHMEM_CONFIG")
    }
    fn set_log_base(&mut self, _: &VhostUserLog, _: File) -> Result<()> {
        self.unsupported("SET_LOG_BASE")
    }
}
