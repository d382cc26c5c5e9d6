//! `hull-vmm-bench`: numbers for the VMM itself, printed as a table (not a timed test).
//!
//! - exec → API socket ready (wall time, and CPU time of the VMM up to that point from
//!   `/proc/PID/schedstat`), N runs, p50/p90/max.
//! - non-guest RSS of a running VM (RSS minus the guest-memory memfd mapping), here with a tiny
//!   payload; the lab script measures it again with the real guest and agent.
//!
//! usage: hull-vmm-bench [--runs N] [--vmm PATH]

use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn vmm_path() -> PathBuf {
    arg("--vmm").map(PathBuf::from).unwrap_or_else(|| {
        let me = std::env::current_exe().expect("current exe");
        me.with_file_name("hull-vmm")
    })
}

/// CPU time (ns) the process has run, from schedstat.
fn cpu_ns(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/schedstat"))
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// (total RSS, RSS of the guest RAM mapping) in KiB.
fn rss_kib(pid: u32) -> (u64, u64) {
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps")).unwrap_or_default();
    let (mut total, mut guest, mut in_guest) = (0, 0, false);
    for line in smaps.lines() {
        if line.contains(" /memfd:hull-guest-ram") {
            in_guest = true;
        } else if line
            .split_whitespace()
            .next()
            .is_some_and(|f| f.contains('-') && !f.ends_with(':'))
        {
            in_guest = false;
        }
        if let Some(v) = line.strip_prefix("Rss:") {
            let kib: u64 = v.trim().trim_end_matches(" kB").trim().parse().unwrap_or(0);
            total += kib;
            if in_guest {
                guest += kib;
            }
        }
    }
    (total, guest)
}

fn stop(mut child: Child) {
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status();
    let _ = child.wait();
}

fn pct(v: &mut [f64], percent: usize) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    // Nearest-rank percentile over a small sample.
    let n = v.len().saturating_sub(1);
    let i = (n * percent) / 100;
    v[i.min(n)]
}

fn api_ready(vmm: &Path, dir: &Path, runs: usize) -> (Vec<f64>, Vec<f64>) {
    let (mut wall, mut cpu) = (vec![], vec![]);
    for i in 0..runs {
        let sock = dir.join(format!("api-{i}.sock"));
        let t0 = Instant::now();
        let child = Command::new(vmm)
            .arg("--api-sock")
            .arg(&sock)
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn hull-vmm");
        while UnixStream::connect(&sock).is_err() {
            if t0.elapsed() > Duration::from_secs(5) {
                panic!("API socket never came up");
            }
            std::thread::sleep(Duration::from_micros(50));
        }
        wall.push(t0.elapsed().as_secs_f64() * 1e3);
        cpu.push(cpu_ns(child.id()) as f64 / 1e6);
        stop(child);
    }
    (wall, cpu)
}

fn main() {
    let runs: usize = arg("--runs").and_then(|r| r.parse().ok()).unwrap_or(30);
    let vmm = vmm_path();
    let dir = std::env::temp_dir().join(format!("hull-vmm-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");

    let (mut wall, mut cpu) = api_ready(&vmm, &dir, runs);
    println!("| metric | p50 | p90 | max | runs |");
    println!("|---|---|---|---|---|");
    println!(
        "| exec → API ready, wall (ms) | {:.2} | {:.2} | {:.2} | {runs} |",
        pct(&mut wall, 50),
        pct(&mut wall, 90),
        pct(&mut wall, 100)
    );
    println!(
        "| exec → API ready, VMM CPU (ms) | {:.2} | {:.2} | {:.2} | {runs} |",
        pct(&mut cpu, 50),
        pct(&mut cpu, 90),
        pct(&mut cpu, 100)
    );

    // A running VM with a tiny payload (halts with interrupts off), vsock + rng attached.
    let payload = dir.join("p.bin");
    std::fs::write(&payload, [0xfa, 0xf4, 0xeb, 0xfd]).expect("payload");
    let child = Command::new(&vmm)
        .arg("--raw-payload")
        .arg(&payload)
        .args(["--console", "off", "--mem-mib", "128", "--vsock-uds"])
        .arg(dir.join("v.sock"))
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn hull-vmm");
    std::thread::sleep(Duration::from_millis(500));
    let (total, guest) = rss_kib(child.id());
    stop(child);
    println!(
        "| non-guest RSS, payload VM (KiB) | {} | | | 1 (total {total}, guest {guest}) |",
        total - guest
    );
    let _ = std::fs::remove_dir_all(&dir);
}
