//! `hullctl agent-bench`: latency and throughput of a (host-mode) agent, measured from a
//! client in this process so only the agent and ttrpc are timed. bench/agent/run prints
//! the table; this prints `key value` lines for it.

use std::path::Path;
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

pub async fn run(socket: &Path, rootfs: &Path, n: usize, stdout_mib: u64) -> anyhow::Result<()> {
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
    // Whole MB/s are precise enough for a table.
    println!("stdout_mb_s {}", (total as f64 / secs / 1e6).round());
    println!("stdout_bytes {total}");
    Ok(())
}
