//! Network service: wire messages to [`crate::net`] types and back. Malformed input (a bad
//! MAC, address, prefix or family mix) is INVALID_ARGUMENT; a MAC or device the guest does not
//! have is NOT_FOUND.

use std::net::IpAddr;

use async_trait::async_trait;
use hull_proto::network::{self as wire, *};
use hull_proto::network_ttrpc::Network;
use protobuf::EnumOrUnknown;
use ttrpc::r#async::TtrpcContext;

use hull_net::{self as net, Cidr, Family, Mac, NeighborState, NetError};

use super::handle;
use crate::engine::{error::chain, EngineError, Result};

/// Serves the Network service.
#[derive(Debug, Clone, Default)]
pub struct NetworkService;

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

fn invalid(msg: String) -> EngineError {
    NetError::Invalid(msg).into()
}

fn ip(text: &str, what: &str) -> Result<IpAddr> {
    text.parse()
        .map_err(|_| invalid(format!("{what} '{text}' is not an IP address")))
}

fn opt_ip(text: &str, what: &str) -> Result<Option<IpAddr>> {
    if text.is_empty() {
        Ok(None)
    } else {
        ip(text, what).map(Some)
    }
}

fn mac(text: &str) -> Result<Mac> {
    text.parse::<Mac>().map_err(EngineError::from)
}

fn family_matches(f: EnumOrUnknown<IpFamily>, addr: IpAddr) -> bool {
    match f.enum_value() {
        Ok(IpFamily::IP_FAMILY_V4) => addr.is_ipv4(),
        Ok(IpFamily::IP_FAMILY_V6) => addr.is_ipv6(),
        _ => true,
    }
}

fn family_of(addr: IpAddr) -> IpFamily {
    if addr.is_ipv4() {
        IpFamily::IP_FAMILY_V4
    } else {
        IpFamily::IP_FAMILY_V6
    }
}

fn link_in(i: &Interface) -> Result<net::Link> {
    let mut addrs = Vec::with_capacity(i.addresses.len());
    for a in &i.addresses {
        let addr = ip(&a.address, "address")?;
        if !family_matches(a.family, addr) {
            return Err(invalid(format!(
                "address {addr} is not of the family given with it"
            )));
        }
        let prefix = u8::try_from(a.prefix_len)
            .map_err(|_| invalid(format!("prefix length {} of {addr}", a.prefix_len)))?;
        addrs.push(Cidr::new(addr, prefix)?);
    }
    Ok(net::Link {
        name: i.name.clone(),
        mac: mac(&i.hw_addr)?,
        mtu: i.mtu,
        addrs,
    })
}

fn link_out(l: net::Link) -> Interface {
    Interface {
        name: l.name,
        hw_addr: l.mac.to_string(),
        mtu: l.mtu,
        addresses: l
            .addrs
            .into_iter()
            .map(|c| IpAddress {
                family: family_of(c.addr).into(),
                address: c.addr.to_string(),
                prefix_len: u32::from(c.prefix),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    }
}

fn route_in(r: &wire::Route) -> Result<net::Route> {
    let dest = if r.dest.is_empty() {
        None
    } else {
        let (a, p) = r.dest.split_once('/').unwrap_or((&r.dest, ""));
        let addr = ip(a, "route destination")?;
        let prefix = match p {
            "" if addr.is_ipv4() => 32,
            "" => 128,
            p => p
                .parse()
                .map_err(|_| invalid(format!("route destination '{}': bad prefix", r.dest)))?,
        };
        Some(Cidr::new(addr, prefix)?)
    };
    let gateway = opt_ip(&r.gateway, "route gateway")?;
    let source = opt_ip(&r.source, "route source")?;
    let v6 = match (r.family.enum_value(), dest, gateway) {
        (Ok(IpFamily::IP_FAMILY_V6), ..) => true,
        (Ok(IpFamily::IP_FAMILY_V4), ..) => false,
        (_, Some(d), _) => d.addr.is_ipv6(),
        (_, None, Some(g)) => g.is_ipv6(),
        _ => {
            return Err(invalid(format!(
                "route {:?}: no family, destination or gateway",
                r.dest
            )))
        }
    };
    let scope = r
        .scope
        .enum_value()
        .map_err(|v| invalid(format!("route scope {v} is not one of RT_SCOPE_*")))?;
    Ok(net::Route {
        dest,
        gateway,
        device: r.device.clone(),
        source,
        scope: u8::try_from(scope as i32).unwrap_or(0),
        v6,
    })
}

fn route_out(r: net::Route) -> wire::Route {
    use wire::route::Scope;
    let scope = match r.scope {
        200 => Scope::SITE,
        253 => Scope::LINK,
        254 => Scope::HOST,
        255 => Scope::NOWHERE,
        _ => Scope::UNIVERSE,
    };
    wire::Route {
        dest: r.dest.map(|c| c.to_string()).unwrap_or_default(),
        gateway: r.gateway.map(|g| g.to_string()).unwrap_or_default(),
        device: r.device,
        source: r.source.map(|s| s.to_string()).unwrap_or_default(),
        scope: scope.into(),
        family: if r.v6 {
            IpFamily::IP_FAMILY_V6
        } else {
            IpFamily::IP_FAMILY_V4
        }
        .into(),
        ..Default::default()
    }
}

fn neighbor_in(n: &Neighbor) -> Result<net::Neighbor> {
    use wire::neighbor::State;
    let ip = ip(&n.ip.address, "neighbour address")?;
    let state = match n.state.enum_value() {
        Ok(State::PERMANENT) => NeighborState::Permanent,
        Ok(State::REACHABLE) => NeighborState::Reachable,
        Ok(State::STALE) => NeighborState::Stale,
        Ok(State::NOARP) => NeighborState::NoArp,
        Err(v) => return Err(invalid(format!("neighbour state {v} is unknown"))),
    };
    Ok(net::Neighbor {
        ip,
        mac: mac(&n.hw_addr)?,
        device: n.device.clone(),
        state,
    })
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
                let want = link_in(i)?;
                tracing::info!(name = %want.name, mac = %want.mac, mtu = want.mtu, "configuring guest interface");
                interfaces.push(link_out(net::update_link(&want).await?));
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
            let want = r.routes.iter().map(route_in).collect::<Result<Vec<_>>>()?;
            let now = net::update_routes(&want).await?;
            Ok(UpdateRoutesResponse {
                routes: now.into_iter().map(route_out).collect(),
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
                .map(neighbor_in)
                .collect::<Result<Vec<_>>>()?;
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
                interfaces: net::list_links().await?.into_iter().map(link_out).collect(),
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
            let family = match r.family.enum_value() {
                Ok(IpFamily::IP_FAMILY_V4) => Some(Family::V4),
                Ok(IpFamily::IP_FAMILY_V6) => Some(Family::V6),
                _ => None,
            };
            Ok(ListRoutesResponse {
                routes: net::list_routes(family)
                    .await?
                    .into_iter()
                    .map(route_out)
                    .collect(),
                ..Default::default()
            })
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn malformed_wire_input_is_invalid_argument() {
        use crate::engine::ErrorCode::InvalidArgument;
        let mut i = Interface {
            name: "eth0".into(),
            hw_addr: "02:42:0a:58:00:05".into(),
            ..Default::default()
        };
        i.addresses.push(IpAddress {
            family: IpFamily::IP_FAMILY_V6.into(),
            address: "10.0.0.1".into(),
            prefix_len: 24,
            ..Default::default()
        });
        assert_eq!(link_in(&i).unwrap_err().code(), InvalidArgument);
        i.addresses[0].family = IpFamily::IP_FAMILY_V4.into();
        i.addresses[0].prefix_len = 300;
        assert_eq!(link_in(&i).unwrap_err().code(), InvalidArgument);
        i.addresses[0].prefix_len = 24;
        assert!(link_in(&i).is_ok());
        i.hw_addr = "not-a-mac".into();
        assert_eq!(link_in(&i).unwrap_err().code(), InvalidArgument);

        let r = wire::Route {
            dest: "10.0.0.0/99".into(),
            device: "eth0".into(),
            ..Default::default()
        };
        assert_eq!(route_in(&r).unwrap_err().code(), InvalidArgument);
        let r = wire::Route {
            device: "eth0".into(),
            ..Default::default()
        };
        assert_eq!(
            route_in(&r).unwrap_err().code(),
            InvalidArgument,
            "no family at all"
        );
        let r = wire::Route {
            gateway: "fd00::1".into(),
            device: "eth0".into(),
            ..Default::default()
        };
        let r = route_in(&r).unwrap();
        assert!(r.v6 && r.dest.is_none());
        assert_eq!(route_out(r).family.enum_value(), Ok(IpFamily::IP_FAMILY_V6));
    }
}
