//! `boot`: the real guest in the lab, phase by phase. Each boot is timed on the host clock:
//! exec → first `KVM_RUN` (the kernel's entry: no firmware) → /init started → agent ready
//! (the two boot-timer marks of `hull_contract::boot_timer`) → agent port accepting → health
//! reply. Optional in the same run, alternating so the lab's drift hits all alike:
//! - a baseline hull (another hull-vmm, initrd or command line): an A/B of one change;
//! - QEMU `-M microvm` booting the same kernel and initrd, as the reference;
//! - one more boot with `initcall_debug`, whose kernel log names the costliest initcalls.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use hull_contract::guest_env;
use hull_contract::vmm_args::VmmArgs;
use hull_contract::vsock::AGENT_PORT;

use crate::initcalls;
use crate::{
    header, hybrid_accepts, ms, pct, row, rss_kib, stop, vsock_accepts, wait_until, GUEST_MIB,
};

/// One way to boot hull: the VMM binary, the initrd and the kernel command line.
#[derive(Debug, Clone)]
pub(crate) struct Variant {
    pub vmm: PathBuf,
    pub initrd: PathBuf,
    pub cmdline: String,
}

/// What every boot of one `boot` invocation shares.
#[derive(Debug)]
pub(crate) struct Setup<'a> {
    pub ctl: &'a Path,
    pub kernel: &'a Path,
    pub hull: Variant,
    /// Booted alternately with `hull`, for the ratio of one change.
    pub baseline: Option<Variant>,
    pub qemu: Option<&'a Path>,
    pub vcpus: u8,
    pub dir: &'a Path,
    pub timeout: Duration,
    /// Where to keep logs (None: the scratch directory, removed at the end).
    pub out: Option<&'a Path>,
    /// Print this many of the costliest initcalls from one `initcall_debug` boot (0: none).
    pub initcalls: usize,
    /// The kernel's System.map, to name initcalls (hull's kernel has no kallsyms).
    pub system_map: Option<&'a Path>,
}

impl Setup<'_> {
    fn log_path(&self, name: &str) -> PathBuf {
        self.out.unwrap_or(self.dir).join(name)
    }

    fn log(&self, name: &str) -> Stdio {
        match std::fs::File::create(self.log_path(name)) {
            Ok(f) => f.into(),
            Err(_) => Stdio::null(),
        }
    }
}

/// One hull boot, in ms since exec; NaN where the VMM did not see the mark (an older agent
/// writes no /init mark).
#[derive(Debug, Default)]
struct HullRun {
    main: f64,
    api_or_vm: f64,
    first_kvm_run: f64,
    init: f64,
    boot_timer: f64,
    port: f64,
    health: f64,
    rss_kib: f64,
    anon_kib: f64,
}

/// Anonymous (private, per-process) resident memory of `pid` in KiB.
fn anon_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            let l = s.lines().find(|l| l.starts_with("RssAnon:"))?;
            l.split_whitespace().nth(1)?.parse().ok()
        })
        .unwrap_or(0)
}

/// The tag of the first boot of this tree's hull (`boot`'s loop names them `hull-{i}`).
const FIRST_HULL_TAG: &str = "hull-0";

/// Boots `v` once to a health reply; with `console_line`, the guest must also have printed
/// that line on its console (waited for within the same deadline, before the health check).
fn hull_boot(
    s: &Setup,
    v: &Variant,
    tag: &str,
    console_line: Option<&str>,
) -> Result<HullRun, String> {
    let uds = s.dir.join("v.sock");
    let t0 = Instant::now();
    let deadline = t0 + s.timeout;
    let args = VmmArgs {
        initrd: Some(v.initrd.clone()),
        cmdline: Some(v.cmdline.clone()),
        vsock_uds: Some(uds.clone()),
        boot_timer: true,
        metrics_on_exit: true,
        ..VmmArgs::new(s.kernel, s.vcpus, GUEST_MIB)
    };
    let mut child = Command::new(&v.vmm)
        .args(args.to_args())
        .stdout(s.log(&format!("{tag}-console.log")))
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("spawn {}: {e}", v.vmm.display()))?;
    let mut stderr = child.stderr.take().expect("piped stderr");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut all = String::new();
        let _ = stderr.read_to_string(&mut all);
        let _ = tx.send(all);
    });
    let mut run = HullRun::default();
    let result = (|| {
        if !wait_until(deadline, || hybrid_accepts(&uds, AGENT_PORT)) {
            return Err("agent port never accepted".to_string());
        }
        run.port = ms(t0.elapsed());
        let (total, guest) = rss_kib(child.id());
        run.rss_kib = (total - guest) as f64;
        run.anon_kib = anon_kib(child.id()) as f64;
        // Of the first hull boot only: the copy lies on the timed path to the health reply.
        if let (Some(out), FIRST_HULL_TAG) = (s.out, tag) {
            let _ = std::fs::copy(
                format!("/proc/{}/smaps", child.id()),
                out.join(format!("{tag}-smaps.txt")),
            );
        }
        // Before the health check: in the lab a guest busy printing to its 8250 (a VM exit per
        // byte) can miss hullctl's deadline.
        if let Some(line) = console_line {
            let console = s.log_path(&format!("{tag}-console.log"));
            let seen = || {
                std::fs::read_to_string(&console).is_ok_and(|c| c.lines().any(|l| l.contains(line)))
            };
            if !wait_until(deadline, seen) {
                return Err(format!("the console never showed {line:?}"));
            }
        }
        let mut h = Command::new(s.ctl)
            .args(["agent-health", "--uds"])
            .arg(&uds)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("spawn hullctl: {e}"))?;
        let ok = loop {
            match h.try_wait() {
                Ok(Some(st)) => break st.success(),
                _ if Instant::now() > deadline => {
                    let _ = h.kill();
                    let _ = h.wait();
                    break false;
                }
                _ => std::thread::sleep(Duration::from_millis(1)),
            }
        };
        if !ok {
            return Err("agent-health failed".to_string());
        }
        run.health = ms(t0.elapsed());
        Ok(())
    })();
    let code = stop(&mut child, Duration::from_secs(30));
    let err = rx.recv_timeout(Duration::from_secs(5)).unwrap_or_default();
    let _ = std::fs::write(s.log_path(&format!("{tag}-stderr.log")), &err);
    result.map_err(|e| format!("{e}; stderr: {}", err.lines().last().unwrap_or("")))?;
    if code != Some(0) {
        return Err(format!("hull-vmm exit {code:?} after SIGTERM"));
    }
    let m: serde_json::Value = err
        .lines()
        .find(|l| l.starts_with('{'))
        .and_then(|l| serde_json::from_str(l).ok())
        .ok_or("no metrics on stderr")?;
    let us = |k: &str| {
        m["boot"][k]
            .as_f64()
            .filter(|&v| v > 0.0)
            .map_or(f64::NAN, |v| v / 1e3)
    };
    run.main = us("main_us");
    run.api_or_vm = us("vm_created_us");
    run.first_kvm_run = us("first_kvm_run_us");
    run.init = us("guest_init_us");
    run.boot_timer = us("guest_boot_timer_us");
    Ok(run)
}

fn qemu_boot(s: &Setup, qemu: &Path, i: usize) -> Result<f64, String> {
    // acpi=off: the guest kernel has no ACPI, and only without ACPI does QEMU announce its
    // virtio-mmio devices on the kernel command line. A CID per process so a dying QEMU
    // cannot collide with the next one.
    let cid = 100 + std::process::id() % 1000;
    let console = s.dir.join("qemu-console.log");
    let t0 = Instant::now();
    let mut child = Command::new(qemu)
        .args([
            "-M",
            "microvm,x-option-roms=off,rtc=off,acpi=off",
            "-accel",
            "kvm",
            "-cpu",
            "host",
        ])
        .args(["-smp", &s.vcpus.to_string(), "-m", &GUEST_MIB.to_string()])
        .args([
            "-nodefaults",
            "-no-user-config",
            "-display",
            "none",
            "-no-reboot",
        ])
        .arg("-serial")
        .arg(format!("file:{}", console.display()))
        .arg("-kernel")
        .arg(s.kernel)
        .arg("-initrd")
        .arg(&s.hull.initrd)
        .args(["-append", &s.hull.cmdline])
        .args(["-device", &format!("vhost-vsock-device,guest-cid={cid}")])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("spawn qemu: {e}"))?;
    let mut exited = false;
    let ok = wait_until(t0 + s.timeout, || {
        exited = !matches!(child.try_wait(), Ok(None));
        exited || vsock_accepts(cid, AGENT_PORT)
    }) && !exited;
    let t = ms(t0.elapsed());
    let _ = child.kill();
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut err);
    }
    let _ = child.wait();
    let con = std::fs::read_to_string(&console).unwrap_or_default();
    if let Some(out) = s.out {
        let _ = std::fs::write(out.join(format!("qemu-console-{i}.log")), &con);
        let _ = std::fs::write(out.join(format!("qemu-stderr-{i}.log")), &err);
    }
    if ok {
        Ok(t)
    } else {
        let last = |t: &str| t.lines().last().unwrap_or("").to_string();
        Err(format!(
            "QEMU: agent port never accepted (exited: {exited}): stderr: {}; console: {}",
            last(&err),
            last(&con)
        ))
    }
}

/// p50 of a per-boot quantity over the boots where it is known.
fn p50(runs: &[HullRun], f: impl Fn(&HullRun) -> f64) -> f64 {
    let v: Vec<f64> = runs.iter().map(f).filter(|x| x.is_finite()).collect();
    pct(&v, 50)
}

/// A phase of a boot: its name and its duration in one boot (ms).
type Phase = (&'static str, fn(&HullRun) -> f64);

/// The phases of a boot, each reported as the p50 of its per-boot duration.
const PHASES: [Phase; 6] = [
    ("VMM: exec → first KVM_RUN", |r| r.first_kvm_run),
    ("guest: first KVM_RUN → serving", |r| {
        r.boot_timer - r.first_kvm_run
    }),
    ("- of which kernel: first KVM_RUN → /init", |r| {
        r.init - r.first_kvm_run
    }),
    ("- of which agent: /init → serving", |r| {
        r.boot_timer - r.init
    }),
    ("host: serving → health reply", |r| {
        r.health - r.boot_timer
    }),
    ("total: exec → health reply", |r| r.health),
];

fn print_phases(hull: &[HullRun], base: Option<&[HullRun]>) {
    println!();
    match base {
        None => {
            println!("| phase (p50, ms) | hull |");
            println!("|---|---|");
            for (name, f) in PHASES {
                println!("| {name} | {:.0} |", p50(hull, f));
            }
        }
        Some(base) => {
            println!("| phase (p50, ms) | hull | baseline | hull / baseline |");
            println!("|---|---|---|---|");
            for (name, f) in PHASES {
                let (a, b) = (p50(hull, f), p50(base, f));
                println!("| {name} | {a:.0} | {b:.0} | {:.2} |", a / b);
            }
        }
    }
}

/// One more hull boot with `initcall_debug`, and the costliest initcalls from its log. The boot
/// stays as quiet as the others (the debug lines only go to the kernel's ring buffer, a verbose
/// console would add a VM exit per byte to the initcalls that print); hull-agent copies the log
/// to the console once it serves (`hull_contract::guest_env`).
fn initcall_profile(s: &Setup) -> Result<(), String> {
    let v = Variant {
        cmdline: format!(
            "{} initcall_debug log_buf_len=1M {}=1",
            s.hull.cmdline,
            guest_env::KMSG_TO_CONSOLE
        ),
        ..s.hull.clone()
    };
    hull_boot(s, &v, "hull-initcalls", Some(guest_env::KMSG_COPIED))?;
    let console = std::fs::read_to_string(s.log_path("hull-initcalls-console.log"))
        .map_err(|e| format!("read the initcall boot's console: {e}"))?;
    let syms = match s.system_map {
        Some(p) => initcalls::symbols(
            &std::fs::read_to_string(p).map_err(|e| format!("read {}: {e}", p.display()))?,
        ),
        None => Default::default(),
    };
    let mut calls = initcalls::parse(&console, &syms);
    if calls.is_empty() {
        return Err("no `initcall … returned … after … usecs` line on the console".into());
    }
    let total: u64 = calls.iter().map(|c| c.usecs).sum();
    calls.sort_by_key(|c| std::cmp::Reverse(c.usecs));
    println!();
    println!(
        "initcalls (one boot with initcall_debug, guest clock): {} ran, {:.0} ms in all; /init ran at {} s",
        calls.len(),
        total as f64 / 1e3,
        initcalls::guest_time_of(&console, "Run /init as init process")
            .map_or("?".to_string(), |t| format!("{t:.3}"))
    );
    println!();
    println!("| initcall | ms | share of all initcalls |");
    println!("|---|---|---|");
    for c in calls.iter().take(s.initcalls) {
        println!(
            "| {} | {:.1} | {:.0}% |",
            c.name,
            c.usecs as f64 / 1e3,
            100.0 * c.usecs as f64 / total.max(1) as f64
        );
    }
    Ok(())
}

pub(crate) fn boot(s: &Setup, runs: usize) -> bool {
    let (mut hull, mut q, mut base) = (vec![], vec![], vec![]);
    let mut failed = false;
    let mut note = |what: String| {
        eprintln!("{what}");
        failed = true;
    };
    for i in 0..runs {
        match hull_boot(s, &s.hull, &format!("hull-{i}"), None) {
            Ok(r) => hull.push(r),
            Err(e) => note(format!("hull run {i}: {e}")),
        }
        if let Some(b) = &s.baseline {
            match hull_boot(s, b, &format!("baseline-{i}"), None) {
                Ok(r) => base.push(r),
                Err(e) => note(format!("baseline run {i}: {e}")),
            }
        }
        if let Some(qemu) = s.qemu {
            match qemu_boot(s, qemu, i) {
                Ok(t) => q.push(t),
                Err(e) => note(format!("qemu run {i}: {e}")),
            }
        }
    }
    let col = |f: fn(&HullRun) -> f64| hull.iter().map(f).collect::<Vec<_>>();
    println!(
        "boot phases, {} vCPU(s), {GUEST_MIB} MiB guest (ms since exec; lab timings: compare only as ratios)",
        s.vcpus
    );
    println!();
    header();
    row("hull: exec → main()", &col(|r| r.main));
    row("hull: exec → VM created", &col(|r| r.api_or_vm));
    row("hull: exec → first KVM_RUN", &col(|r| r.first_kvm_run));
    row("hull: exec → /init started", &col(|r| r.init));
    row(
        "hull: exec → boot timer (agent ready)",
        &col(|r| r.boot_timer),
    );
    row("hull: exec → agent port accepts", &col(|r| r.port));
    row("hull: exec → agent health reply", &col(|r| r.health));
    row(
        "hull: non-guest RSS after agent ready (KiB)",
        &col(|r| r.rss_kib),
    );
    row("hull: of which anonymous (KiB)", &col(|r| r.anon_kib));
    if s.qemu.is_some() {
        row("qemu microvm: exec → agent port accepts", &q);
    }
    print_phases(&hull, s.baseline.as_ref().map(|_| base.as_slice()));
    if s.qemu.is_some() {
        let ratio = pct(&col(|r| r.port), 50) / pct(&q, 50);
        println!();
        println!("exec → agent port accepts, p50 hull / p50 qemu-microvm = {ratio:.2}");
    }
    if s.initcalls > 0 {
        if let Err(e) = initcall_profile(s) {
            note(format!("initcall profile: {e}"));
        }
    }
    !failed
}
