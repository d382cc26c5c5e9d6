//! `hull-vmm-bench`: measurements of the VMM, printed as Markdown tables (bench/README.md).
//! Built as a binary of the hull-vmm package (`cargo build --release -p hull-vmm`); driven by
//! `bench/vmm/run`. Every wait has a deadline; every child is killed on the way out.
//!
//! - `api-ready`: exec → API socket accepting, wall time and the VMM's CPU time, no guest.
//! - `payload-rss`: non-guest RSS of an idle VM running a tiny payload (host, no Linux).
//! - `boot`: the real guest in the lab: exec → first `KVM_RUN` → boot timer (agent ready) →
//!   agent port accepting → health reply, non-guest RSS after the agent is ready; with
//!   `--qemu`, the same kernel + initrd under `qemu -M microvm -accel kvm` in the same run,
//!   compared on exec → agent port accepting (the one point both VMMs expose the same way).

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use hull_contract::vmm_args::{flag, Console, VmmArgs};
use hull_contract::vsock::{connect_request, parse_ok, AGENT_PORT};
use hull_vmm::config::DEFAULT_CMDLINE;

#[derive(Debug, Parser)]
#[command(name = "hull-vmm-bench")]
struct Cli {
    /// hull-vmm binary (default: next to this one).
    #[arg(long, global = true)]
    vmm: Option<PathBuf>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    ApiReady {
        #[arg(long, default_value_t = 100)]
        runs: usize,
    },
    PayloadRss,
    Boot {
        #[arg(long)]
        hullctl: PathBuf,
        #[arg(long)]
        kernel: PathBuf,
        #[arg(long)]
        initrd: PathBuf,
        #[arg(long, default_value_t = 5)]
        runs: usize,
        #[arg(long, default_value_t = 1)]
        vcpus: u8,
        /// Also boot with this QEMU binary (`-M microvm`, KVM) for the ratio.
        #[arg(long)]
        qemu: Option<PathBuf>,
        /// Also boot hull-vmm with this initrd, alternating, for the ratio of a guest change.
        #[arg(long)]
        baseline_initrd: Option<PathBuf>,
        /// Deadline of one boot, seconds.
        #[arg(long, default_value_t = 180)]
        timeout: u64,
        /// Keep logs here: the VMMs' stderr and consoles, smaps of the first hull boot.
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

/// The guest command line of both VMMs: hull's default plus `quiet`.
fn cmdline() -> String {
    format!("{DEFAULT_CMDLINE} quiet")
}

const GUEST_MIB: u32 = 256;

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Nearest-rank percentile.
fn pct(v: &[f64], p: usize) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    let rank = (v.len() * p).div_ceil(100).max(1);
    v.get(rank - 1).copied().unwrap_or(f64::NAN)
}

fn row(name: &str, v: &[f64]) {
    println!(
        "| {name} | {:.2} | {:.2} | {:.2} | {:.2} | {} |",
        pct(v, 50),
        pct(v, 99),
        pct(v, 0),
        pct(v, 100),
        v.len()
    );
}

fn header() {
    println!("| metric | p50 | p99 | min | max | runs |");
    println!("|---|---|---|---|---|---|");
}

/// CPU time (ns) the process's main thread has run, from schedstat.
fn cpu_ns(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/schedstat"))
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// Resident memory of `pid` in KiB: (total, guest RAM memfd mappings).
fn rss_kib(pid: u32) -> (u64, u64) {
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps")).unwrap_or_default();
    let (mut total, mut guest, mut in_guest) = (0, 0, false);
    for line in smaps.lines() {
        let first = line.split_whitespace().next().unwrap_or("");
        if first.contains('-') && !first.ends_with(':') {
            in_guest = line.contains("/memfd:hull-guest-ram");
        }
        if let Some(v) = line.strip_prefix("Rss:") {
            let kib: u64 = v.trim().trim_end_matches("kB").trim().parse().unwrap_or(0);
            total += kib;
            if in_guest {
                guest += kib;
            }
        }
    }
    (total, guest)
}

/// SIGTERM, then SIGKILL after `grace`; returns the exit code (None: killed or signalled).
fn stop(child: &mut Child, grace: Duration) -> Option<i32> {
    if let Ok(pid) = i32::try_from(child.id()) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::SIGTERM);
    }
    let t = Instant::now();
    while t.elapsed() < grace {
        if let Ok(Some(s)) = child.try_wait() {
            return s.code();
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

fn vmm_path(cli: &Cli) -> PathBuf {
    cli.vmm.clone().unwrap_or_else(|| {
        std::env::current_exe()
            .expect("current exe")
            .with_file_name("hull-vmm")
    })
}

fn api_ready(vmm: &Path, dir: &Path, runs: usize) {
    let (mut wall, mut cpu) = (vec![], vec![]);
    for i in 0..runs {
        let sock = dir.join(format!("api-{i}.sock"));
        let t0 = Instant::now();
        let args = VmmArgs {
            api_sock: Some(sock.clone()),
            ..VmmArgs::default()
        };
        let mut child = Command::new(vmm)
            .args(args.to_args())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn hull-vmm");
        // Connecting is how a client learns the socket is ready; the CPU time is read right
        // then, before the VMM wakes up for the connection.
        while UnixStream::connect(&sock).is_err() {
            assert!(
                t0.elapsed() < Duration::from_secs(10),
                "API socket never came up"
            );
            std::thread::sleep(Duration::from_micros(20));
        }
        wall.push(ms(t0.elapsed()));
        cpu.push(cpu_ns(child.id()) as f64 / 1e6);
        stop(&mut child, Duration::from_secs(5));
    }
    header();
    row("exec → API socket ready, wall (ms)", &wall);
    row("exec → API socket ready, VMM CPU (ms)", &cpu);
}

fn payload_rss(vmm: &Path, dir: &Path) {
    let payload = dir.join("p.bin");
    // sti; hlt; jmp: an idle guest.
    std::fs::write(&payload, [0xfb, 0xf4, 0xeb, 0xfd]).expect("payload");
    let args = VmmArgs {
        console: Console::Off,
        mem_mib: Some(128),
        vsock_uds: Some(dir.join("v.sock")),
        ..VmmArgs::default()
    };
    let mut child = Command::new(vmm)
        .args(args.to_args())
        .arg(format!("--{}", flag::RAW_PAYLOAD))
        .arg(&payload)
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn hull-vmm");
    std::thread::sleep(Duration::from_millis(500));
    let (total, guest) = rss_kib(child.id());
    stop(&mut child, Duration::from_secs(5));
    println!(
        "| non-guest RSS, idle payload VM (KiB) | {} | total {total}, guest RAM {guest} |",
        total - guest
    );
}

/// Hybrid vsock: one `CONNECT port` handshake; true when the guest accepted.
fn hybrid_accepts(uds: &Path, port: u32) -> bool {
    let Ok(mut s) = UnixStream::connect(uds) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    if s.write_all(connect_request(port).as_bytes()).is_err() {
        return false;
    }
    let mut line = String::new();
    let _ = BufReader::new(s).read_line(&mut line);
    parse_ok(line.trim_end().as_bytes()).is_some()
}

/// AF_VSOCK (QEMU's vhost-vsock): true when the guest accepted.
fn vsock_accepts(cid: u32, port: u32) -> bool {
    use nix::sys::socket::{connect, socket, AddressFamily, SockFlag, SockType, VsockAddr};
    let Ok(fd) = socket(
        AddressFamily::Vsock,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    ) else {
        return false;
    };
    connect(
        std::os::fd::AsRawFd::as_raw_fd(&fd),
        &VsockAddr::new(cid, port),
    )
    .is_ok()
}

/// Polls `accepts` every 10 ms until it holds or `deadline` passes. Every failed attempt
/// costs the booting guest a vsock packet and a reset, so not much more often.
fn wait_until(deadline: Instant, mut accepts: impl FnMut() -> bool) -> bool {
    while Instant::now() < deadline {
        if accepts() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    false
}

#[derive(Debug, Default)]
struct HullRun {
    main: f64,
    api_or_vm: f64,
    first_kvm_run: f64,
    boot_timer: f64,
    port: f64,
    health: f64,
    rss_kib: f64,
    anon_kib: f64,
}

/// What every boot of one `boot` invocation shares.
#[derive(Debug)]
struct Setup<'a> {
    vmm: &'a Path,
    ctl: &'a Path,
    kernel: &'a Path,
    initrd: &'a Path,
    /// A second initrd booted alternately with `initrd`, for an A/B of a guest change.
    baseline_initrd: Option<&'a Path>,
    vcpus: u8,
    dir: &'a Path,
    timeout: Duration,
    /// Where to keep logs (None: nowhere).
    out: Option<&'a Path>,
}

impl Setup<'_> {
    fn log(&self, name: &str) -> Stdio {
        match self.out.map(|o| std::fs::File::create(o.join(name))) {
            Some(Ok(f)) => f.into(),
            _ => Stdio::null(),
        }
    }
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

fn hull_boot(s: &Setup, initrd: &Path, i: usize) -> Result<HullRun, String> {
    let uds = s.dir.join("v.sock");
    let t0 = Instant::now();
    let deadline = t0 + s.timeout;
    let args = VmmArgs {
        initrd: Some(initrd.to_path_buf()),
        cmdline: Some(cmdline()),
        vsock_uds: Some(uds.clone()),
        boot_timer: true,
        metrics_on_exit: true,
        ..VmmArgs::new(s.kernel, s.vcpus, GUEST_MIB)
    };
    let mut child = Command::new(s.vmm)
        .args(args.to_args())
        .stdout(s.log(&format!("hull-console-{i}.log")))
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("spawn hull-vmm: {e}"))?;
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
        if let (Some(out), 0) = (s.out, i) {
            let _ = std::fs::copy(
                format!("/proc/{}/smaps", child.id()),
                out.join("hull-smaps.txt"),
            );
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
    if let Some(out) = s.out {
        let _ = std::fs::write(out.join(format!("hull-stderr-{i}.log")), &err);
    }
    result.map_err(|e| format!("{e}; stderr: {}", err.lines().last().unwrap_or("")))?;
    if code != Some(0) {
        return Err(format!("hull-vmm exit {code:?} after SIGTERM"));
    }
    let m: serde_json::Value = err
        .lines()
        .find(|l| l.starts_with('{'))
        .and_then(|l| serde_json::from_str(l).ok())
        .ok_or("no metrics on stderr")?;
    let us = |k: &str| m["boot"][k].as_f64().unwrap_or(f64::NAN) / 1e3;
    run.main = us("main_us");
    run.api_or_vm = us("vm_created_us");
    run.first_kvm_run = us("first_kvm_run_us");
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
        .arg(s.initrd)
        .args(["-append", &cmdline()])
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

fn boot(s: &Setup, runs: usize, qemu: Option<&Path>) -> bool {
    let (mut hull, mut q, mut base) = (vec![], vec![], vec![]);
    let mut failed = false;
    // Alternate them so drift in the emulated lab hits all alike.
    for i in 0..runs {
        match hull_boot(s, s.initrd, i) {
            Ok(r) => hull.push(r),
            Err(e) => {
                eprintln!("hull run {i}: {e}");
                failed = true;
            }
        }
        if let Some(initrd) = s.baseline_initrd {
            match hull_boot(s, initrd, runs + i) {
                Ok(r) => base.push(r),
                Err(e) => {
                    eprintln!("hull run {i} with the baseline initrd: {e}");
                    failed = true;
                }
            }
        }
        if let Some(qemu) = qemu {
            match qemu_boot(s, qemu, i) {
                Ok(t) => q.push(t),
                Err(e) => {
                    eprintln!("qemu run {i}: {e}");
                    failed = true;
                }
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
    if s.baseline_initrd.is_some() {
        let bcol = |f: fn(&HullRun) -> f64| base.iter().map(f).collect::<Vec<_>>();
        row(
            "baseline initrd: exec → boot timer (agent ready)",
            &bcol(|r| r.boot_timer),
        );
        row(
            "baseline initrd: exec → agent health reply",
            &bcol(|r| r.health),
        );
        // The guest's own part: from the first KVM_RUN to the agent's boot-timer write.
        let guest = |v: &[HullRun]| {
            pct(
                &v.iter()
                    .map(|r| r.boot_timer - r.first_kvm_run)
                    .collect::<Vec<_>>(),
                50,
            )
        };
        println!();
        println!(
            "first KVM_RUN → agent ready, p50 initrd / p50 baseline initrd = {:.2} ({:.0} / {:.0} ms)",
            guest(&hull) / guest(&base),
            guest(&hull),
            guest(&base)
        );
    }
    if qemu.is_some() {
        row("qemu microvm: exec → agent port accepts", &q);
        let ratio = pct(&col(|r| r.port), 50) / pct(&q, 50);
        println!();
        println!("exec → agent port accepts, p50 hull / p50 qemu-microvm = {ratio:.2}");
    }
    !failed
}

fn main() {
    let cli = Cli::parse();
    let vmm = vmm_path(&cli);
    let dir = std::env::temp_dir().join(format!("hull-vmm-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let ok = match &cli.cmd {
        Cmd::ApiReady { runs } => {
            api_ready(&vmm, &dir, *runs);
            true
        }
        Cmd::PayloadRss => {
            payload_rss(&vmm, &dir);
            true
        }
        Cmd::Boot {
            hullctl,
            kernel,
            initrd,
            runs,
            vcpus,
            qemu,
            baseline_initrd,
            timeout,
            out,
        } => {
            if let Some(o) = out {
                let _ = std::fs::create_dir_all(o);
            }
            let setup = Setup {
                vmm: &vmm,
                ctl: hullctl,
                kernel,
                initrd,
                baseline_initrd: baseline_initrd.as_deref(),
                vcpus: *vcpus,
                dir: &dir,
                timeout: Duration::from_secs(*timeout),
                out: out.as_deref(),
            };
            boot(&setup, *runs, qemu.as_deref())
        }
    };
    let _ = std::fs::remove_dir_all(&dir);
    std::process::exit(if ok { 0 } else { 1 });
}
