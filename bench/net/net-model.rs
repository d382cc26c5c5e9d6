//! `hull-net-model`: the virtio-net device model's throughput (bench/net/model), as a Markdown
//! table: TX and RX, 64 KiB TSO segments and MTU-sized frames, Gbit/s per core of the device
//! thread. Needs root (a private network namespace with two taps and tc).

use hull_vmm::net_bench::{run, Direction};

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
    std::process::exit(i32::from(failed));
}
