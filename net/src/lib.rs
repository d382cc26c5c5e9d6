//! hull-net: links, addresses, routes and neighbours over rtnetlink, in the calling thread's
//! network namespace (DESIGN.md §1, §2 net/). The shim reads what CNI made in the pod's netns on
//! the host with the `list_*` functions and sends it to the agent, which applies it to the
//! guest (its only netns: containers join it) with `update_*`/`add_*`. One reader and one
//! writer for both sides, so what the shim reads is exactly what the agent can write.
//!
//! Typed messages, no `ip` binary. One netlink connection per call: calls are rare (pod start
//! and stop), and a connection that lives no longer than its call cannot be left broken
//! between calls. Needs a tokio runtime (the connection runs as a task).
//!
//! [`wire`] converts these types to and from the agent protocol's messages, for both sides.

mod links;
mod neigh;
mod routes;
pub mod wire;

use std::fmt;
use std::net::IpAddr;

pub use links::{link_index, list_links, update_link};
pub use neigh::add_neighbors;
pub use neigh::list_neighbors;
pub use routes::{list_configured_routes, list_routes, update_routes};

/// An Ethernet (MAC) address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Mac(pub [u8; 6]);

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            m[0], m[1], m[2], m[3], m[4], m[5]
        )
    }
}

impl std::str::FromStr for Mac {
    type Err = NetError;

    fn from_str(s: &str) -> Result<Self, NetError> {
        let bad = || NetError::Invalid(format!("'{s}' is not a MAC address (aa:bb:cc:dd:ee:ff)"));
        let mut out = [0u8; 6];
        let mut parts = s.split(':');
        for b in &mut out {
            let p = parts.next().ok_or_else(bad)?;
            if p.len() != 2 {
                return Err(bad());
            }
            *b = u8::from_str_radix(p, 16).map_err(|_| bad())?;
        }
        if parts.next().is_some() {
            return Err(bad());
        }
        Ok(Mac(out))
    }
}

impl Mac {
    /// From a netlink link-layer address attribute (must be 6 bytes).
    fn from_bytes(b: &[u8]) -> Option<Mac> {
        <[u8; 6]>::try_from(b).ok().map(Mac)
    }
}

/// An address with its prefix length, prefix checked against the family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cidr {
    pub(crate) addr: IpAddr,
    pub(crate) prefix: u8,
}

impl Cidr {
    pub fn new(addr: IpAddr, prefix: u8) -> Result<Cidr, NetError> {
        let max = if addr.is_ipv4() { 32 } else { 128 };
        if prefix > max {
            return Err(NetError::Invalid(format!(
                "prefix length {prefix} is too long for {addr} (at most {max})"
            )));
        }
        Ok(Cidr { addr, prefix })
    }

    /// IPv6 link-local (fe80::/10): the kernel derives it from the MAC; never removed.
    pub fn is_v6_link_local(&self) -> bool {
        matches!(self.addr, IpAddr::V6(a) if (a.segments()[0] & 0xffc0) == 0xfe80)
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// A guest link as wanted (update) or as found (list).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub name: String,
    pub mac: Mac,
    /// Bytes; 0 in an update = leave it.
    pub mtu: u32,
    /// The complete set: an update removes the others (IPv6 link-local excepted).
    pub addrs: Vec<Cidr>,
}

/// A route of the main table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// None = the default route of `v6`'s family.
    pub dest: Option<Cidr>,
    pub gateway: Option<IpAddr>,
    /// Outgoing guest link, by name.
    pub device: String,
    pub source: Option<IpAddr>,
    /// The kernel's RT_SCOPE_* value.
    pub scope: u8,
    pub v6: bool,
}

/// Neighbour entry states a caller may set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NeighborState {
    Permanent,
    Reachable,
    Stale,
    NoArp,
}

/// A static ARP (IPv4) or NDP (IPv6) entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Neighbor {
    pub ip: IpAddr,
    pub mac: Mac,
    pub device: String,
    pub state: NeighborState,
}

/// Address family filter of a listing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    V4,
    V6,
}

/// A network configuration failure.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("cannot open a netlink socket: {0}")]
    Connect(#[source] std::io::Error),
    #[error("{what}: {source}")]
    Netlink {
        what: String,
        #[source]
        source: rtnetlink::Error,
    },
    #[error("no guest network interface has MAC {0} (is the VM's NIC configured with it?)")]
    NoSuchMac(Mac),
    #[error("no guest network interface is named '{0}'")]
    NoSuchLink(String),
    #[error("{0}")]
    Invalid(String),
}

impl NetError {
    fn netlink(what: impl Into<String>) -> impl FnOnce(rtnetlink::Error) -> NetError {
        let what = what.into();
        move |source| NetError::Netlink { what, source }
    }
}

/// A netlink handle whose connection task lives until the handle (and its clones) drop.
pub fn connect() -> Result<rtnetlink::Handle, NetError> {
    let (conn, handle, _) = rtnetlink::new_connection().map_err(NetError::Connect)?;
    tokio::spawn(conn);
    Ok(handle)
}

#[cfg(test)]
mod tests;
