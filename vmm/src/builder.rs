//! Turns a validated `VmConfig` into a VM whose vCPUs are ready to run: memory, irqchip,
//! legacy devices, virtio-mmio devices (with their irqfds/ioeventfds and command-line entries),
//! the loaded kernel and the MP table.

use std::fs::File;
use std::io::{LineWriter, Write};
use std::os::fd::{FromRawFd, RawFd};
use std::sync::{Arc, Mutex};

use event_manager::{EventManager, MutEventSubscriber, SubscriberOps};
use linux_loader::cmdline::Cmdline;
use vm_memory::{Bytes, GuestAddress};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use crate::arch::{self, boot, mptable, regs::EntryMode};
use crate::config::{ConsoleConfig, VmConfig, PAGE_REPORTING_ORDER};
use crate::device_manager::bus::{Bus, BusDevice};
use crate::device_manager::MmioAllocator;
use crate::devices::balloon::Balloon;
use crate::devices::blk::{Block, BlockKit};
use crate::devices::legacy::serial::{CappedSink, CONSOLE_FILE_MAX_BYTES};
use crate::devices::legacy::{self, BootTimer, SerialConsole, I8042};
use crate::devices::mem::VirtioMem;
use crate::devices::net::Net;
use crate::devices::rng::Rng;
use crate::devices::vhost_user_fs::VhostUserFs;
use crate::devices::virtio::slot::HotSlot;
use crate::devices::virtio::{IrqTrigger, MmioTransport, VirtioDevice};
use crate::devices::vsock::{Muxer, Vsock};
use crate::exit::VmExit;
use crate::hostcheck::HostKvm;
use crate::hotplug::DiskSlot;
use crate::metrics::METRICS;
use crate::vmm::{Subscriber, Vmm};
use crate::vstate::memory::{self, GuestMemoryMmap};
use crate::vstate::vcpu::{Vcpu, VcpuEvent};
use crate::vstate::vm::Vm;

/// Where a raw test payload is loaded and entered (real mode).
pub(crate) const RAW_PAYLOAD_ADDR: u64 = 0x1000;

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error(transparent)]
    Host(#[from] crate::hostcheck::HostKvmError),
    #[error(transparent)]
    Memory(#[from] memory::MemoryError),
    #[error(transparent)]
    Vm(#[from] crate::vstate::vm::VmError),
    #[error(transparent)]
    Vcpu(#[from] crate::vstate::vcpu::VcpuError),
    #[error(transparent)]
    Boot(#[from] boot::BootError),
    #[error(transparent)]
    Mptable(#[from] mptable::MptableError),
    #[error(transparent)]
    Alloc(#[from] crate::device_manager::AllocError),
    #[error(transparent)]
    Bus(#[from] crate::device_manager::bus::BusError),
    #[error(transparent)]
    Vsock(#[from] crate::devices::vsock::muxer::MuxerError),
    #[error(transparent)]
    Fs(#[from] crate::devices::vhost_user_fs::FsError),
    #[error(transparent)]
    Net(#[from] crate::devices::net::NetError),
    #[error("{what} {path}: {source}")]
    File {
        what: &'static str,
        path: String,
        source: std::io::Error,
    },
    #[error("command line: {0}")]
    Cmdline(linux_loader::cmdline::Error),
    #[error("event loop: {0}")]
    EventManager(event_manager::Error),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

fn file_err(
    what: &'static str,
    path: &std::path::Path,
) -> impl FnOnce(std::io::Error) -> BuildError {
    let path = path.display().to_string();
    move |source| BuildError::File { what, path, source }
}

/// Takes over `fd`, an open file the caller handed over for the console.
fn console_fd(fd: RawFd) -> Result<File, BuildError> {
    let bad = |why: &str| {
        BuildError::Config(crate::config::ConfigError::Invalid(format!(
            "console fd {fd}: {why}"
        )))
    };
    if fd <= 2 {
        return Err(bad("is stdio"));
    }
    // SAFETY: F_GETFD takes no pointer; it only tells whether `fd` is open.
    if unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
        return Err(bad("is not open"));
    }
    // SAFETY: `fd` is open (checked above) and the caller passed it for the console alone
    // (vmm/API.md); validation refuses a NIC on the same fd, so nothing else owns or closes it.
    Ok(unsafe { File::from_raw_fd(fd) })
}

fn console_sink(c: &ConsoleConfig) -> Result<Box<dyn Write + Send>, BuildError> {
    let capped = |f: File| -> Box<dyn Write + Send> {
        Box::new(CappedSink::new(
            Box::new(LineWriter::new(f)),
            CONSOLE_FILE_MAX_BYTES,
            &METRICS.guest.console_dropped_bytes,
        ))
    };
    Ok(match c {
        ConsoleConfig::Stdout => Box::new(std::io::stdout()),
        ConsoleConfig::Off => Box::new(std::io::sink()),
        ConsoleConfig::File(p) => {
            capped(File::create(p).map_err(file_err("cannot create console file", p))?)
        }
        ConsoleConfig::Fd(fd) => capped(console_fd(*fd)?),
    })
}

/// Everything being assembled, so helpers take one argument.
struct Parts {
    vm: Vm,
    mem: GuestMemoryMmap,
    mmio_bus: Bus,
    alloc: MmioAllocator,
    cmdline: Cmdline,
    events: EventManager<Subscriber>,
    devices: Vec<Arc<Mutex<dyn VirtioDevice>>>,
}

impl Parts {
    /// Puts a virtio device on the MMIO bus with its irqfd and ioeventfds and the event loop;
    /// returns it for a caller that keeps a typed handle (the API resizes virtio-mem).
    fn attach<D>(&mut self, dev: D) -> Result<Arc<Mutex<D>>, BuildError>
    where
        D: VirtioDevice + MutEventSubscriber + Send + 'static,
    {
        let slot = self.alloc.allocate()?;
        let irq_evt = EventFd::new(EFD_NONBLOCK)?;
        self.vm.register_irqfd(&irq_evt, slot.irq)?;
        for (i, evt) in dev.queue_events().iter().enumerate() {
            let idx = u32::try_from(i).unwrap_or(u32::MAX);
            self.vm.register_mmio_ioevent(evt, slot.addr + 0x50, idx)?;
        }
        let dev = Arc::new(Mutex::new(dev));
        let transport = MmioTransport::new(
            dev.clone(),
            self.mem.clone(),
            Arc::new(IrqTrigger::new(irq_evt)),
        );
        self.mmio_bus
            .insert(slot.addr, slot.len, Arc::new(Mutex::new(transport)))?;
        self.cmdline
            .add_virtio_mmio_device(slot.len, GuestAddress(slot.addr), slot.irq, None)
            .map_err(BuildError::Cmdline)?;
        self.devices.push(dev.clone());
        self.events.add_subscriber(dev.clone());
        Ok(dev)
    }
}

impl Parts {
    /// An empty window for a disk attached while the VM runs (`hotplug.rs`): its IRQ, its
    /// queue's notify eventfd and its command-line entry are made now, as nothing may be
    /// created once the VM runs.
    fn disk_slot(&mut self) -> Result<DiskSlot, BuildError> {
        let slot = self.alloc.allocate()?;
        let irq_evt = EventFd::new(EFD_NONBLOCK)?;
        self.vm.register_irqfd(&irq_evt, slot.irq)?;
        let kit = BlockKit::new()?;
        self.vm
            .register_mmio_ioevent(kit.queue_event(), slot.addr + 0x50, 0)?;
        let window = Arc::new(Mutex::new(HotSlot::default()));
        self.mmio_bus.insert(slot.addr, slot.len, window.clone())?;
        self.cmdline
            .add_virtio_mmio_device(slot.len, GuestAddress(slot.addr), slot.irq, None)
            .map_err(BuildError::Cmdline)?;
        Ok(DiskSlot::new(
            slot.addr,
            Arc::new(IrqTrigger::new(irq_evt)),
            window,
            kit,
        ))
    }
}

fn io_bus(vm: &Vm, config: &VmConfig, exit: &Arc<VmExit>) -> Result<Bus, BuildError> {
    let mut bus = Bus::new();
    let serial_irq = EventFd::new(EFD_NONBLOCK)?;
    vm.register_irqfd(&serial_irq, arch::SERIAL_IRQ)?;
    let serial: Arc<Mutex<dyn BusDevice>> = Arc::new(Mutex::new(SerialConsole::new(
        serial_irq,
        console_sink(&config.console)?,
        exit.clone(),
    )));
    bus.insert(legacy::SERIAL_PORT, legacy::SERIAL_LEN, serial)?;
    let kbd_irq = EventFd::new(EFD_NONBLOCK)?;
    vm.register_irqfd(&kbd_irq, arch::KBD_IRQ)?;
    bus.insert(
        legacy::I8042_PORT,
        legacy::I8042_LEN,
        Arc::new(Mutex::new(I8042::new(exit.clone(), Some(kbd_irq)))),
    )?;
    bus.insert(
        legacy::BOOT_TIMER_PORT,
        legacy::BOOT_TIMER_LEN,
        Arc::new(Mutex::new(BootTimer::new(config.boot_timer))),
    )?;
    Ok(bus)
}

/// Loads the kernel (or raw payload) and writes the boot structures; returns the entry.
fn load(parts: &Parts, config: &VmConfig) -> Result<EntryMode, BuildError> {
    if let Some(p) = &config.raw_payload {
        let code = std::fs::read(p).map_err(file_err("cannot read payload", p))?;
        parts
            .mem
            .write_slice(&code, GuestAddress(RAW_PAYLOAD_ADDR))
            .map_err(|e| BuildError::Io(std::io::Error::other(e.to_string())))?;
        return Ok(if config.raw_payload_32bit {
            EntryMode::Pvh {
                ip: RAW_PAYLOAD_ADDR,
                start_info: 0,
            }
        } else {
            EntryMode::RealMode {
                ip: RAW_PAYLOAD_ADDR,
            }
        });
    }
    let kpath = config
        .kernel
        .as_ref()
        .ok_or_else(|| crate::config::ConfigError::Invalid("a kernel is required".into()))?;
    let mut kf = File::open(kpath).map_err(file_err("cannot open kernel", kpath))?;
    let kernel = boot::load_kernel(&parts.mem, &mut kf)?;
    let initrd = match &config.initrd {
        Some(p) => {
            let mut f = File::open(p).map_err(file_err("cannot open initrd", p))?;
            Some(boot::load_initrd(&parts.mem, &mut f, kernel.kernel_end)?)
        }
        None => None,
    };
    let mode = boot::configure_boot(&parts.mem, &kernel, &parts.cmdline, initrd)?;
    METRICS.boot.kernel_loaded_us.mark();
    Ok(mode)
}

/// Builds the VM described by `config` and starts its vCPUs.
pub fn build_and_boot(config: &VmConfig, host: HostKvm) -> Result<Vmm, BuildError> {
    config.validate()?;
    if config.raw_payload.is_none() && !config.allow_software_kvm {
        host.check_linux_guest()?;
    }
    let hotplug_bytes = u64::from(config.hotplug.memory_mib) << 20;
    let mem = memory::create_with_hotplug(u64::from(config.mem_mib) << 20, hotplug_bytes)?;
    let max_vcpus = config.hotplug.max_vcpus_for(config.vcpus);
    let vm = Vm::new()?;
    vm.register_memory(&mem)?;
    vm.setup_irqchip()?;
    METRICS.boot.vm_created_us.mark();
    let exit = Arc::new(VmExit::new()?);

    let mut cmdline = Cmdline::new(arch::CMDLINE_MAX_SIZE).map_err(BuildError::Cmdline)?;
    if config.free_page_reporting {
        // Report free blocks from 128 KiB up. Linux's default here is 4 MiB (MAX_PAGE_ORDER,
        // as hull's guest has neither THP nor hugetlbfs), and neither 4 MiB nor 2 MiB free
        // blocks exist in a guest that just booted: in the lab, order 9 gave back nothing
        // after boot, order 5 the 6 MiB that 2 MiB host pages had added to a 30 MiB guest
        // (vmm/API.md). Before the caller's command line, which may set another order.
        let (key, value) = PAGE_REPORTING_ORDER;
        cmdline.insert(key, value).map_err(BuildError::Cmdline)?;
    }
    if config.raw_payload.is_none() {
        // Where the guest kernel keeps its crash record, read back when it resets: how a
        // panic of a guest without a console is told from a reboot (`crate::pstore`).
        for (key, value) in crate::pstore::cmdline_params() {
            cmdline.insert(key, &value).map_err(BuildError::Cmdline)?;
        }
        exit.read_crash_record_from(mem.clone());
    }
    if max_vcpus > config.vcpus {
        // The MP table declares `max_vcpus`; the guest brings up only the granted ones at
        // boot and onlines the others when the host has started their threads (`Vmm::set_vcpus`).
        cmdline
            .insert("maxcpus", config.vcpus.to_string().as_str())
            .map_err(BuildError::Cmdline)?;
    }
    cmdline
        .insert_str(&config.cmdline)
        .map_err(BuildError::Cmdline)?;
    let mut parts = Parts {
        vm,
        mem,
        mmio_bus: Bus::new(),
        alloc: MmioAllocator::default(),
        cmdline,
        events: EventManager::new().map_err(BuildError::EventManager)?,
        devices: Vec::new(),
    };
    let io_bus = io_bus(&parts.vm, config, &exit)?;
    if let Some(v) = &config.vsock {
        let mux = Muxer::new(u64::from(v.cid), &v.uds)?;
        parts.attach(Vsock::new(u64::from(v.cid), mux)?)?;
    }
    for d in &config.disks {
        let mut blk =
            Block::new(&d.path, d.read_only).map_err(file_err("cannot open disk", &d.path))?;
        blk.set_limit(d.limit);
        parts.attach(blk)?;
    }
    // The back end (virtiofsd) must already listen: a VM whose share is missing is useless.
    for f in &config.fs {
        parts.attach(VhostUserFs::connect(&f.socket, &f.tag, exit.clone())?)?;
    }
    if config.rng {
        parts.attach(Rng::new()?)?;
    }
    if config.free_page_reporting {
        parts.attach(Balloon::new()?)?;
    }
    let hotplug_mem = if hotplug_bytes > 0 {
        Some(parts.attach(VirtioMem::new(arch::HOTPLUG_START, hotplug_bytes)?)?)
    } else {
        None
    };
    // NICs come last so the devices before them keep their MMIO slots with or without one.
    for n in &config.net {
        parts.attach(Net::from_config(n)?)?;
    }
    // Disk slots come after everything, so the devices before them keep their MMIO slots
    // with or without them.
    let disk_slots = (0..config.hotplug.disk_slots)
        .map(|_| parts.disk_slot())
        .collect::<Result<Vec<_>, _>>()?;
    let entry = load(&parts, config)?;
    if config.raw_payload.is_none() {
        mptable::setup(&parts.mem, max_vcpus)?;
    }

    let io_bus = Arc::new(io_bus);
    let mmio_bus = Arc::new(std::mem::take(&mut parts.mmio_bus));
    let supported = parts.vm.supported_cpuid()?;
    let mut handles = Vec::with_capacity(usize::from(max_vcpus));
    for id in 0..max_vcpus {
        let mut vcpu = Vcpu::new(
            &parts.vm,
            id,
            io_bus.clone(),
            mmio_bus.clone(),
            exit.clone(),
        )?;
        vcpu.configure(
            &supported,
            max_vcpus,
            &parts.mem,
            (id == 0).then_some(entry),
        )?;
        handles.push(vcpu.start()?);
    }
    // Only the granted vCPUs run; the others' threads wait in `Created` for `set_vcpus`.
    for h in handles.iter_mut().take(usize::from(config.vcpus)) {
        h.send(VcpuEvent::Resume)?;
    }
    let mut vmm = Vmm::new(
        parts.vm,
        parts.mem,
        handles,
        exit,
        parts.events,
        parts.devices,
    );
    vmm.set_hotplug(usize::from(config.vcpus), hotplug_mem, disk_slots);
    Ok(vmm)
}
