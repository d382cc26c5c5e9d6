//! `hull-vmm`: boot one microVM from command-line flags (or, with `--api-sock`, from API
//! requests) and exit with the VM: 0 after a guest reboot/poweroff or SIGTERM, 1 on error,
//! 3 when the guest crashed (a vCPU triple-faulted); see `exit.rs` and vmm/API.md.

use std::os::fd::AsRawFd;
use std::sync::{Arc, Mutex};

use anyhow::Context;
use clap::Parser;
use hull_vmm::api::server::{serve_pending, ApiServer, ApiSubscriber};
use hull_vmm::api::{Controller, VmmAction};
use hull_vmm::cli::Args;
use hull_vmm::exit::ExitReason;
use hull_vmm::metrics::METRICS;
use hull_vmm::{metrics, seccomp, vmm};
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};

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
    // First, before the arguments are even parsed: as PID 1 of a pid namespace (the shim's
    // jail), a SIGTERM that arrives while its action is still the default is discarded by the
    // kernel, not fatal; blocked, it waits in the signalfd. (The kernel lets a signal from an
    // ancestor namespace reach a namespace's init only when the init catches or blocks it.)
    let sigfd = vmm::block_termination_signals().context("cannot block SIGTERM/SIGINT")?;
    vmm::install_crash_handlers().context("cannot install the SIGABRT/SIGXFSZ dispositions")?;
    let args = Args::parse();
    seccomp::enable(!args.no_seccomp);
    let mut ctl = Controller::new(None, args.vm_config());
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
        Some(api) if !args.boot => {
            if wait_for_boot(api, &mut ctl, &sigfd)?.is_none() {
                return Ok(0);
            }
        }
        _ => {
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
