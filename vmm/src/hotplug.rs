//! Growing a running VM (DESIGN §2 vmm/: hot-plug; vmm/API.md, Growing a running VM): which
//! vCPUs run, the virtio-mem device, and the disk slots, as the API changes them.

use std::fs::File;
use std::io::Write;
use std::sync::{Arc, Mutex};

use event_manager::{SubscriberId, SubscriberOps};

use crate::device_manager::bus::lock;
use crate::devices::blk::{Block, BlockKit};
use crate::devices::mem::{MemStatus, VirtioMem};
use crate::devices::virtio::slot::HotSlot;
use crate::devices::virtio::{IrqTrigger, MmioTransport, VirtioDevice};
use crate::vmm::Vmm;
use crate::vstate::vcpu::{VcpuError, VcpuEvent, VcpuHandle, VcpuState};

/// What a running VM may grow into: how many of its vCPUs are granted (their threads run; the
/// rest wait in `Created` or `Paused`), its virtio-mem device and its disk slots.
#[derive(Debug, Default)]
pub(crate) struct Growth {
    pub(crate) granted: usize,
    pub(crate) mem: Option<Arc<Mutex<VirtioMem>>>,
    pub(crate) disks: Vec<DiskSlot>,
    /// The whole VM is paused (`pause`): a grant then waits for `resume`.
    pub(crate) paused: bool,
}

/// A virtio-mmio window made at boot for a disk attached later.
#[derive(Debug)]
pub(crate) struct DiskSlot {
    pub(crate) addr: u64,
    pub(crate) irq: Arc<IrqTrigger>,
    pub(crate) window: Arc<Mutex<HotSlot>>,
    /// The queue eventfd (registered with KVM for this window) and timer a disk here uses;
    /// `None` while a disk holds them.
    pub(crate) kit: Option<BlockKit>,
    disk: Option<Attached>,
}

impl DiskSlot {
    pub(crate) fn new(
        addr: u64,
        irq: Arc<IrqTrigger>,
        window: Arc<Mutex<HotSlot>>,
        kit: BlockKit,
    ) -> Self {
        DiskSlot {
            addr,
            irq,
            window,
            kit: Some(kit),
            disk: None,
        }
    }
}

#[derive(Debug)]
struct Attached {
    dev: Arc<Mutex<Block>>,
    subscriber: SubscriberId,
    read_only: bool,
}

/// `GET /hotplug`: what the VM has and may reach.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct HotplugStatus {
    pub vcpus: usize,
    pub max_vcpus: usize,
    pub memory: Option<MemStatus>,
    pub disks: Vec<DiskSlotStatus>,
}

/// One disk slot in `GET /hotplug`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct DiskSlotStatus {
    /// Guest-physical start of its MMIO window (what the guest's agent binds).
    pub mmio_base: u64,
    pub attached: bool,
    pub read_only: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum HotplugError {
    #[error("vCPU count {want} is not in 1..={max}")]
    VcpuCount { want: usize, max: usize },
    #[error("this VM has no hot-plug memory region (boot it with one)")]
    NoMemoryRegion,
    #[error("{0}")]
    MemorySize(String),
    #[error("no disk slot {index} (the VM has {slots})")]
    NoSlot { index: usize, slots: usize },
    #[error("disk slot {0} holds a disk already")]
    SlotFull(usize),
    #[error("disk slot {0} is empty")]
    SlotEmpty(usize),
    #[error("the disk image: {0}")]
    Image(std::io::Error),
    #[error(transparent)]
    Vcpu(#[from] VcpuError),
}

/// Disk slot `index` of `disks`.
fn slot_of(disks: &mut [DiskSlot], index: usize) -> Result<&mut DiskSlot, HotplugError> {
    let slots = disks.len();
    disks
        .get_mut(index)
        .ok_or(HotplugError::NoSlot { index, slots })
}

impl Vmm {
    /// The boot's grant: the first `vcpus` vCPUs run; `mem` is the virtio-mem device, if any;
    /// `disks` the empty disk slots.
    pub(crate) fn set_hotplug(
        &mut self,
        vcpus: usize,
        mem: Option<Arc<Mutex<VirtioMem>>>,
        disks: Vec<DiskSlot>,
    ) {
        self.growth.granted = vcpus.min(self.vcpus.len());
        self.growth.mem = mem;
        self.growth.disks = disks;
    }

    /// The granted vCPUs.
    pub(crate) fn granted(&self) -> &[VcpuHandle] {
        &self.vcpus[..self.growth.granted.min(self.vcpus.len())]
    }

    /// Grants the first `count` vCPUs and takes the others away: a newly granted vCPU's
    /// thread runs (the guest may then online it: its INIT/SIPI is served only by a running
    /// thread), a vCPU taken away is paused wherever it is. The guest should have offlined
    /// it first (the shim asks the agent); if not, that CPU just stops, which only the guest
    /// suffers.
    pub fn set_vcpus(&mut self, count: usize) -> Result<(), HotplugError> {
        let max = self.vcpus.len();
        if count == 0 || count > max {
            return Err(HotplugError::VcpuCount { want: count, max });
        }
        let paused = self.growth.paused;
        for (i, v) in self.vcpus.iter_mut().enumerate() {
            let ev = match (i < count, v.state()) {
                (true, VcpuState::Created | VcpuState::Paused) if !paused => VcpuEvent::Resume,
                (false, VcpuState::Running) => VcpuEvent::Pause,
                _ => continue,
            };
            v.send(ev)?;
        }
        self.growth.granted = count;
        Ok(())
    }

    /// Asks the guest to hold `bytes` of the virtio-mem region plugged (a multiple of its
    /// block). The guest's driver gets there at its own pace; `hotplug_status` tells.
    pub fn set_hotplug_memory(&self, bytes: u64) -> Result<(), HotplugError> {
        let mem = self
            .growth
            .mem
            .as_ref()
            .ok_or(HotplugError::NoMemoryRegion)?;
        lock(mem)
            .set_requested(bytes)
            .map_err(HotplugError::MemorySize)
    }

    /// Puts the disk image `file` (a regular file, opened by the caller and passed over the
    /// API socket) in slot `index`; returns the slot's MMIO base, which the guest's agent then
    /// binds. Nothing here may create a file descriptor (seccomp after boot): the slot's
    /// eventfd and timer come from its kit.
    pub fn attach_disk(
        &mut self,
        index: usize,
        file: File,
        read_only: bool,
    ) -> Result<u64, HotplugError> {
        let slot = slot_of(&mut self.growth.disks, index)?;
        let kit = slot.kit.take().ok_or(HotplugError::SlotFull(index))?;
        // A regular file, as its size is the disk's; checked before the kit goes into the
        // disk, so a refused image leaves the slot usable.
        let regular = file.metadata().map(|m| m.is_file());
        if !matches!(regular, Ok(true)) {
            slot.kit = Some(kit);
            return Err(HotplugError::Image(
                regular
                    .err()
                    .unwrap_or_else(|| std::io::Error::other("not a regular file")),
            ));
        }
        let blk = Block::from_file(file, read_only, kit).map_err(HotplugError::Image)?;
        let dev = Arc::new(Mutex::new(blk));
        // A fresh device: no interrupt of the previous one may stay pending.
        slot.irq.ack(u32::MAX);
        lock(&slot.window).fill(MmioTransport::new(
            dev.clone(),
            self.mem.clone(),
            slot.irq.clone(),
        ));
        let addr = slot.addr;
        let subscriber = self.events.add_subscriber(dev.clone());
        slot.disk = Some(Attached {
            dev: dev.clone(),
            subscriber,
            read_only,
        });
        self.devices.push(dev);
        Ok(addr)
    }

    /// Empties slot `index`: the guest reads a placeholder there again (its agent should have
    /// unbound the disk first), the image file is closed and the slot's kit kept for the next.
    pub fn detach_disk(&mut self, index: usize) -> Result<(), HotplugError> {
        let slot = slot_of(&mut self.growth.disks, index)?;
        let Attached {
            dev, subscriber, ..
        } = slot.disk.take().ok_or(HotplugError::SlotEmpty(index))?;
        lock(&slot.window).clear();
        let _ = self.events.remove_subscriber(subscriber);
        let as_dyn: Arc<Mutex<dyn VirtioDevice>> = dev.clone();
        self.devices.retain(|d| !Arc::ptr_eq(d, &as_dyn));
        drop(as_dyn);
        // The window, the event loop and the metrics list held the only other references.
        let kit = Arc::try_unwrap(dev)
            .ok()
            .map(|m| m.into_inner().unwrap_or_else(|p| p.into_inner()))
            .map(Block::into_kit);
        match kit {
            Some(Ok(kit)) => slot.kit = Some(kit),
            // The slot stays empty for good; the guest sees a placeholder either way.
            _ => {
                let _ = writeln!(
                    std::io::stderr(),
                    "hull-vmm: disk slot {index} cannot be reused"
                );
            }
        }
        Ok(())
    }

    pub fn hotplug_status(&self) -> HotplugStatus {
        HotplugStatus {
            vcpus: self.growth.granted,
            max_vcpus: self.vcpus.len(),
            memory: self.growth.mem.as_ref().map(|m| lock(m).status()),
            disks: self
                .growth
                .disks
                .iter()
                .map(|s| DiskSlotStatus {
                    mmio_base: s.addr,
                    attached: s.disk.is_some(),
                    read_only: s.disk.as_ref().is_some_and(|d| d.read_only),
                })
                .collect(),
        }
    }
}
