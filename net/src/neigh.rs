//! Static neighbour entries (ARP for IPv4, NDP for IPv6).

use std::net::IpAddr;

use futures_util::TryStreamExt;
use rtnetlink::packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourMessage, NeighbourState,
};

use super::links::{dump_links, index_of};
use super::{connect, Mac, Neighbor, NeighborState, NetError};

/// Adds (or replaces) each entry on its link.
pub async fn add_neighbors(entries: &[Neighbor]) -> Result<(), NetError> {
    if entries.is_empty() {
        return Ok(());
    }
    let h = connect()?;
    let links = dump_links(&h).await?;
    for n in entries {
        let ix = index_of(&links, &n.device)?;
        let state = match n.state {
            NeighborState::Permanent => NeighbourState::Permanent,
            NeighborState::Reachable => NeighbourState::Reachable,
            NeighborState::Stale => NeighbourState::Stale,
            NeighborState::NoArp => NeighbourState::Noarp,
        };
        h.neighbours()
            .add(ix, n.ip)
            .link_layer_address(&n.mac.0)
            .state(state)
            .replace()
            .execute()
            .await
            .map_err(NetError::netlink(format!(
                "add neighbour {} at {} on {}",
                n.ip, n.mac, n.device
            )))?;
    }
    Ok(())
}

fn as_neighbor(m: &NeighbourMessage, device: &str) -> Option<Neighbor> {
    let state = match m.header.state {
        NeighbourState::Permanent => NeighborState::Permanent,
        NeighbourState::Noarp => NeighborState::NoArp,
        _ => return None,
    };
    let (mut ip, mut mac) = (None, None);
    for a in &m.attributes {
        match a {
            NeighbourAttribute::Destination(NeighbourAddress::Inet(v4)) => {
                ip = Some(IpAddr::V4(*v4))
            }
            NeighbourAttribute::Destination(NeighbourAddress::Inet6(v6)) => {
                ip = Some(IpAddr::V6(*v6))
            }
            NeighbourAttribute::LinkLayerAddress(l) => mac = Mac::from_bytes(l),
            _ => {}
        }
    }
    Some(Neighbor {
        ip: ip?,
        mac: mac?,
        device: device.to_owned(),
        state,
    })
}

/// The static entries (PERMANENT or NOARP, with a link-layer address) of every link: what
/// someone configured, not what the kernel learnt. Multicast addresses are left out: their
/// NOARP entries (e.g. ff02::16 → 33:33:00:00:00:16, made when a link sends its first MLD
/// report) are the kernel's own mapping, which every kernel derives by itself, and whether one
/// exists yet depends on timing.
pub async fn list_neighbors() -> Result<Vec<Neighbor>, NetError> {
    let h = connect()?;
    let links = dump_links(&h).await?;
    let msgs: Vec<NeighbourMessage> = h
        .neighbours()
        .get()
        .execute()
        .try_collect()
        .await
        .map_err(NetError::netlink("list neighbours"))?;
    Ok(msgs
        .iter()
        .filter_map(|m| {
            let dev = links.iter().find(|l| l.index == m.header.ifindex)?;
            as_neighbor(m, &dev.name).filter(|n| !n.ip.is_multicast())
        })
        .collect())
}
