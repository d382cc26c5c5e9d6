//! Real netlink in a fresh network namespace per test (root, as CI runs): a veth pair stands
//! in for the VM's NIC, found by its MAC exactly as the guest's virtio-net device is.

use std::future::Future;
use std::net::IpAddr;

use futures_util::TryStreamExt;
use rtnetlink::packet_route::neighbour::{NeighbourAddress, NeighbourAttribute, NeighbourState};
use rtnetlink::{LinkUnspec, LinkVeth};

use super::*;

const NIC: Mac = Mac([0x02, 0x42, 0x0a, 0x58, 0x00, 0x05]);

/// Runs `f` on a thread of its own in a new network namespace (the test process' namespace is
/// untouched), with the veth pair `nic0` (MAC `NIC`) / `peer0`, both up.
fn in_netns<F, Fut>(f: F) -> Fut::Output
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future,
    Fut::Output: Send + 'static,
{
    std::thread::spawn(move || {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)
            .expect("unshare(CLONE_NEWNET): the agent's tests run as root");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let h = connect().unwrap();
            h.link()
                .add(
                    LinkVeth::new("nic0", "peer0")
                        .address(NIC.0.to_vec())
                        .build(),
                )
                .execute()
                .await
                .unwrap();
            for name in ["peer0", "nic0"] {
                let ix = h
                    .link()
                    .get()
                    .match_name(name)
                    .execute()
                    .try_next()
                    .await
                    .unwrap()
                    .unwrap()
                    .header
                    .index;
                h.link()
                    .set(LinkUnspec::new_with_index(ix).up().build())
                    .execute()
                    .await
                    .unwrap();
            }
            f().await
        })
    })
    .join()
    .expect("test thread")
}

fn cidr(s: &str) -> Cidr {
    let (a, p) = s.split_once('/').unwrap();
    Cidr::new(a.parse().unwrap(), p.parse().unwrap()).unwrap()
}

fn eth0(addrs: &[&str]) -> Link {
    Link {
        name: "eth0".into(),
        mac: NIC,
        mtu: 1400,
        addrs: addrs.iter().map(|a| cidr(a)).collect(),
    }
}

fn route(dest: Option<&str>, gw: Option<&str>, scope: u8) -> Route {
    let dest = dest.map(cidr);
    let gateway: Option<IpAddr> = gw.map(|g| g.parse().unwrap());
    Route {
        v6: dest
            .map(|d| d.addr.is_ipv6())
            .or(gateway.map(|g| g.is_ipv6()))
            .unwrap(),
        dest,
        gateway,
        device: "eth0".into(),
        source: None,
        scope,
    }
}

#[test]
fn mac_and_cidr_parse_strictly() {
    assert_eq!("02:42:0a:58:00:05".parse::<Mac>().unwrap(), NIC);
    assert_eq!(NIC.to_string(), "02:42:0a:58:00:05");
    for bad in [
        "",
        "02:42:0a:58:00",
        "02:42:0a:58:00:05:06",
        "2:42:0a:58:00:05",
        "zz:42:0a:58:00:05",
    ] {
        assert!(
            matches!(bad.parse::<Mac>(), Err(NetError::Invalid(_))),
            "{bad}"
        );
    }
    assert!(Cidr::new("10.0.0.1".parse().unwrap(), 33).is_err());
    assert!(Cidr::new("fd00::1".parse().unwrap(), 128).is_ok());
    assert!(cidr("fe80::1/64").is_v6_link_local());
    assert!(!cidr("fd00::1/64").is_v6_link_local());
}

#[test]
fn the_nic_is_found_by_mac_renamed_and_given_exactly_its_addresses() {
    let (first, second) = in_netns(|| async {
        let first = update_link(&eth0(&["10.1.2.3/24", "fd00::3/64"]))
            .await
            .unwrap();
        // The full set replaces the old one.
        let second = update_link(&eth0(&["10.1.2.4/24"])).await.unwrap();
        (first, second)
    });
    assert_eq!(
        (first.name.as_str(), first.mac, first.mtu),
        ("eth0", NIC, 1400)
    );
    assert!(first.addrs.contains(&cidr("10.1.2.3/24")), "{first:?}");
    assert!(first.addrs.contains(&cidr("fd00::3/64")), "{first:?}");
    let global: Vec<_> = second
        .addrs
        .iter()
        .filter(|c| !c.is_v6_link_local())
        .collect();
    assert_eq!(global, [&cidr("10.1.2.4/24")], "{second:?}");
}

#[test]
fn a_link_holding_the_wanted_name_is_moved_aside() {
    let links = in_netns(|| async {
        let h = connect().unwrap();
        h.link()
            .add(LinkVeth::new("eth0", "peer1").build())
            .execute()
            .await
            .unwrap();
        update_link(&eth0(&["10.1.2.3/24"])).await.unwrap();
        list_links().await.unwrap()
    });
    let names: Vec<(&str, Mac)> = links.iter().map(|l| (l.name.as_str(), l.mac)).collect();
    assert!(names.contains(&("eth0", NIC)), "{names:?}");
    assert!(
        names.iter().any(|(n, m)| *n == "eth0_old" && *m != NIC),
        "{names:?}"
    );
}

#[test]
fn unknown_mac_or_device_and_bad_names_are_clear_errors() {
    let (mac, dev, name) = in_netns(|| async {
        let mut l = eth0(&[]);
        l.mac = Mac([2, 0, 0, 0, 0, 9]);
        let mac = update_link(&l).await.unwrap_err();
        let dev = update_routes(&[Route {
            device: "nope0".into(),
            ..route(None, Some("10.1.2.1"), 0)
        }])
        .await
        .unwrap_err();
        let mut l = eth0(&[]);
        l.name = "a/b".into();
        let name = update_link(&l).await.unwrap_err();
        (mac, dev, name)
    });
    assert!(mac.to_string().contains("02:00:00:00:00:09"), "{mac}");
    assert!(matches!(mac, NetError::NoSuchMac(_)), "{mac}");
    assert!(dev.to_string().contains("nope0"), "{dev}");
    assert!(matches!(dev, NetError::NoSuchLink(_)), "{dev}");
    assert!(matches!(name, NetError::Invalid(_)), "{name}");
}

#[test]
fn routes_become_exactly_the_wanted_set_next_to_the_kernels() {
    const LINK: u8 = 253;
    let (all, after, v6) = in_netns(|| async {
        update_link(&eth0(&["10.1.2.3/24", "fd00::3/64"]))
            .await
            .unwrap();
        let want = [
            // Calico's shape: a gateway outside every subnet, reached by a link route. Given
            // gateway route first: the agent orders them.
            route(Some("10.9.0.0/16"), Some("169.254.1.1"), 0),
            route(Some("169.254.1.1/32"), None, LINK),
            route(None, Some("10.1.2.1"), 0),
            route(None, Some("fd00::1"), 0),
        ];
        let all = update_routes(&want).await.unwrap();
        let after = update_routes(&want[2..3]).await.unwrap();
        let v6 = list_routes(Some(Family::V6)).await.unwrap();
        let configured = list_configured_routes().await.unwrap();
        (all, after, (v6, configured))
    });
    let (v6, configured) = v6;
    // Only what was configured: the kernel's prefix routes follow from the addresses.
    assert_eq!(configured.len(), 1, "{configured:?}");
    assert!(
        same(&configured[0], &route(None, Some("10.1.2.1"), 0)),
        "{configured:?}"
    );
    for r in [
        route(Some("10.9.0.0/16"), Some("169.254.1.1"), 0),
        route(Some("169.254.1.1/32"), None, LINK),
        route(None, Some("10.1.2.1"), 0),
        route(None, Some("fd00::1"), 0),
    ] {
        assert!(all.iter().any(|a| same(a, &r)), "{r:?} not in {all:?}");
    }
    assert!(
        after
            .iter()
            .any(|a| same(a, &route(None, Some("10.1.2.1"), 0))),
        "{after:?}"
    );
    assert!(
        !after.iter().any(|a| a.dest == Some(cidr("10.9.0.0/16"))),
        "{after:?}"
    );
    assert!(
        !after
            .iter()
            .any(|a| a.gateway == Some("fd00::1".parse().unwrap())),
        "{after:?}"
    );
    // The kernel's prefix route stays.
    assert!(
        after.iter().any(|a| a.dest == Some(cidr("10.1.2.0/24"))),
        "{after:?}"
    );
    assert!(v6.iter().all(|r| r.v6), "{v6:?}");
}

fn same(a: &Route, b: &Route) -> bool {
    a.dest == b.dest && a.gateway == b.gateway && a.device == b.device && a.scope == b.scope
}

#[test]
fn static_neighbours_are_permanent_entries_and_listed_as_such() {
    let (entries, listed) = in_netns(|| async {
        update_link(&eth0(&["10.1.2.3/24"])).await.unwrap();
        let want = Neighbor {
            ip: "10.1.2.1".parse().unwrap(),
            mac: Mac([2, 0, 0, 0, 0, 1]),
            device: "eth0".into(),
            state: NeighborState::Permanent,
        };
        add_neighbors(std::slice::from_ref(&want)).await.unwrap();
        let h = connect().unwrap();
        let msgs: Vec<_> = h.neighbours().get().execute().try_collect().await.unwrap();
        let entries = msgs
            .into_iter()
            .map(|m| {
                let ip = m.attributes.iter().find_map(|a| match a {
                    NeighbourAttribute::Destination(NeighbourAddress::Inet(v4)) => Some(*v4),
                    _ => None,
                });
                (ip, m.header.state)
            })
            .collect::<Vec<_>>();
        (entries, (want, list_neighbors().await.unwrap()))
    });
    assert!(
        entries.contains(&(Some("10.1.2.1".parse().unwrap()), NeighbourState::Permanent)),
        "{entries:?}"
    );
    assert_eq!(listed.1, [listed.0]);
}
