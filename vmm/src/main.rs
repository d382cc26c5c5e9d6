//! `hull-vmm`: boot one microVM from command-line flags (or, with `--api-sock`, from API
//! requests) and exit with the VM: 0 after a guest reboot/poweroff or SIGTERM, 1 on error,
//! 3 when the guest crashed (a vCPU triple-faulted); see `exit.rs` and vmm/API.md.

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use std::os::fd::AsRawFd;
use std::sync::{Arc, Mutex};

use hull_vmm::api::server::{serve_pending, ApiServer, ApiSubscriber};
use hull_vmm::api::{Controller, VmmAction};
use hull_vmm::config::{
    ConsoleConfig, DiskConfig, FsConfig, NetConfig, VmConfig, VsockConfig, DEFAULT_CMDLINE,
};
use hull_vmm::exit::ExitReason;
use hull_vmm::metrics::METRICS;
use hull_vmm::{metrics, seccomp, vmm};
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};

#[derive(Debug, Parser)]
#[command(name = "hull-vmm", version, about = "hull's KVM microVM monitor")]
struct Args {
    /// Guest kernel: ELF vmlinux (PVH entry preferred) or bzImage.
    #[arg(long)]
    kernel: Option<PathBuf>,
    #[arg(long)]
    initrd: Option<PathBuf>,
    #[arg(long, default_value = DEFAULT_CMDLINE)]
    cmdline: String,
    /// Appended to --cmdline (the shim adds an operator's kernel_params to the default).
    #[arg(long)]
    cmdline_append: Option<String>,
    #[arg(long, default_value_t = 1)]
    vcpus: u8,
    #[arg(long, default_value_t = 128)]
    mem_mib: u32,
    /// Hybrid vsock host socket.
    #[arg(long)]
    vsock_uds: Option<PathBuf>,
    #[arg(long, default_value_t = 3)]
    cid: u32,
    /// Raw disk image, PATH[,ro]; repeatable.
    #[arg(long)]
    disk: Vec<DiskConfig>,
    /// virtio-fs served by a vhost-user back end (virtiofsd) listening on SOCKET; the guest
    /// mounts it by TAG (default "hull"). SOCKET[,tag=TAG]; repeatable.
    #[arg(long)]
    fs: Vec<FsConfig>,
    /// virtio-net NIC on a tap with virtio-net headers: fd=N (an open tap hull-vmm takes
    /// over) or tap=NAME (opened by name, for manual runs), mac=MAC, optional mtu=N
    /// (default 1500). fd=N|tap=NAME,mac=MAC[,mtu=N]; repeatable.
    #[arg(long)]
    net: Vec<NetConfig>,
    /// FILE|stdout|off
    #[arg(long, default_value = "stdout")]
    console: ConsoleConfig,
    /// Log when the guest agent reports ready (port 0x3f0).
    #[arg(long)]
    boot_timer: bool,
    /// No virtio-rng device.
    #[arg(long)]
    no_rng: bool,
    /// Boot anyway on a software-KVM (kvm_pvm) host.
    #[arg(long)]
    allow_software_kvm: bool,
    /// Test payload: flat real-mode code loaded and entered at 0x1000 instead of a kernel.
    #[arg(long, conflicts_with = "kernel")]
    raw_payload: Option<PathBuf>,
    /// Enter the raw payload in 32-bit flat protected mode.
    #[arg(long, requires = "raw_payload")]
    raw_payload_32bit: bool,
    /// Print metrics as JSON on stderr when the VM ends.
    #[arg(long)]
    metrics_on_exit: bool,
    /// API socket (see vmm/API.md). With it, the flags above only pre-configure the VM and
    /// the VM boots on the API's `boot` action.
    #[arg(long)]
    api_sock: Option<PathBuf>,
    /// Do not install seccomp filters (debugging only).
    #[arg(long)]
    no_seccomp: bool,
}

impl Args {
    fn vm_config(&self) -> VmConfig {
        VmConfig {
            kernel: self.kernel.clone(),
            initrd: self.initrd.clone(),
            cmdline: match &self.cmdline_append {
                Some(extra) if !extra.trim().is_empty() => {
                    format!("{} {}", self.cmdline, extra.trim())
                }
                _ => self.cmdline.clone(),
            },
            vcpus: self.vcpus,
            mem_mib: self.mem_mib,
            vsock: self
                .vsock_uds
                .clone()
                .map(|uds| VsockConfig { uds, cid: self.cid }),
            disks: self.disk.clone(),
            fs: self.fs.clone(),
            net: self.net.clone(),
            rng: !self.no_rng,
            console: self.console.clone(),
            boot_timer: self.boot_timer,
            allow_software_kvm: self.allow_software_kvm,
            raw_payload: self.raw_payload.clone(),
            raw_payload_32bit: self.raw_payload_32bit,
        }
    }
}

/// Waits for API requests (or SIGTERM) until the VM boots; None = leave without a VM.
fn wait_for_boot(
    api: &ApiServer,
    ctl: &mut Controller,
    sigfd: &nix::sys::signalfd::SignalFd,
) -> anyhow::Result<Option<()>> {
    let epoll = Epoll::new()?;
    epoll.ctl(
        ControlOperation::Add,
        api.listener_fd(),
        EpollEvent::new(EventSet::IN, 0),
    )?;
    epoll.ctl(
        ControlOperation::Add,
        sigfd.as_raw_fd(),
        EpollEvent::new(EventSet::IN, 1),
    )?;
    let pending = api.pending();
    let mut evs = [EpollEvent::default(); 2];
    loop {
        let n = epoll.wait(-1, &mut evs)?;
        if evs[..n].iter().any(|e| e.data() == 1) {
            return Ok(None);
        }
        api.accept_all();
        if serve_pending(&pending, ctl) {
            return Ok(None);
        }
        if ctl.vmm_mut().is_some() {
            return Ok(Some(()));
        }
    }
}

fn run() -> anyhow::Result<i32> {
    let args = Args::parse();
    let sigfd = vmm::block_termination_signals().context("cannot block SIGTERM/SIGINT")?;
    seccomp::enable(!args.no_seccomp);
    let preset = (args.kernel.is_some() || args.raw_payload.is_some()).then(|| args.vm_config());
    let mut ctl = Controller::new(None, preset);
    let api = match &args.api_sock {
        Some(p) => {
            let s =
                ApiServer::bind(p).with_context(|| format!("cannot listen on {}", p.display()))?;
            METRICS.boot.api_ready_us.mark();
            Some(s)
        }
        None => None,
    };
    // From here on the process runs under a filter: first the pre-boot one (waiting for the
    // API, building the VM), then each thread adds its own narrower one.
    seccomp::apply_for_thread(seccomp::ThreadKind::PreBoot);
    match &api {
        Some(api) => {
            if wait_for_boot(api, &mut ctl, &sigfd)?.is_none() {
                return Ok(0);
            }
        }
        None => {
            ctl.handle(VmmAction::Boot)?;
        }
    }
    let vmm = ctl.vmm_mut().context("no VM")?;
    vmm.watch_signals(sigfd);
    let pending = api.map(|api| {
        let p = api.pending();
        vmm.add_subscriber(Arc::new(Mutex::new(ApiSubscriber(api))));
        p
    });
    seccomp::apply_for_thread(seccomp::ThreadKind::Vmm);
    let reason = loop {
        let r = ctl.vmm_mut().and_then(|v| v.run_once(-1));
        if let Some(p) = &pending {
            serve_pending(p, &mut ctl);
        }
        if let Some(r) = r.or_else(|| ctl.exit_reason()) {
            break r;
        }
    };
    let vmm = ctl.take_vmm().context("no VM")?;
    if args.metrics_on_exit {
        eprintln!("{}", vmm.metrics());
    }
    vmm.shutdown();
    // One line naming the reason and the status, so a caller's log tells a guest request, a
    // guest crash and a VMM failure apart (a crashed vCPU logged its registers before).
    let status = reason.status();
    match &reason {
        ExitReason::Error(e) => eprintln!("hull-vmm: VM ended: error: {e} (exit status {status})"),
        r => eprintln!("hull-vmm: VM ended: {r:?} (exit status {status})"),
    }
    Ok(status)
}

fn main() {
    metrics::mark_exec();
    hull_vmm::vstate::memory::limit_host_heap();
    match run() {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("hull-vmm: {e:#}");
            std::process::exit(1);
        }
    }
}
