//! `hull-vmm-bench`: measurements of the VMM, printed as Markdown tables (bench/README.md).
//! Built as a binary of the hull-vmm package (`cargo build --release -p hull-vmm`); driven by
//! `bench/vmm/run`. Every wait has a deadline; every child is killed on the way out.
//!
//! - `api-ready`: exec → API socket accepting, wall time and the VMM's CPU time, no guest.
//! - `payload-rss`: non-guest RSS of an idle VM running a tiny payload (host, no Linux).
//! - `boot`: the real guest in the lab, phase by phase (`boot.rs`): exec → first `KVM_RUN` →
//!   /init → agent ready → agent port accepting → health reply, non-guest RSS after the agent
//!   is ready; optionally a baseline hull (A/B of a VMM, initrd or command-line change), QEMU
//!   `-M microvm -accel kvm` with the same guest, and the guest's costliest initcalls.

mod boot;
mod initcalls;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use hull_contract::vmm_args::{flag, Console, VmmArgs};
use hull_contract::vsock::{connect_request, parse_ok};
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
#[expect(clippy::large_enum_variant, reason = "parsed once per run")]
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
        /// Kernel command line (default: hull-vmm's default plus `quiet`).
        #[arg(long)]
        cmdline: Option<String>,
        /// Also boot a baseline hull, alternating, for the ratio of one change: this initrd...
        #[arg(long)]
        baseline_initrd: Option<PathBuf>,
        /// ...this hull-vmm binary...
        #[arg(long)]
        baseline_vmm: Option<PathBuf>,
        /// ...this command line; what is not given is the same as the main hull's.
        #[arg(long)]
        baseline_cmdline: Option<String>,
        /// One more boot with `initcall_debug`: print this many of the costliest initcalls.
        #[arg(long, default_value_t = 0)]
        initcalls: usize,
        /// The kernel's System.map, to name the initcalls (default: next to --kernel).
        #[arg(long)]
        system_map: Option<PathBuf>,
        /// Deadline of one boot, seconds.
        #[arg(long, default_value_t = 180)]
        timeout: u64,
        /// Keep logs here: the VMMs' stderr and consoles, smaps of the first hull boot.
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

/// The default guest command line of both VMMs: hull's default plus `quiet`.
fn default_cmdline() -> String {
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
            cmdline,
            baseline_initrd,
            baseline_vmm,
            baseline_cmdline,
            initcalls,
            system_map,
            timeout,
            out,
        } => {
            if let Some(o) = out {
                let _ = std::fs::create_dir_all(o);
            }
            let hull = boot::Variant {
                vmm: vmm.clone(),
                initrd: initrd.clone(),
                cmdline: cmdline.clone().unwrap_or_else(default_cmdline),
            };
            let baseline =
                (baseline_initrd.is_some() || baseline_vmm.is_some() || baseline_cmdline.is_some())
                    .then(|| boot::Variant {
                        vmm: baseline_vmm.clone().unwrap_or_else(|| hull.vmm.clone()),
                        initrd: baseline_initrd
                            .clone()
                            .unwrap_or_else(|| hull.initrd.clone()),
                        cmdline: baseline_cmdline
                            .clone()
                            .unwrap_or_else(|| hull.cmdline.clone()),
                    });
            let system_map = system_map
                .clone()
                .or_else(|| Some(kernel.parent()?.join("System.map")))
                .filter(|p| p.exists());
            let setup = boot::Setup {
                ctl: hullctl,
                kernel,
                hull,
                baseline,
                qemu: qemu.as_deref(),
                vcpus: *vcpus,
                dir: &dir,
                timeout: Duration::from_secs(*timeout),
                out: out.as_deref(),
                initcalls: *initcalls,
                system_map: system_map.as_deref(),
            };
            boot::boot(&setup, *runs)
        }
    };
    let _ = std::fs::remove_dir_all(&dir);
    std::process::exit(if ok { 0 } else { 1 });
}
