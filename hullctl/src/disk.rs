//! `hullctl disk attach POD IMAGE` / `detach POD SLOT`: a disk image attached to a running
//! pod's VM, or taken away (DESIGN §2 vmm/: hot-plug). hullctl opens the image and passes its
//! descriptor to hull-vmm (`PUT /hotplug/disks/N`, which opens no path once its VM runs), then
//! asks the guest's agent to bind the slot (`Guest.AttachDisk`) and prints the guest's device.
//! Detaching goes the other way: the agent unbinds (refused while the disk is mounted), then
//! hull-vmm empties the slot.

use std::os::fd::AsFd;
use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context};
use hull_proto::guest::{AttachDiskRequest, DetachDiskRequest};
use serde_json::Value;

use crate::pods::Pod;

/// hull-vmm answers at once; the guest's bind waits up to 5 s for the disk to appear.
const API_TIMEOUT: Duration = Duration::from_secs(5);
const AGENT_TIMEOUT_NS: i64 = 15_000_000_000;

/// The pod's disk slots, from `GET /hotplug`: (MMIO base, attached) each.
async fn slots(pod: &Pod) -> anyhow::Result<Vec<(u64, bool)>> {
    let r = crate::pods::request(&pod.api_socket(), "GET", "/hotplug", "").await?;
    if r.status != 200 {
        bail!("GET /hotplug: status {}: {}", r.status, r.body.trim());
    }
    let v: Value = serde_json::from_str(&r.body).context("GET /hotplug: not JSON")?;
    Ok(v["disks"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|d| (d["mmio_base"].as_u64().unwrap_or(0), d["attached"] == true))
                .collect()
        })
        .unwrap_or_default())
}

/// Attaches `image` to `pod` in its first free slot; prints `SLOT DEVICE`.
pub(crate) async fn attach(pod: &Pod, image: &Path, read_only: bool) -> anyhow::Result<i32> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(!read_only)
        .open(image)
        .with_context(|| format!("open {}", image.display()))?;
    let slots = slots(pod).await?;
    let Some(index) = slots.iter().position(|(_, used)| !used) else {
        bail!(
            "the pod's VM has no free disk slot ({} in all; [vm] disk_slots in hull.toml)",
            slots.len()
        );
    };
    let body = format!(r#"{{"read_only":{read_only}}}"#);
    let path = format!("/hotplug/disks/{index}");
    let r = hull_proto::vmm_api::request_with_fd(
        &pod.api_socket(),
        "PUT",
        &path,
        &body,
        Some(file.as_fd()),
        API_TIMEOUT,
    )
    .await?
    .ok(&format!("PUT {path}"))?;
    let v: Value = serde_json::from_str(&r.body).context("PUT: not JSON")?;
    let base = v["mmio_base"].as_u64().context("PUT: no mmio_base")?;
    let guest = crate::guest::connect(pod).await?;
    let d = guest
        .attach_disk(
            ttrpc::context::with_timeout(AGENT_TIMEOUT_NS),
            &AttachDiskRequest {
                mmio_base: base,
                ..Default::default()
            },
        )
        .await;
    match d {
        Ok(d) => {
            println!("{index} {}", d.device);
            Ok(0)
        }
        Err(e) => {
            // The guest never took it: give the slot back.
            let _ = crate::pods::request(&pod.api_socket(), "DELETE", &path, "").await;
            Err(e).context("the guest's agent did not take the disk")
        }
    }
}

/// Detaches the disk in slot `index` of `pod`.
pub(crate) async fn detach(pod: &Pod, index: usize) -> anyhow::Result<i32> {
    let slots = slots(pod).await?;
    let Some((base, true)) = slots.get(index).copied() else {
        bail!("slot {index} holds no disk ({} slots)", slots.len());
    };
    let guest = crate::guest::connect(pod).await?;
    guest
        .detach_disk(
            ttrpc::context::with_timeout(AGENT_TIMEOUT_NS),
            &DetachDiskRequest {
                mmio_base: base,
                ..Default::default()
            },
        )
        .await
        .context("the guest's agent did not let the disk go")?;
    let path = format!("/hotplug/disks/{index}");
    crate::pods::request(&pod.api_socket(), "DELETE", &path, "")
        .await?
        .ok(&format!("DELETE {path}"))?;
    Ok(0)
}
