//! Network service: not implemented yet (guest networking is a later issue). Every method
//! answers UNIMPLEMENTED with a message saying so. The generated trait defaults would answer
//! NOT_FOUND ("... is not supported"), which a shim could mistake for a missing interface
//! or route rather than a missing feature.

use async_trait::async_trait;
use hull_proto::network::*;
use hull_proto::network_ttrpc::Network;
use ttrpc::r#async::TtrpcContext;

/// Serves the Network service (UNIMPLEMENTED for now).
#[derive(Debug, Clone, Default)]
pub struct NetworkService;

fn unimplemented<T>(method: &str) -> ttrpc::Result<T> {
    Err(ttrpc::Error::RpcStatus(ttrpc::get_status(
        ttrpc::Code::UNIMPLEMENTED,
        format!(
            "Network.{method} is not implemented by this hull-agent {}: guest networking is \
             not supported yet",
            crate::AGENT_VERSION
        ),
    )))
}

#[async_trait]
impl Network for NetworkService {
    async fn update_interfaces(
        &self,
        _c: &TtrpcContext,
        _r: UpdateInterfacesRequest,
    ) -> ttrpc::Result<UpdateInterfacesResponse> {
        unimplemented("UpdateInterfaces")
    }

    async fn update_routes(
        &self,
        _c: &TtrpcContext,
        _r: UpdateRoutesRequest,
    ) -> ttrpc::Result<UpdateRoutesResponse> {
        unimplemented("UpdateRoutes")
    }

    async fn add_neighbors(
        &self,
        _c: &TtrpcContext,
        _r: AddNeighborsRequest,
    ) -> ttrpc::Result<AddNeighborsResponse> {
        unimplemented("AddNeighbors")
    }

    async fn list_interfaces(
        &self,
        _c: &TtrpcContext,
        _r: ListInterfacesRequest,
    ) -> ttrpc::Result<ListInterfacesResponse> {
        unimplemented("ListInterfaces")
    }

    async fn list_routes(
        &self,
        _c: &TtrpcContext,
        _r: ListRoutesRequest,
    ) -> ttrpc::Result<ListRoutesResponse> {
        unimplemented("ListRoutes")
    }
}
