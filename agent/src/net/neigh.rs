//! Static neighbour entries (ARP for IPv4, NDP for IPv6).

use rtnetlink::packet_route::neighbour::NeighbourState;

use super::links::{dump_links, index_of};
use super::{connect, Neighbor, NeighborState, NetError};

/// Adds (or replaces) each entry on its guest link.
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
