//! The tc wiring between a CNI link and the pod's tap (Kata's "tcfilter" model): an ingress
//! qdisc on each, and on each a match-all u32 filter whose mirred action redirects every frame
//! to the other's egress. The guest NIC carries the veth's MAC, so to the bridge (or whatever
//! CNI attached) the guest is simply the pod.

use rtnetlink::packet_route::tc::TcHandle;
use rtnetlink::Handle;

use super::NetError;

/// `ETH_P_ALL` as tc wants it: in network byte order.
const ALL_PROTOCOLS: u16 = 0x0003u16.to_be();
/// The ingress qdisc's handle, `ffff:`.
const INGRESS_HANDLE: u32 = 0xffff_0000;
/// EBUSY answers while the kernel still tears down an earlier qdisc: retried this many times.
const BUSY_RETRIES: u32 = 5;

fn tc_err(what: String) -> impl FnOnce(rtnetlink::Error) -> NetError {
    move |source| NetError::Tc { what, source }
}

fn errno(e: &rtnetlink::Error) -> Option<i32> {
    match e {
        rtnetlink::Error::NetlinkError(m) => m.code.map(|c| -c.get()),
        _ => None,
    }
}

async fn add_ingress(h: &Handle, ix: u32, name: &str) -> Result<(), NetError> {
    let ix_i32 = i32::try_from(ix).unwrap_or(i32::MAX);
    let mut tries = 0;
    loop {
        let r = h.qdisc().add(ix_i32).ingress().execute().await;
        match r {
            Err(ref e) if errno(e) == Some(libc::EBUSY) && tries < BUSY_RETRIES => {
                tries += 1;
                tokio::time::sleep(std::time::Duration::from_millis(10 * u64::from(tries))).await;
            }
            r => return r.map_err(tc_err(format!("add an ingress qdisc to {name}"))),
        }
    }
}

async fn redirect(h: &Handle, from: u32, to: u32, what: String) -> Result<(), NetError> {
    h.traffic_filter(i32::try_from(from).unwrap_or(i32::MAX))
        .add()
        .parent(INGRESS_HANDLE)
        .protocol(ALL_PROTOCOLS)
        .redirect(to)
        .map_err(tc_err(what.clone()))?
        .execute()
        .await
        .map_err(tc_err(what))
}

/// Wires `link` (index `link_ix`) and `tap` both ways. The link's ingress must be free: a
/// qdisc already there (EEXIST) belongs to someone else and is an error, not something to
/// replace.
pub(crate) async fn wire(h: &Handle, link: (&str, u32), tap: (&str, u32)) -> Result<(), NetError> {
    add_ingress(h, link.1, link.0).await?;
    add_ingress(h, tap.1, tap.0).await?;
    redirect(
        h,
        link.1,
        tap.1,
        format!("redirect {} to {}", link.0, tap.0),
    )
    .await?;
    redirect(
        h,
        tap.1,
        link.1,
        format!("redirect {} to {}", tap.0, link.0),
    )
    .await
}

/// Removes the link's ingress qdisc (its filter goes with it; the tap's dies with the tap).
/// A link or qdisc already gone — CNI DEL may have run first — is not an error.
pub(crate) async fn unwire(h: &Handle, link: (&str, u32)) -> Result<(), NetError> {
    let mut req = h.qdisc().del(i32::try_from(link.1).unwrap_or(i32::MAX));
    req.message_mut().header.parent = TcHandle::INGRESS;
    req.message_mut().header.handle = TcHandle::from(INGRESS_HANDLE);
    match req.execute().await {
        Err(ref e) if matches!(errno(e), Some(libc::ENODEV | libc::ENOENT | libc::EINVAL)) => {
            Ok(())
        }
        r => r.map_err(tc_err(format!("remove the ingress qdisc of {}", link.0))),
    }
}
