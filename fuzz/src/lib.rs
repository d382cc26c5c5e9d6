//! What hull's fuzz targets share: a mock guest (memory, split virtqueues written the way a
//! driver writes them, descriptors chosen by the fuzzer) and a one-thread async runtime.
//! Each target is one file under `fuzz_targets/`; README.md says how to add one.

pub mod guest;
pub mod vsock_host;

/// Runs `f` to completion on a current-thread tokio runtime made once per process (the
/// targets that drive async parsers are single-threaded, like libFuzzer itself).
pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    use std::cell::OnceCell;
    thread_local! {
        static RT: OnceCell<tokio::runtime::Runtime> = const { OnceCell::new() };
    }
    RT.with(|rt| {
        rt.get_or_init(|| {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("tokio runtime")
        })
        .block_on(f)
    })
}
