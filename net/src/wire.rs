//! These types as the agent protocol's Network messages, and back: the one place where the
//! shim (which sends what it read in the pod's netns) and the agent (which applies it to the
//! guest and reports what it has) meet the wire. Messages from the wire are checked: a bad
//! MAC, address, prefix, scope or family mix is [`NetError::Invalid`]. Going out cannot fail.

use std::net::IpAddr;

use hull_proto::network::{self as wire, neighbor, route, IpAddress, IpFamily};
use protobuf::EnumOrUnknown;

use crate::{Cidr, Family, Link, Mac, Neighbor, NeighborState, NetError, Route};

fn invalid(msg: String) -> NetError {
    NetError::Invalid(msg)
}

fn ip(text: &str, what: &str) -> Result<IpAddr, NetError> {
    text.parse()
        .map_err(|_| invalid(format!("{what} '{text}' is not an IP address")))
}

fn opt_ip(text: &str, what: &str) -> Result<Option<IpAddr>, NetError> {
    if text.is_empty() {
        Ok(None)
    } else {
        ip(text, what).map(Some)
    }
}

fn family_of(v6: bool) -> EnumOrUnknown<IpFamily> {
    if v6 {
        IpFamily::IP_FAMILY_V6
    } else {
        IpFamily::IP_FAMILY_V4
    }
    .into()
}

/// The family filter of a list request; unset (or unknown) = both.
pub fn family_from_wire(f: EnumOrUnknown<IpFamily>) -> Option<Family> {
    match f.enum_value() {
        Ok(IpFamily::IP_FAMILY_V4) => Some(Family::V4),
        Ok(IpFamily::IP_FAMILY_V6) => Some(Family::V6),
        _ => None,
    }
}

fn address_to_wire(c: Cidr) -> IpAddress {
    IpAddress {
        family: family_of(c.addr.is_ipv6()),
        address: c.addr.to_string(),
        prefix_len: u32::from(c.prefix),
        ..Default::default()
    }
}

/// The wire form of a link: same name, MAC, MTU and addresses.
pub fn link_to_wire(l: &Link) -> wire::Interface {
    wire::Interface {
        name: l.name.clone(),
        hw_addr: l.mac.to_string(),
        mtu: l.mtu,
        addresses: l.addrs.iter().copied().map(address_to_wire).collect(),
        ..Default::default()
    }
}

/// A link from the wire; each address must be of the family sent with it.
pub fn link_from_wire(i: &wire::Interface) -> Result<Link, NetError> {
    let mut addrs = Vec::with_capacity(i.addresses.len());
    for a in &i.addresses {
        let addr = ip(&a.address, "address")?;
        let family_ok = match a.family.enum_value() {
            Ok(IpFamily::IP_FAMILY_V4) => addr.is_ipv4(),
            Ok(IpFamily::IP_FAMILY_V6) => addr.is_ipv6(),
            _ => true,
        };
        if !family_ok {
            return Err(invalid(format!(
                "address {addr} is not of the family given with it"
            )));
        }
        let prefix = u8::try_from(a.prefix_len)
            .map_err(|_| invalid(format!("prefix length {} of {addr}", a.prefix_len)))?;
        addrs.push(Cidr::new(addr, prefix)?);
    }
    Ok(Link {
        name: i.name.clone(),
        mac: i.hw_addr.parse::<Mac>()?,
        mtu: i.mtu,
        addrs,
    })
}

/// The wire form of a route; a scope the protocol does not name is sent as universe.
pub fn route_to_wire(r: &Route) -> wire::Route {
    use route::Scope;
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
        device: r.device.clone(),
        source: r.source.map(|s| s.to_string()).unwrap_or_default(),
        scope: scope.into(),
        family: family_of(r.v6),
        ..Default::default()
    }
}

/// A route from the wire. Its family is the one sent, else that of its destination, else
/// that of its gateway; a route with none of the three is invalid.
pub fn route_from_wire(r: &wire::Route) -> Result<Route, NetError> {
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
    Ok(Route {
        dest,
        gateway,
        device: r.device.clone(),
        source,
        scope: u8::try_from(scope as i32).unwrap_or(0),
        v6,
    })
}

/// The wire form of a neighbour entry.
pub fn neighbor_to_wire(n: &Neighbor) -> wire::Neighbor {
    use neighbor::State;
    let prefix = if n.ip.is_ipv4() { 32 } else { 128 };
    wire::Neighbor {
        ip: Some(address_to_wire(Cidr { addr: n.ip, prefix })).into(),
        hw_addr: n.mac.to_string(),
        device: n.device.clone(),
        state: match n.state {
            NeighborState::Permanent => State::PERMANENT,
            NeighborState::Reachable => State::REACHABLE,
            NeighborState::Stale => State::STALE,
            NeighborState::NoArp => State::NOARP,
        }
        .into(),
        ..Default::default()
    }
}

/// A neighbour entry from the wire.
pub fn neighbor_from_wire(n: &wire::Neighbor) -> Result<Neighbor, NetError> {
    use neighbor::State;
    let ip = ip(&n.ip.address, "neighbour address")?;
    let state = match n.state.enum_value() {
        Ok(State::PERMANENT) => NeighborState::Permanent,
        Ok(State::REACHABLE) => NeighborState::Reachable,
        Ok(State::STALE) => NeighborState::Stale,
        Ok(State::NOARP) => NeighborState::NoArp,
        Err(v) => return Err(invalid(format!("neighbour state {v} is unknown"))),
    };
    Ok(Neighbor {
        ip,
        mac: n.hw_addr.parse()?,
        device: n.device.clone(),
        state,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn is_invalid<T: std::fmt::Debug>(r: Result<T, NetError>) -> bool {
        matches!(r, Err(NetError::Invalid(_)))
    }

    #[test]
    fn malformed_links_are_invalid() {
        let mut i = wire::Interface {
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
        assert!(is_invalid(link_from_wire(&i)), "family mix");
        i.addresses[0].family = IpFamily::IP_FAMILY_V4.into();
        i.addresses[0].prefix_len = 300;
        assert!(is_invalid(link_from_wire(&i)), "prefix beyond u8");
        i.addresses[0].prefix_len = 33;
        assert!(is_invalid(link_from_wire(&i)), "prefix beyond /32");
        i.addresses[0].prefix_len = 24;
        assert!(link_from_wire(&i).is_ok());
        i.hw_addr = "not-a-mac".into();
        assert!(is_invalid(link_from_wire(&i)), "bad MAC");
    }

    #[test]
    fn malformed_routes_and_neighbours_are_invalid() {
        let r = wire::Route {
            dest: "10.0.0.0/99".into(),
            device: "eth0".into(),
            ..Default::default()
        };
        assert!(is_invalid(route_from_wire(&r)));
        let r = wire::Route {
            device: "eth0".into(),
            ..Default::default()
        };
        assert!(is_invalid(route_from_wire(&r)), "no family at all");
        let n = wire::Neighbor {
            hw_addr: "02:42:0a:58:00:05".into(),
            ..Default::default()
        };
        assert!(is_invalid(neighbor_from_wire(&n)), "no address");
    }

    #[test]
    fn round_trips_keep_everything() {
        let link = Link {
            name: "eth0".into(),
            mac: "02:42:0a:58:00:05".parse().unwrap(),
            mtu: 1450,
            addrs: vec![
                Cidr::new("10.88.0.5".parse().unwrap(), 16).unwrap(),
                Cidr::new("fd88::5".parse().unwrap(), 64).unwrap(),
            ],
        };
        assert_eq!(link_from_wire(&link_to_wire(&link)).unwrap(), link);
        for (dest, gateway, scope, v6) in [
            (None, Some("fd88::1"), 0, true),
            (Some(("10.88.0.0", 16)), None, 253, false),
            (Some(("10.1.2.3", 32)), Some("10.88.0.1"), 0, false),
        ] {
            let route = Route {
                dest: dest.map(|(a, p)| Cidr::new(a.parse().unwrap(), p).unwrap()),
                gateway: gateway.map(|g| g.parse().unwrap()),
                device: "eth0".into(),
                source: None,
                scope,
                v6,
            };
            assert_eq!(route_from_wire(&route_to_wire(&route)).unwrap(), route);
        }
        for (ip, state) in [
            ("10.88.0.1", NeighborState::Permanent),
            ("fd88::1", NeighborState::NoArp),
        ] {
            let n = Neighbor {
                ip: ip.parse().unwrap(),
                mac: "02:42:0a:58:00:01".parse().unwrap(),
                device: "eth0".into(),
                state,
            };
            assert_eq!(neighbor_from_wire(&neighbor_to_wire(&n)).unwrap(), n);
        }
        assert_eq!(
            family_from_wire(IpFamily::IP_FAMILY_V6.into()),
            Some(Family::V6)
        );
    }
}
