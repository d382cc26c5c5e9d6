//! Network service: the guest's links, routes and neighbours through `hull-net` (its `wire`
//! module converts the messages). Malformed input (a bad MAC, address, prefix or family mix)
//! is INVALID_ARGUMENT; a MAC or device the guest does not have is NOT_FOUND.

use async_trait::async_trait;
use hull_proto::network::*;
use hull_proto::network_ttrpc::Network;
use ttrpc::r#async::TtrpcContext;

use hull_net::wire::{
    family_from_wire, link_from_wire, link_to_wire, neighbor_from_wire, route_from_wire,
    route_to_wire,
};
use hull_net::{self as net, NetError};

use super::handle;
use crate::engine::{error::chain, EngineError};
use crate::portfwd;

/// Serves the Network service.
#[derive(Debug, Clone, Default)]
pub(crate) struct NetworkService;

impl From<NetError> for EngineError {
    fn from(e: NetError) -> EngineError {
        let msg = chain(&e);
        match e {
            NetError::Invalid(_) => EngineError::InvalidArgument(msg),
            NetError::NoSuchMac(_) | NetError::NoSuchLink(_) => EngineError::NotFound(msg),
            NetError::Connect(_) | NetError::Netlink { .. } => EngineError::Internal(msg),
        }
    }
}

#[async_trait]
impl Network for NetworkService {
    async fn update_interfaces(
        &self,
        _c: &TtrpcContext,
        r: UpdateInterfacesRequest,
    ) -> ttrpc::Result<UpdateInterfacesResponse> {
        handle("UpdateInterfaces", async {
            let mut interfaces = Vec::with_capacity(r.interfaces.len());
            for i in &r.interfaces {
                let want = link_from_wire(i)?;
                tracing::info!(name = %want.name, mac = %want.mac, mtu = want.mtu, "configuring guest interface");
                interfaces.push(link_to_wire(&net::update_link(&want).await?));
            }
            Ok(UpdateInterfacesResponse {
                interfaces,
                ..Default::default()
            })
        })
        .await
    }

    async fn update_routes(
        &self,
        _c: &TtrpcContext,
        r: UpdateRoutesRequest,
    ) -> ttrpc::Result<UpdateRoutesResponse> {
        handle("UpdateRoutes", async {
            let want = r
                .routes
                .iter()
                .map(route_from_wire)
                .collect::<Result<Vec<_>, _>>()?;
            let now = net::update_routes(&want).await?;
            Ok(UpdateRoutesResponse {
                routes: now.iter().map(route_to_wire).collect(),
                ..Default::default()
            })
        })
        .await
    }

    async fn add_neighbors(
        &self,
        _c: &TtrpcContext,
        r: AddNeighborsRequest,
    ) -> ttrpc::Result<AddNeighborsResponse> {
        handle("AddNeighbors", async {
            let want = r
                .neighbors
                .iter()
                .map(neighbor_from_wire)
                .collect::<Result<Vec<_>, _>>()?;
            net::add_neighbors(&want).await?;
            Ok(AddNeighborsResponse::default())
        })
        .await
    }

    async fn list_interfaces(
        &self,
        _c: &TtrpcContext,
        _r: ListInterfacesRequest,
    ) -> ttrpc::Result<ListInterfacesResponse> {
        handle("ListInterfaces", async {
            Ok(ListInterfacesResponse {
                interfaces: net::list_links().await?.iter().map(link_to_wire).collect(),
                ..Default::default()
            })
        })
        .await
    }

    async fn list_routes(
        &self,
        _c: &TtrpcContext,
        r: ListRoutesRequest,
    ) -> ttrpc::Result<ListRoutesResponse> {
        handle("ListRoutes", async {
            Ok(ListRoutesResponse {
                routes: net::list_routes(family_from_wire(r.family))
                    .await?
                    .iter()
                    .map(route_to_wire)
                    .collect(),
                ..Default::default()
            })
        })
        .await
    }

    async fn watch_listeners(
        &self,
        _c: &TtrpcContext,
        r: WatchListenersRequest,
    ) -> ttrpc::Result<WatchListenersResponse> {
        handle("WatchListeners", async {
            let wait = std::time::Duration::from_millis(u64::from(r.wait_ms));
            let (generation, ports) = portfwd::watch(&portfwd::proc_net(), r.generation, wait)
                .await
                .map_err(|e| {
                    EngineError::Internal(format!("read the guest's TCP listeners: {e}"))
                })?;
            Ok(WatchListenersResponse {
                generation,
                ports: ports.into_iter().map(u32::from).collect(),
                ..Default::default()
            })
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{EngineError, ErrorCode};

    #[test]
    fn malformed_wire_input_is_invalid_argument() {
        // hull-net's wire tests cover each malformed case; here: its error keeps the code.
        let i = Interface {
            name: "eth0".into(),
            hw_addr: "not-a-mac".into(),
            ..Default::default()
        };
        let e: EngineError = link_from_wire(&i).unwrap_err().into();
        assert_eq!(e.code(), ErrorCode::InvalidArgument);
        let e: EngineError = NetError::NoSuchLink("eth9".into()).into();
        assert_eq!(e.code(), ErrorCode::NotFound);
    }
}
