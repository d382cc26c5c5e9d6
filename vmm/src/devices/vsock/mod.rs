//! virtio-vsock with a hybrid (Unix socket) host side, as DESIGN §1 fixes it: the host connects
//! to the UDS, writes `CONNECT <port>\n`, reads `OK <port>\n`, then the stream is the guest
//! connection; guest connections to host port P go to `<uds>_P`.

mod device;
mod event_handler;
mod metrics;
pub mod muxer;
pub mod packet;

pub use device::Vsock;
pub use metrics::VsockMetrics;
pub use muxer::Muxer;
