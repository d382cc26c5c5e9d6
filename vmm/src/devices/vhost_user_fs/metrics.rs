//! virtio-fs counters. The requests themselves are the back end's, so these only tell whether
//! the hand-over worked, next to what was negotiated with the back end when the VM was built.

use serde::Serialize;

use crate::metrics::Counter;

#[derive(Debug, Default, Serialize)]
pub struct FsMetrics {
    /// The back end's socket.
    pub socket: String,
    /// The back end's features and vhost-user protocol features, as hex strings.
    pub backend_features: String,
    pub protocol_features: String,
    /// Vrings handed to the back end at activation.
    pub vrings_started: Counter,
    /// Back-end refusals or a lost connection (each ends the VM).
    pub backend_errors: Counter,
}
