//! Real namespaces (root, as CI runs): a "pod" netns with a veth `eth0` whose peer sits in a
//! "bridge" netns, as CNI's bridge plugin leaves them; then attach, frames both ways through
//! the tap, detach.

use std::io::{Read, Write};
use std::process::{Child, Command, Stdio};

use futures_util::TryStreamExt;
use rtnetlink::packet_route::link::{LinkAttribute, LinkMessage};
use rtnetlink::packet_route::tc::TcAttribute;
use rtnetlink::{LinkUnspec, LinkVeth};
use serde_json::json;

use super::*;

/// A process holding a fresh network namespace, killed on drop.
pub(super) struct Ns(Child);

impl Ns {
    pub(super) fn new() -> Ns {
        let c = Command::new("unshare")
            .args(["--net", "sleep", "120"])
            .stdin(Stdio::null())
            .spawn()
            .expect("unshare --net (util-linux; the shim's tests run as root)");
        let ns = Ns(c);
        // unshare execs sleep once the namespace exists.
        let me = std::fs::read_link("/proc/self/ns/net").unwrap();
        for _ in 0..500 {
            if std::fs::read_link(ns.path()).is_ok_and(|l| l != me) {
                return ns;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        panic!("unshare did not make a network namespace");
    }

    pub(super) fn path(&self) -> PathBuf {
        PathBuf::from(format!("/proc/{}/ns/net", self.0.id()))
    }
}

impl Drop for Ns {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

const POD_MAC: [u8; 6] = [0x02, 0x42, 0x0a, 0x01, 0x02, 0x03];

async fn up(h: &rtnetlink::Handle, name: &str) {
    let ix = hull_net::link_index(name).await.unwrap();
    h.link()
        .set(LinkUnspec::new_with_index(ix).up().build())
        .execute()
        .await
        .unwrap();
}

/// CNI's result: `eth0` (10.1.2.3/24, MTU 1450, default route via 10.1.2.1, one static
/// neighbour) in `pod`, its peer `vethpod` (10.1.2.1/24) in `bridge`.
fn cni_like(pod: &Ns, bridge: &Ns) {
    let bridge_pid = bridge.0.id();
    run_in(&pod.path(), move || async move {
        let h = hull_net::connect()?;
        h.link()
            .add(
                LinkVeth::new("eth0", "vethpod")
                    .address(POD_MAC.to_vec())
                    .mtu(1450)
                    .build(),
            )
            .execute()
            .await
            .unwrap();
        let peer = hull_net::link_index("vethpod").await?;
        h.link()
            .set(
                LinkUnspec::new_with_index(peer)
                    .setns_by_pid(bridge_pid)
                    .build(),
            )
            .execute()
            .await
            .unwrap();
        let eth0 = hull_net::link_index("eth0").await?;
        h.address()
            .add(eth0, "10.1.2.3".parse().unwrap(), 24)
            .execute()
            .await
            .unwrap();
        up(&h, "eth0").await;
        Ok(())
    })
    .unwrap();
    run_in(&bridge.path(), || async {
        let h = hull_net::connect()?;
        let ix = hull_net::link_index("vethpod").await?;
        h.address()
            .add(ix, "10.1.2.1".parse().unwrap(), 24)
            .execute()
            .await
            .unwrap();
        up(&h, "vethpod").await;
        Ok(())
    })
    .unwrap();
    run_in(&pod.path(), || async {
        hull_net::update_routes(&[hull_net::Route {
            dest: None,
            gateway: Some("10.1.2.1".parse().unwrap()),
            device: "eth0".into(),
            source: None,
            scope: 0,
            v6: false,
        }])
        .await?;
        hull_net::add_neighbors(&[hull_net::Neighbor {
            ip: "10.1.2.9".parse().unwrap(),
            mac: hull_net::Mac([2, 0, 0, 0, 0, 9]),
            device: "eth0".into(),
            state: hull_net::NeighborState::Permanent,
        }])
        .await?;
        Ok(())
    })
    .unwrap();
}

fn rx_packets(ns: &Ns, link: &'static str) -> u64 {
    run_in(&ns.path(), move || async move {
        let h = hull_net::connect()?;
        let m: LinkMessage = h
            .link()
            .get()
            .match_name(link)
            .execute()
            .try_next()
            .await
            .unwrap()
            .unwrap();
        Ok(m.attributes
            .iter()
            .find_map(|a| match a {
                LinkAttribute::Stats64(s) => Some(s.rx_packets),
                _ => None,
            })
            .unwrap_or(0))
    })
    .unwrap()
}

fn has_ingress(ns: &Ns, link: &'static str) -> bool {
    run_in(&ns.path(), move || async move {
        let h = hull_net::connect()?;
        let ix = i32::try_from(hull_net::link_index(link).await?).unwrap();
        let q: Vec<_> = h
            .qdisc()
            .get()
            .index(ix)
            .ingress()
            .execute()
            .try_collect()
            .await
            .unwrap();
        Ok(q.iter().any(|m| {
            m.header.index == ix
                && m.attributes
                    .iter()
                    .any(|a| matches!(a, TcAttribute::Kind(k) if k == "ingress"))
        }))
    })
    .unwrap()
}

#[test]
fn the_netns_comes_from_the_spec_and_host_network_is_refused() {
    let ns = |v: Value| json!({"linux": {"namespaces": v}});
    let e = netns_path(&ns(json!([{"type": "pid"}]))).unwrap_err();
    assert!(matches!(e, NetError::HostNetwork));
    assert!(
        e.to_string()
            .contains("hostNetwork pods cannot run with runtime hull"),
        "{e}"
    );
    assert!(netns_path(&json!({})).is_err());
    assert_eq!(netns_path(&ns(json!([{"type": "network"}]))).unwrap(), None);
    assert_eq!(
        netns_path(&ns(
            json!([{"type": "network", "path": "/var/run/netns/cni-1"}])
        ))
        .unwrap(),
        Some(PathBuf::from("/var/run/netns/cni-1"))
    );
}

#[test]
fn attach_wires_each_cni_link_to_a_tap_both_ways_and_detach_undoes_it() {
    let (pod, bridge) = (Ns::new(), Ns::new());
    cni_like(&pod, &bridge);

    let net = attach(&pod.path()).expect("attach");
    assert_eq!(net.nics.len(), 1, "{net:?}");
    let nic = &net.nics[0];
    assert_eq!(nic.link.name, "eth0");
    assert_eq!(nic.link.mac, hull_net::Mac(POD_MAC));
    assert_eq!(nic.link.mtu, 1450);
    assert_eq!(
        nic.link.addrs,
        [hull_net::Cidr::new("10.1.2.3".parse().unwrap(), 24).unwrap()]
    );
    assert!(has_ingress(&pod, "hulltap0"));
    assert_eq!(net.routes.len(), 1, "{:?}", net.routes);
    assert_eq!(net.routes[0].gateway, Some("10.1.2.1".parse().unwrap()));
    assert_eq!(net.neighbors.len(), 1, "{:?}", net.neighbors);
    assert!(has_ingress(&pod, "eth0"));

    // Bridge → pod: the bridge side ARPs for the pod's address; the frame must come out of
    // the tap (after the 10-byte virtio-net header a tap gives by default), not reach eth0's
    // own stack.
    let mut tap = std::fs::File::from(nic.tap.try_clone().unwrap());
    // Any send from the bridge side to the pod's address starts with an ARP request.
    let bridge_path = bridge.path();
    let sender = std::thread::spawn(move || {
        run_in(&bridge_path, || async {
            let s = std::net::UdpSocket::bind("10.1.2.1:0").unwrap();
            for _ in 0..20 {
                let _ = s.send_to(b"hello", "10.1.2.3:9");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
            Ok(())
        })
    });
    // IPv6 chatter of the peer coming up (MLD, neighbour solicitations) may come first.
    let mut seen = Vec::new();
    let mut frame = [0u8; 2048];
    while seen.len() < 50 {
        let n = tap.read(&mut frame).expect("read a frame from the tap");
        assert!(n >= 10 + 14, "short frame: {n} bytes");
        seen.push(u16::from_be_bytes([frame[10 + 12], frame[10 + 13]]));
        if seen.last() == Some(&0x0806) {
            break;
        }
    }
    assert_eq!(
        seen.last(),
        Some(&0x0806),
        "no ARP request among {seen:04x?}"
    );
    sender.join().unwrap().unwrap();

    // Pod → bridge: a frame written into the tap leaves through eth0 to the peer.
    let before = rx_packets(&bridge, "vethpod");
    let mut out = vec![0u8; 10];
    out.extend_from_slice(&[0xff; 6]); // broadcast
    out.extend_from_slice(&POD_MAC);
    out.extend_from_slice(&[0x88, 0xb5]); // local experimental ethertype
    out.extend_from_slice(&[0u8; 46]);
    tap.write_all(&out).expect("write a frame into the tap");
    let mut after = before;
    for _ in 0..100 {
        after = rx_packets(&bridge, "vethpod");
        if after > before {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert!(
        after > before,
        "the peer received nothing ({before} → {after})"
    );

    // Teardown: the qdisc goes; the tap goes with its last fd.
    detach(&pod.path(), vec!["eth0".into()]);
    assert!(!has_ingress(&pod, "eth0"));
    drop(tap);
    drop(net);
    let gone = run_in(&pod.path(), || async {
        Ok(hull_net::link_index("hulltap0").await.is_err())
    })
    .unwrap();
    assert!(gone, "the tap outlived its fds");
    // Detach is idempotent and quiet when things are already gone.
    detach(&pod.path(), vec!["eth0".into(), "nope0".into()]);
    detach(Path::new("/nonexistent/netns"), vec!["eth0".into()]);
    // Wiring again works (nothing stale is left in the way).
    let again = attach(&pod.path()).expect("second attach");
    assert_eq!(again.nics.len(), 1);
}
