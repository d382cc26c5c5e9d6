//! The pod network as agent requests: the only place the shim's network types meet the wire.

use std::net::IpAddr;

use hull_proto::network::{
    neighbor, route, AddNeighborsRequest, Interface, IpAddress, IpFamily, Neighbor, Route,
    UpdateInterfacesRequest, UpdateRoutesRequest,
};

use super::PodLinks;

fn family(v6: bool) -> IpFamily {
    if v6 {
        IpFamily::IP_FAMILY_V6
    } else {
        IpFamily::IP_FAMILY_V4
    }
}

fn address(ip: IpAddr, prefix: u8) -> IpAddress {
    IpAddress {
        family: family(ip.is_ipv6()).into(),
        address: ip.to_string(),
        prefix_len: u32::from(prefix),
        ..Default::default()
    }
}

/// Each CNI link as the guest NIC with the same MAC must become: same name, MTU, addresses.
pub fn interfaces(n: &PodLinks) -> UpdateInterfacesRequest {
    UpdateInterfacesRequest {
        interfaces: n
            .links
            .iter()
            .map(|l| Interface {
                name: l.name.clone(),
                hw_addr: l.mac.to_string(),
                mtu: l.mtu,
                addresses: l.addrs.iter().map(|c| address(c.addr, c.prefix)).collect(),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    }
}

/// The netns' configured routes; the guest adds the prefix routes of its addresses itself.
pub fn routes(n: &PodLinks) -> UpdateRoutesRequest {
    UpdateRoutesRequest {
        routes: n
            .routes
            .iter()
            .map(|r| Route {
                dest: r.dest.map(|d| d.to_string()).unwrap_or_default(),
                gateway: r.gateway.map(|g| g.to_string()).unwrap_or_default(),
                device: r.device.clone(),
                source: r.source.map(|s| s.to_string()).unwrap_or_default(),
                scope: match r.scope {
                    200 => route::Scope::SITE,
                    253 => route::Scope::LINK,
                    254 => route::Scope::HOST,
                    255 => route::Scope::NOWHERE,
                    _ => route::Scope::UNIVERSE,
                }
                .into(),
                family: family(r.v6).into(),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    }
}

/// The netns' static neighbour entries.
pub fn neighbors(n: &PodLinks) -> AddNeighborsRequest {
    AddNeighborsRequest {
        neighbors: n
            .neighbors
            .iter()
            .map(|e| Neighbor {
                ip: Some(address(e.ip, if e.ip.is_ipv4() { 32 } else { 128 })).into(),
                hw_addr: e.mac.to_string(),
                device: e.device.clone(),
                state: match e.state {
                    hull_net::NeighborState::Permanent => neighbor::State::PERMANENT,
                    hull_net::NeighborState::Reachable => neighbor::State::REACHABLE,
                    hull_net::NeighborState::Stale => neighbor::State::STALE,
                    hull_net::NeighborState::NoArp => neighbor::State::NOARP,
                }
                .into(),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    }
}
