//! `hullctl agent-bench`: latency and throughput of a (host-mode) agent, measured from a
//! client in this process so only the agent and ttrpc are timed. bench/agent/run prints
//! the table; this prints `key value` lines for it.
//!
//! Each figure comes with a baseline taken in the same run: what this host does for the same
//! work without the agent (a socket echo, a plain fork and exec, a plain pipe). Absolute
//! times vary a lot between machines (a VM's wake-ups and page faults cost several times a
//! bare-metal host's); the ratio to the baseline says what the agent adds.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use hull_proto::health::CheckRequest;
use hull_proto::health_ttrpc::HealthClient;
use hull_proto::processes::ReadStreamRequest;

use crate::agent::{spec, Agent, Target};

/// p50 and p99 of `samples` (sorted in place).
fn percentiles(samples: &mut [Duration]) -> (Duration, Duration) {
    samples.sort_unstable();
    let at = |q: usize| samples[(samples.len() * q / 100).min(samples.len() - 1)];
    (at(50), at(99))
}

fn report(name: &str, samples: &mut [Duration]) {
    let (p50, p99) = percentiles(samples);
    println!(
        "{name}_p50_us {}\n{name}_p99_us {}\n{name}_n {}",
        p50.as_micros(),
        p99.as_micros(),
        samples.len()
    );
}

fn args(words: &[&str]) -> Vec<String> {
    words.iter().map(|w| (*w).to_owned()).collect()
}

/// Round trips of a 32-byte message to an echo thread over a Unix socket pair: the host's
/// cost of two wake-ups, under any RPC.
fn baseline_rtt(n: usize) -> anyhow::Result<Vec<Duration>> {
    let (mut ours, mut theirs) = UnixStream::pair().context("socketpair")?;
    let echo = std::thread::spawn(move || {
        let mut buf = [0u8; 32];
        while theirs.read_exact(&mut buf).is_ok() && theirs.write_all(&buf).is_ok() {}
    });
    let mut buf = [7u8; 32];
    let mut samples = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        ours.write_all(&buf).context("echo write")?;
        ours.read_exact(&mut buf).context("echo read")?;
        samples.push(t.elapsed());
    }
    drop(ours);
    let _ = echo.join();
    Ok(samples)
}

/// Spawn and wait of busybox `true` from this process: fork and exec without a container.
fn baseline_spawn(rootfs: &Path, n: usize) -> anyhow::Result<Vec<Duration>> {
    let busybox = rootfs.join("bin/busybox");
    let mut samples = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        let st = Command::new(&busybox)
            .arg("true")
            .stdin(Stdio::null())
            .status()
            .with_context(|| format!("spawn {}", busybox.display()))?;
        samples.push(t.elapsed());
        anyhow::ensure!(st.success(), "busybox true: {st}");
    }
    Ok(samples)
}

/// The same `dd` read straight from its stdout pipe (1 MiB, as the agent sizes its pipes), in
/// 1 MiB reads: MB/s.
fn baseline_pipe(rootfs: &Path, cmd: &str, bytes: u64) -> anyhow::Result<u64> {
    let mut child = Command::new(rootfs.join("bin/busybox"))
        .args(["sh", "-c", cmd])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .context("spawn dd")?;
    let mut out = child.stdout.take().context("dd stdout")?;
    let _ = nix::fcntl::fcntl(&out, nix::fcntl::FcntlArg::F_SETPIPE_SZ(1 << 20));
    let mut buf = vec![0u8; 1 << 20];
    let t = Instant::now();
    let mut total = 0u64;
    loop {
        let n = out.read(&mut buf).context("read dd")?;
        if n == 0 {
            break;
        }
        total += n as u64;
    }
    let secs = t.elapsed().as_secs_f64();
    child.wait().context("wait dd")?;
    anyhow::ensure!(total == bytes, "baseline read {total} of {bytes} bytes");
    Ok(mb_per_s(total, secs))
}

fn mb_per_s(bytes: u64, secs: f64) -> u64 {
    // Whole MB/s are precise enough for a table; the value is positive and far below 2^53.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let v = (bytes as f64 / secs / 1e6).round() as u64;
    v
}

pub async fn run(socket: &Path, rootfs: &Path, n: usize, stdout_mib: u64) -> anyhow::Result<()> {
    report("base_rtt", &mut baseline_rtt(n * 20)?);
    report("base_spawn", &mut baseline_spawn(rootfs, n * 4)?);
    let target = Target::Unix(socket.to_owned());
    let a = Agent::connect(&target).await?;
    let client = ttrpc::r#async::Client::connect(&format!("unix://{}", socket.display()))
        .await
        .context("connect for Health")?;
    let health = HealthClient::new(client);

    // Unary round trip: Health.Check.
    let mut rtt = Vec::with_capacity(n * 20);
    for _ in 0..n * 20 {
        let t = Instant::now();
        health
            .check(
                ttrpc::context::with_timeout(5_000_000_000),
                &CheckRequest::new(),
            )
            .await
            .context("Health.Check")?;
        rtt.push(t.elapsed());
    }
    report("rtt", &mut rtt);

    // Container lifecycle of `true`: create + start + wait, then remove; timed apart and as
    // one cycle (what `runc run` does).
    let mut life = Vec::with_capacity(n);
    let mut remove = Vec::with_capacity(n);
    let mut cycle = Vec::with_capacity(n);
    for i in 0..n {
        let id = format!("bench-{i}");
        let t = Instant::now();
        a.run(&id, &spec(rootfs, &args(&["true"]), "bench"), Vec::new())
            .await?;
        let st = a.wait(&id, "").await?;
        life.push(t.elapsed());
        anyhow::ensure!(st == 0, "true exited {st}");
        let r = Instant::now();
        a.remove(&id).await?;
        remove.push(r.elapsed());
        cycle.push(t.elapsed());
    }
    report("run_true", &mut life);
    report("cycle_true", &mut cycle);
    report("remove", &mut remove);

    // Exec of `true` into a running container: exec + wait.
    a.run(
        "bench-exec",
        &spec(rootfs, &args(&["sleep", "100000"]), "bench"),
        Vec::new(),
    )
    .await?;
    let mut exec = Vec::with_capacity(n * 4);
    for i in 0..n * 4 {
        let e = format!("e{i}");
        let t = Instant::now();
        a.exec("bench-exec", &e, &args(&["true"])).await?;
        let st = a.wait("bench-exec", &e).await?;
        exec.push(t.elapsed());
        anyhow::ensure!(st == 0, "exec true exited {st}");
    }
    report("exec_true", &mut exec);
    a.remove("bench-exec").await?;

    // Stdout throughput: N MiB of zeros written 1 MiB at a time (dd: busybox `head -c` copies
    // in 4 KiB steps and measured slower than the agent), read with ReadStdout.
    let bytes = stdout_mib << 20;
    let cmd = format!("dd if=/dev/zero bs=1048576 count={stdout_mib} 2>/dev/null");
    a.run(
        "bench-out",
        &spec(rootfs, &args(&["sh", "-c", &cmd]), "bench"),
        Vec::new(),
    )
    .await?;
    let req = ReadStreamRequest {
        container_id: "bench-out".into(),
        max_len: 1 << 20,
        ..Default::default()
    };
    let t = Instant::now();
    let mut total = 0u64;
    loop {
        let r = a
            .processes
            .read_stdout(ttrpc::context::with_timeout(60_000_000_000), &req)
            .await
            .context("ReadStdout")?;
        total += r.data.len() as u64;
        if r.eof {
            break;
        }
    }
    let secs = t.elapsed().as_secs_f64();
    anyhow::ensure!(total == bytes, "read {total} of {bytes} bytes");
    a.wait("bench-out", "").await?;
    a.remove("bench-out").await?;
    println!("stdout_mb_s {}", mb_per_s(total, secs));
    println!("stdout_bytes {total}");
    println!("base_pipe_mb_s {}", baseline_pipe(rootfs, &cmd, bytes)?);
    Ok(())
}
