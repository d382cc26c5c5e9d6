//! Pod networking on the host (DESIGN §1 Networking): what CNI made in the pod's network
//! namespace becomes the guest's.
//!
//! For each Ethernet link CNI put in the netns (normally one veth, `eth0`): a tap
//! `hulltap<N>` in the same netns, tc redirects both ways between them ([`tc`]), and the tap
//! handed to hull-vmm, whose virtio-net NIC takes the link's MAC and MTU. The link's
//! addresses, the netns' configured routes and static neighbours go to the agent, which
//! configures the guest with them before any container starts. The link itself is never
//! renamed or moved: containerd reads the pod's network stats from `eth0` in the netns.
//! CRI PortForward reaches the guest's servers through [`PortForwarder`].

mod netns;
mod portfwd;
mod tap;
mod tc;
pub(crate) mod wire;

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use serde_json::Value;

pub(crate) use netns::run_in;
pub(crate) use portfwd::PortForwarder;

/// What [`attach`] found and made.
#[derive(Debug)]
pub(crate) struct PodNetwork {
    /// Each CNI link with its tap, in the order the VM gets them (`--net` flags).
    pub(crate) nics: Vec<Nic>,
    /// Configured routes of the netns (the kernel's prefix routes are left out).
    pub(crate) routes: Vec<hull_net::Route>,
    /// Static neighbour entries of the netns.
    pub(crate) neighbors: Vec<hull_net::Neighbor>,
}

impl PodNetwork {
    /// What the guest must copy, without the taps (closing them: hull-vmm holds its own).
    pub(crate) fn without_taps(self) -> PodLinks {
        PodLinks {
            links: self.nics.into_iter().map(|n| n.link).collect(),
            routes: self.routes,
            neighbors: self.neighbors,
        }
    }
}

/// The pod network's description for the agent.
#[derive(Debug, Clone)]
pub(crate) struct PodLinks {
    pub(crate) links: Vec<hull_net::Link>,
    pub(crate) routes: Vec<hull_net::Route>,
    pub(crate) neighbors: Vec<hull_net::Neighbor>,
}

/// One CNI link and the tap wired to it.
#[derive(Debug)]
pub(crate) struct Nic {
    /// The link as CNI made it: name, MAC, MTU, addresses; the guest NIC copies it.
    pub(crate) link: hull_net::Link,
    /// The tap, for hull-vmm (`--net fd=N`); the shim closes its copy once hull-vmm runs.
    pub(crate) tap: OwnedFd,
}

/// More than this many CNI links is refused: hull-vmm gets each tap as one of the three fds
/// a child can be given.
pub(crate) const MAX_NICS: usize = 3;
/// The prefix of the taps this module makes; links with it are never taken for CNI's.
const TAP_PREFIX: &str = "hulltap";

/// Pod networking failures.
#[derive(Debug, thiserror::Error)]
pub(crate) enum NetError {
    #[error(
        "hostNetwork pods cannot run with runtime hull: each hull pod has its own VM and guest \
         kernel, whose network stack cannot join the node's network namespace; use another \
         RuntimeClass (e.g. runc) for this pod, or drop hostNetwork"
    )]
    HostNetwork,
    #[error("the pod's network namespace {path}: {source}")]
    Netns {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("tap {name}: {cause}")]
    Tap {
        name: String,
        #[source]
        cause: std::io::Error,
    },
    #[error("{what}: {source}")]
    Tc {
        what: String,
        #[source]
        source: rtnetlink::Error,
    },
    #[error(transparent)]
    Netlink(#[from] hull_net::NetError),
    #[error("the pod's network namespace has {0} Ethernet links; hull wires at most {MAX_NICS}")]
    TooManyLinks(usize),
    #[error("netns worker thread: {0}")]
    Runtime(#[source] std::io::Error),
    #[error("the netns worker thread panicked")]
    Panicked,
}

/// The pod's network namespace from the sandbox spec: `None` for a namespace without a path
/// (a lone `ctr run` gets a fresh empty one: no NIC, as with runc), [`NetError::HostNetwork`]
/// when the spec has no network namespace at all (CRI's hostNetwork, `ctr run --net-host`).
pub(crate) fn netns_path(spec: &Value) -> Result<Option<PathBuf>, NetError> {
    let ns = spec
        .pointer("/linux/namespaces")
        .and_then(Value::as_array)
        .and_then(|a| {
            a.iter()
                .find(|n| n.get("type").and_then(Value::as_str) == Some("network"))
        })
        .ok_or(NetError::HostNetwork)?;
    Ok(ns
        .get("path")
        .and_then(Value::as_str)
        .filter(|p| !p.is_empty())
        .map(PathBuf::from))
}

/// Makes a tap for each Ethernet link of the netns at `path`, wires them, and reads what the
/// guest must copy. On failure whatever was wired is unwired again; the taps close with
/// their fds.
pub(crate) fn attach(path: &Path) -> Result<PodNetwork, NetError> {
    run_in(path, || async {
        let links = links_to_wire_here().await?;
        let h = hull_net::connect()?;
        let mut nics = Vec::new();
        for (i, mut link) in links.into_iter().enumerate() {
            // The guest derives its own IPv6 link-local address from the same MAC.
            link.addrs.retain(|c| !c.is_v6_link_local());
            let tap_name = format!("{TAP_PREFIX}{i}");
            let r = wire_one(&h, &link, &tap_name).await;
            match r {
                Ok(tap) => nics.push(Nic { link, tap }),
                Err(e) => {
                    for n in &nics {
                        unwire_one(&h, &n.link.name).await;
                    }
                    return Err(e);
                }
            }
        }
        Ok(PodNetwork {
            nics,
            routes: hull_net::list_configured_routes().await?,
            neighbors: hull_net::list_neighbors().await?,
        })
    })
}

/// The names of the links [`attach`] will wire in the netns at `path`, for the pod's record
/// before anything is wired: a shim killed in the middle of `attach` then leaves a record
/// that [`detach`] cleans up from (unwiring a link that was never wired is a no-op).
pub(crate) fn links_to_wire(path: &Path) -> Result<Vec<String>, NetError> {
    run_in(path, || async {
        Ok(links_to_wire_here()
            .await?
            .into_iter()
            .map(|l| l.name)
            .collect())
    })
}

/// The links of the current netns that [`attach`] wires: all but our own taps, at most
/// [`MAX_NICS`].
async fn links_to_wire_here() -> Result<Vec<hull_net::Link>, NetError> {
    let links: Vec<hull_net::Link> = hull_net::list_links()
        .await?
        .into_iter()
        .filter(|l| !l.name.starts_with(TAP_PREFIX))
        .collect();
    if links.len() > MAX_NICS {
        return Err(NetError::TooManyLinks(links.len()));
    }
    Ok(links)
}

async fn wire_one(
    h: &rtnetlink::Handle,
    link: &hull_net::Link,
    tap_name: &str,
) -> Result<OwnedFd, NetError> {
    let tap = tap::create(tap_name)?;
    // The netns must not talk IPv6 to the guest from the tap (router solicitations, MLD):
    // the tap is a wire, not an interface of the netns. Absent when IPv6 is off.
    let knob = format!("/proc/sys/net/ipv6/conf/{tap_name}/disable_ipv6");
    if let Err(e) = std::fs::write(&knob, "1") {
        if e.kind() != std::io::ErrorKind::NotFound {
            return Err(NetError::Tap {
                name: tap_name.to_owned(),
                cause: e,
            });
        }
    }
    let tap_ix = hull_net::link_index(tap_name).await?;
    let link_ix = hull_net::link_index(&link.name).await?;
    h.link()
        .set(
            rtnetlink::LinkUnspec::new_with_index(tap_ix)
                .mtu(link.mtu)
                .up()
                .build(),
        )
        .execute()
        .await
        .map_err(|source| NetError::Tc {
            what: format!("set {tap_name} up with MTU {}", link.mtu),
            source,
        })?;
    if let Err(e) = tc::wire(h, (&link.name, link_ix), (tap_name, tap_ix)).await {
        unwire_one(h, &link.name).await;
        return Err(e);
    }
    Ok(tap)
}

async fn unwire_one(h: &rtnetlink::Handle, link: &str) {
    let Ok(ix) = hull_net::link_index(link).await else {
        return;
    };
    if let Err(e) = tc::unwire(h, (link, ix)).await {
        tracing::warn!(link, error = %e, "pod network teardown");
    }
}

/// Removes the tc wiring from `links` in the netns at `path`. Everything already gone (the
/// netns unmounted, the link deleted by CNI DEL) counts as done.
pub(crate) fn detach(path: &Path, links: Vec<String>) {
    if !path.exists() {
        return;
    }
    let r = run_in(path, move || async move {
        let h = hull_net::connect()?;
        for l in &links {
            unwire_one(&h, l).await;
        }
        Ok(())
    });
    if let Err(e) = r {
        tracing::warn!(netns = %path.display(), error = %e, "pod network teardown");
    }
}

#[cfg(test)]
mod tests;
