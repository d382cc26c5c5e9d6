//! Network service: not implemented yet; every method answers UNIMPLEMENTED (the generated
//! defaults) so the shim gets a clear code rather than a missing service.

use hull_proto::network_ttrpc::Network;

/// Serves the Network service (UNIMPLEMENTED for now).
#[derive(Debug, Clone, Default)]
pub struct NetworkService;

impl Network for NetworkService {}
