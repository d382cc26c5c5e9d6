//! `hull-net-model`: the virtio-net device model's throughput (bench/net/model), as a Markdown
//! table: TX and RX, 64 KiB TSO segments and MTU-sized frames, Gbit/s per core of the device
//! thread; then the TX rate limiter's accuracy with real timers. Needs root (a private network
//! namespace with two taps and tc).

use hull_vmm::config::{BucketConfig, LimitConfig};
use hull_vmm::net_bench::{run, run_limited, Direction};

fn main() {
    let mut failed = false;
    println!("| direction | frame | frames | Gbit/s per device core | wall Gbit/s |");
    println!("|---|---|---|---|---|");
    for dir in [Direction::Tx, Direction::Rx] {
        for (len, frames) in [(65_000usize, 40_000u64), (1514, 400_000)] {
            match run(dir, len, frames) {
                Ok(r) => println!(
                    "| {dir:?} | {len} B | {} | {:.1} | {:.1} |",
                    r.frames,
                    r.gbit_per_core(),
                    r.bytes as f64 * 8.0 / r.wall.as_secs_f64() / 1e9
                ),
                Err(e) => {
                    eprintln!("hull-net-model: {dir:?} {len}: {e}");
                    failed = true;
                }
            }
        }
    }
    failed |= !limiter_accuracy();
    std::process::exit(i32::from(failed));
}

/// The TX rate limiter with real timers: what it lets through against what it was set to, over
/// about three seconds each (vmm/API.md, Rate limits). Bytes counted as the limiter counts
/// them, the 12-byte virtio-net header included; the bucket's burst is taken off, since the
/// bound is `burst + rate × t`.
fn limiter_accuracy() -> bool {
    let bucket = |rate: u64| BucketConfig {
        rate,
        burst: None,
        one_time_burst: 0,
    };
    let cases = [
        ("bytes", 1_000_000u64, 1514usize, 2_000u64),
        ("bytes", 10_000_000, 1514, 20_000),
        ("bytes", 100_000_000, 65_000, 4_600),
        ("frames", 1_000, 1514, 3_000),
        ("frames", 20_000, 1514, 60_000),
    ];
    println!();
    println!("| TX limit | frame | frames | wall s | measured | measured / limit |");
    println!("|---|---|---|---|---|---|");
    let mut ok = true;
    for (what, rate, len, frames) in cases {
        let limit = if what == "bytes" {
            LimitConfig {
                bytes: Some(bucket(rate)),
                ops: None,
            }
        } else {
            LimitConfig {
                bytes: None,
                ops: Some(bucket(rate)),
            }
        };
        match run_limited(Direction::Tx, len, frames, limit) {
            Ok(r) => {
                let burst = (rate / 10).max(1) as f64;
                let per_frame = if what == "bytes" {
                    (len + 12) as f64
                } else {
                    1.0
                };
                let secs = r.wall.as_secs_f64();
                let measured = (r.frames as f64 * per_frame - burst) / secs;
                println!(
                    "| {rate} {what}/s | {len} B | {} | {secs:.2} | {measured:.0} {what}/s | {:.3} |",
                    r.frames,
                    measured / rate as f64
                );
            }
            Err(e) => {
                eprintln!("hull-net-model: limit {rate} {what}/s: {e}");
                ok = false;
            }
        }
    }
    ok
}
