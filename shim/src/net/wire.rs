//! The pod network as agent requests (the messages themselves come from `hull_net::wire`, the
//! one converter both sides use).

use hull_net::wire::{link_to_wire, neighbor_to_wire, route_to_wire};
use hull_proto::network::{AddNeighborsRequest, UpdateInterfacesRequest, UpdateRoutesRequest};

use super::PodLinks;

/// Each CNI link as the guest NIC with the same MAC must become: same name, MTU, addresses.
pub(crate) fn interfaces(n: &PodLinks) -> UpdateInterfacesRequest {
    UpdateInterfacesRequest {
        interfaces: n.links.iter().map(link_to_wire).collect(),
        ..Default::default()
    }
}

/// The netns' configured routes; the guest adds the prefix routes of its addresses itself.
pub(crate) fn routes(n: &PodLinks) -> UpdateRoutesRequest {
    UpdateRoutesRequest {
        routes: n.routes.iter().map(route_to_wire).collect(),
        ..Default::default()
    }
}

/// The netns' static neighbour entries.
pub(crate) fn neighbors(n: &PodLinks) -> AddNeighborsRequest {
    AddNeighborsRequest {
        neighbors: n.neighbors.iter().map(neighbor_to_wire).collect(),
        ..Default::default()
    }
}
