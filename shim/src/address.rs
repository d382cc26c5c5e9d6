//! containerd's socket addresses. containerd passes them as `unix://PATH` or as a bare path
//! (`-address`, `-socket`, `TTRPC_ADDRESS`, the bundle's `address` file); every user of one
//! (serve, start's liveness probe, delete's socket removal, the event forwarder) needs the
//! path.

/// The path of a Unix socket address: `unix://PATH` or a bare path.
pub(crate) fn socket_path(address: &str) -> &str {
    address.strip_prefix("unix://").unwrap_or(address)
}
