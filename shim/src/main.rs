//! `containerd-shim-hull-v2`: see `hull_shim::bootstrap`.

fn main() -> anyhow::Result<()> {
    hull_heap::tune_for_stream_messages();
    hull_heap::use_one_arena();
    // One thread: a shim per pod must stay small (≤ 3 MiB PSS goal), and it mostly waits.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let args: Vec<_> = std::env::args_os().skip(1).collect();
    rt.block_on(hull_shim::bootstrap::run(&args))?;
    Ok(())
}
