//! Routes of the main table: make them what the pod's netns has on the host.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use futures_util::TryStreamExt;
use rtnetlink::packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use rtnetlink::{Handle, RouteMessageBuilder};

use super::links::{dump_links, index_of, Found};
use super::{connect, Cidr, Family, NetError, Route};

fn ip_of(a: &RouteAddress) -> Option<IpAddr> {
    match a {
        RouteAddress::Inet(v4) => Some(IpAddr::V4(*v4)),
        RouteAddress::Inet6(v6) => Some(IpAddr::V6(*v6)),
        _ => None,
    }
}

fn table_of(m: &RouteMessage) -> u32 {
    m.attributes
        .iter()
        .find_map(|a| match a {
            RouteAttribute::Table(t) => Some(*t),
            _ => None,
        })
        .unwrap_or(u32::from(m.header.table))
}

/// A main-table unicast route as a [`Route`]; None for the rest (local/broadcast/multicast
/// entries, other tables, routes through links the dump did not show).
fn as_route(m: &RouteMessage, links: &[Found]) -> Option<Route> {
    if table_of(m) != u32::from(RouteHeader::RT_TABLE_MAIN) || m.header.kind != RouteType::Unicast {
        return None;
    }
    let v6 = m.header.address_family == rtnetlink::packet_route::AddressFamily::Inet6;
    let (mut dest, mut gateway, mut source, mut oif) = (None, None, None, None);
    for a in &m.attributes {
        match a {
            RouteAttribute::Destination(d) => dest = ip_of(d),
            RouteAttribute::Gateway(g) => gateway = ip_of(g),
            RouteAttribute::PrefSource(s) => source = ip_of(s),
            RouteAttribute::Oif(i) => oif = Some(*i),
            _ => {}
        }
    }
    let device = links.iter().find(|l| Some(l.index) == oif)?.name.clone();
    let prefix = m.header.destination_prefix_length;
    let dest = match dest {
        Some(addr) => Some(Cidr { addr, prefix }),
        // The default route carries no destination attribute.
        None if prefix == 0 => None,
        None => return None,
    };
    Some(Route {
        dest,
        gateway,
        device,
        source,
        scope: u8::from(m.header.scope),
        v6,
    })
}

async fn dump(h: &Handle, family: Family) -> Result<Vec<RouteMessage>, NetError> {
    let req = match family {
        Family::V4 => RouteMessageBuilder::<Ipv4Addr>::new().build(),
        Family::V6 => RouteMessageBuilder::<Ipv6Addr>::new().build(),
    };
    h.route()
        .get(req)
        .execute()
        .try_collect()
        .await
        .map_err(NetError::netlink("list routes"))
}

fn same_target(a: &Route, b: &Route) -> bool {
    a.v6 == b.v6 && a.dest == b.dest && a.gateway == b.gateway && a.device == b.device
}

fn message(r: &Route, links: &[Found]) -> Result<RouteMessage, NetError> {
    let ix = index_of(links, &r.device)?;
    fn bad<E: std::fmt::Display>(r: &Route) -> impl Fn(E) -> NetError + '_ {
        move |e| NetError::Invalid(format!("route {r:?}: {e}"))
    }
    let zero = if r.v6 {
        IpAddr::V6(Ipv6Addr::UNSPECIFIED)
    } else {
        IpAddr::V4(Ipv4Addr::UNSPECIFIED)
    };
    let dest = r.dest.unwrap_or(Cidr {
        addr: zero,
        prefix: 0,
    });
    if dest.addr.is_ipv6() != r.v6 {
        return Err(NetError::Invalid(format!(
            "route to {dest}: the destination's family differs from the route's"
        )));
    }
    let mut b = RouteMessageBuilder::<IpAddr>::new()
        .destination_prefix(dest.addr, dest.prefix)
        .map_err(bad(r))?
        .output_interface(ix)
        .scope(RouteScope::from(r.scope))
        // Marks hull-made routes as configured ones, as `ip route add` would (not kernel-made).
        .protocol(RouteProtocol::Boot);
    if let Some(g) = r.gateway {
        if g.is_ipv6() != r.v6 {
            return Err(NetError::Invalid(format!(
                "route to {dest}: gateway {g} is of the other family"
            )));
        }
        b = b.gateway(g).map_err(bad(r))?;
    }
    if let Some(s) = r.source {
        b = b.pref_source(s).map_err(bad(r))?;
    }
    Ok(b.build())
}

/// Makes the main table hold exactly `want` next to the kernel's own routes (prefix and
/// link-local routes, which follow the addresses): other configured routes go, wanted ones
/// are added or replaced — routes without a gateway first, so a gateway outside every subnet
/// (Calico's 169.254.1.1 with a link-scope route to it) is reachable when its route is added.
pub async fn update_routes(want: &[Route]) -> Result<Vec<Route>, NetError> {
    let h = connect()?;
    let links = dump_links(&h).await?;
    for r in want {
        index_of(&links, &r.device)?;
    }
    for family in [Family::V4, Family::V6] {
        for m in dump(&h, family).await? {
            if m.header.protocol == RouteProtocol::Kernel {
                continue;
            }
            let Some(r) = as_route(&m, &links) else {
                continue;
            };
            if !want.iter().any(|w| same_target(w, &r)) {
                h.route()
                    .del(m)
                    .execute()
                    .await
                    .map_err(NetError::netlink(format!("remove route {r:?}")))?;
            }
        }
    }
    let (direct, via): (Vec<&Route>, Vec<&Route>) = want.iter().partition(|r| r.gateway.is_none());
    for r in direct.into_iter().chain(via) {
        h.route()
            .add(message(r, &links)?)
            .replace()
            .execute()
            .await
            .map_err(NetError::netlink(format!("add route {r:?}")))?;
    }
    list_with(&h, None, true).await
}

async fn list_with(
    h: &Handle,
    family: Option<Family>,
    with_kernel: bool,
) -> Result<Vec<Route>, NetError> {
    let links = dump_links(h).await?;
    let mut out = Vec::new();
    for f in [Family::V4, Family::V6] {
        if family.is_some_and(|want| want != f) {
            continue;
        }
        out.extend(
            dump(h, f)
                .await?
                .iter()
                .filter(|m| with_kernel || m.header.protocol != RouteProtocol::Kernel)
                .filter_map(|m| as_route(m, &links)),
        );
    }
    Ok(out)
}

/// The main table's unicast routes (`None` = both families).
pub async fn list_routes(family: Option<Family>) -> Result<Vec<Route>, NetError> {
    list_with(&connect()?, family, true).await
}

/// The main table's unicast routes without the kernel's own (the prefix and link-local routes
/// that follow from addresses): what someone configured (CNI, on the host), so what a copy of
/// this namespace must be told besides its addresses.
pub async fn list_configured_routes() -> Result<Vec<Route>, NetError> {
    list_with(&connect()?, None, false).await
}
