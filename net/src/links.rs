//! Links and their addresses: find the guest NIC by MAC, name it, set its MTU and addresses.

use futures_util::TryStreamExt;
use rtnetlink::packet_route::address::{AddressAttribute, AddressFlags, AddressMessage};
use rtnetlink::packet_route::link::{LinkAttribute, LinkFlags, LinkLayerType, LinkMessage};
use rtnetlink::{Handle, LinkUnspec};

use super::{connect, Cidr, Link, Mac, NetError};

/// What a dump says about one link.
#[derive(Debug, Clone)]
pub(super) struct Found {
    pub(super) index: u32,
    pub(super) name: String,
    pub(super) mac: Option<Mac>,
    pub(super) mtu: u32,
    pub(super) ether: bool,
}

fn found(m: &LinkMessage) -> Found {
    let mut f = Found {
        index: m.header.index,
        name: String::new(),
        mac: None,
        mtu: 0,
        ether: m.header.link_layer_type == LinkLayerType::Ether
            && !m.header.flags.contains(LinkFlags::Loopback),
    };
    for a in &m.attributes {
        match a {
            LinkAttribute::IfName(n) => f.name.clone_from(n),
            LinkAttribute::Address(a) => f.mac = Mac::from_bytes(a),
            LinkAttribute::Mtu(m) => f.mtu = *m,
            _ => {}
        }
    }
    f
}

pub(super) async fn dump_links(h: &Handle) -> Result<Vec<Found>, NetError> {
    let msgs: Vec<LinkMessage> = h
        .link()
        .get()
        .execute()
        .try_collect()
        .await
        .map_err(NetError::netlink("list links"))?;
    Ok(msgs.iter().map(found).collect())
}

/// The index of the link named `name`.
pub(super) fn index_of(links: &[Found], name: &str) -> Result<u32, NetError> {
    links
        .iter()
        .find(|l| l.name == name)
        .map(|l| l.index)
        .ok_or_else(|| NetError::NoSuchLink(name.to_owned()))
}

fn cidr_of(m: &AddressMessage) -> Option<Cidr> {
    // IFA_LOCAL is the interface's own address on point-to-point links; IFA_ADDRESS otherwise
    // (and the peer's there), so Local wins when both are present.
    let mut addr = None;
    for a in &m.attributes {
        match a {
            AddressAttribute::Local(ip) => addr = Some(*ip),
            AddressAttribute::Address(ip) if addr.is_none() => addr = Some(*ip),
            _ => {}
        }
    }
    addr.map(|addr| Cidr {
        addr,
        prefix: m.header.prefix_len,
    })
}

async fn dump_addrs(h: &Handle, index: u32) -> Result<Vec<(Cidr, AddressMessage)>, NetError> {
    let msgs: Vec<AddressMessage> = h
        .address()
        .get()
        .set_link_index_filter(index)
        .execute()
        .try_collect()
        .await
        .map_err(NetError::netlink(format!("list addresses of link {index}")))?;
    Ok(msgs
        .into_iter()
        .filter_map(|m| cidr_of(&m).map(|c| (c, m)))
        .collect())
}

async fn set(h: &Handle, msg: LinkMessage, what: String) -> Result<(), NetError> {
    h.link()
        .set(msg)
        .execute()
        .await
        .map_err(NetError::netlink(what))
}

/// Configures the guest link whose MAC is `want.mac`: down, renamed to `want.name` (a link
/// already holding that name is renamed `<name>_old` first), MTU, exactly `want.addrs` (IPv6
/// without duplicate address detection: the pod's netns on the host owns the same address, so
/// DAD would only delay servers binding it), up. Returns the link as it is afterwards.
pub async fn update_link(want: &Link) -> Result<Link, NetError> {
    if want.name.is_empty() || want.name.len() > 15 || want.name.contains(['/', ' ']) {
        return Err(NetError::Invalid(format!(
            "'{}' is not a valid interface name (1-15 characters, no '/' or spaces)",
            want.name
        )));
    }
    let h = connect()?;
    let links = dump_links(&h).await?;
    let cur = links
        .iter()
        .find(|l| l.mac == Some(want.mac))
        .ok_or(NetError::NoSuchMac(want.mac))?;
    let ix = cur.index;
    let name = &want.name;
    set(
        &h,
        LinkUnspec::new_with_index(ix).down().build(),
        format!("set {} down", cur.name),
    )
    .await?;
    if cur.name != *name {
        if let Some(other) = links.iter().find(|l| l.name == *name && l.index != ix) {
            let away = format!("{}_old", &name[..name.len().min(11)]);
            let msg = LinkUnspec::new_with_index(other.index)
                .down()
                .name(away.clone())
                .build();
            set(&h, msg, format!("rename {name} (in the way) to {away}")).await?;
        }
        let msg = LinkUnspec::new_with_index(ix).name(name.clone()).build();
        set(&h, msg, format!("rename {} to {name}", cur.name)).await?;
    }
    if want.mtu != 0 {
        let msg = LinkUnspec::new_with_index(ix).mtu(want.mtu).build();
        set(&h, msg, format!("set the MTU of {name} to {}", want.mtu)).await?;
    }
    let have = dump_addrs(&h, ix).await?;
    for (c, msg) in &have {
        if !want.addrs.contains(c) && !c.is_v6_link_local() {
            h.address()
                .del(msg.clone())
                .execute()
                .await
                .map_err(NetError::netlink(format!("remove {c} from {name}")))?;
        }
    }
    for c in &want.addrs {
        if have.iter().any(|(h, _)| h == c) {
            continue;
        }
        let mut req = h.address().add(ix, c.addr, c.prefix).replace();
        if c.addr.is_ipv6() {
            req.message_mut()
                .attributes
                .push(AddressAttribute::Flags(AddressFlags::Nodad));
        }
        req.execute()
            .await
            .map_err(NetError::netlink(format!("add {c} to {name}")))?;
    }
    set(
        &h,
        LinkUnspec::new_with_index(ix).up().build(),
        format!("set {name} up"),
    )
    .await?;
    read_link(&h, ix).await
}

async fn read_link(h: &Handle, index: u32) -> Result<Link, NetError> {
    let links = dump_links(h).await?;
    let l = links
        .iter()
        .find(|l| l.index == index)
        .ok_or_else(|| NetError::NoSuchLink(format!("#{index}")))?;
    as_link(h, l).await
}

async fn as_link(h: &Handle, l: &Found) -> Result<Link, NetError> {
    let mut addrs: Vec<Cidr> = dump_addrs(h, l.index)
        .await?
        .into_iter()
        .map(|(c, _)| c)
        .collect();
    addrs.sort_by_key(|c| (c.addr.is_ipv6(), c.addr, c.prefix));
    Ok(Link {
        name: l.name.clone(),
        mac: l.mac.unwrap_or(Mac([0; 6])),
        mtu: l.mtu,
        addrs,
    })
}

/// Every Ethernet link of the guest (loopback and non-Ethernet kinds left out).
pub async fn list_links() -> Result<Vec<Link>, NetError> {
    let h = connect()?;
    let mut out = Vec::new();
    for l in dump_links(&h).await?.iter().filter(|l| l.ether) {
        out.push(as_link(&h, l).await?);
    }
    Ok(out)
}

/// The index of the link called `name`.
pub async fn link_index(name: &str) -> Result<u32, NetError> {
    index_of(&dump_links(&connect()?).await?, name)
}
