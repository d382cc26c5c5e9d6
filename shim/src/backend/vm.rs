//! The VM backend: one hull-vmm and one virtiofsd per pod (DESIGN §1–§3).
//!
//! Launch order: refusal of what a VM cannot give (the node's network, IPC or PID namespace,
//! a bind with shared propagation) → pod directory → share (mounts) → pod cgroup →
//! virtiofsd (listening socket passed as fd 3) → pod network (a tap per CNI link in the pod's
//! netns, tc-wired; DESIGN §1) → hull-vmm (its command line built only by
//! `hull_contract::vmm_args`, taps as fds 3…; it connects to virtiofsd while building the VM)
//! → hybrid-vsock connection to the agent, retried until `Health.Check` says SERVING or
//! `boot_timeout_secs` passes → the guest's interfaces, routes and neighbours →
//! `CreateSandbox`. Any failure tears down what was made, in reverse, and the error carries
//! the tails of the VMM log and guest console.

use std::collections::HashMap;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use hull_contract::vmm_args::{Console, FsArg, NetArg, VmmArgs};
use hull_proto::common::storage::Driver;
use hull_proto::common::Storage;
use hull_proto::health::check_response::ServingStatus;
use hull_proto::health::CheckRequest;
use hull_proto::health_ttrpc::HealthClient;
use hull_proto::network_ttrpc::NetworkClient;
use hull_proto::sandbox::CreateSandboxRequest;
use hull_proto::sandbox_ttrpc::SandboxClient;
use serde_json::Value;
use tokio::process::Command;

use super::cgroup::PodCgroup;
use super::{io_err, pod_dir, BackendError, PodBackend, Prepared};
use crate::child::{spawn, ChildSetup, Supervised};
use crate::config::HullConfig;
use crate::net::{self, NetError, PodNetwork};
use crate::share::{guest_rootfs, Share};
use crate::sizing::{self, ANNOTATION_CPU_PERIOD, ANNOTATION_CPU_QUOTA, ANNOTATION_MEMORY};

/// How long hull-vmm gets to stop after SIGTERM (it stops vCPUs and exits in well under 1 s).
const VMM_STOP_GRACE: Duration = Duration::from_secs(10);
/// virtiofsd exits when hull-vmm disconnects; this bounds the wait before SIGKILL.
const VIRTIOFSD_STOP_GRACE: Duration = Duration::from_secs(5);
/// Per-attempt bound on the hybrid-vsock handshake and the health RPC while booting.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(2);
/// The VM's hybrid vsock socket, in the pod directory.
const VSOCK_SOCKET: &str = "vsock.sock";
/// Bytes of each log quoted in a boot failure.
const LOG_TAIL: usize = 2000;

/// A running pod VM.
pub(super) struct VmPod {
    dir: PathBuf,
    share: Share,
    cgroup: Option<PodCgroup>,
    vmm: Supervised,
    virtiofsd: Supervised,
    client: ttrpc::asynchronous::Client,
    /// The pod's netns and the CNI links wired to taps in it, to unwire at shutdown.
    wired: Option<Wired>,
    /// Loopback listeners in the netns for CRI PortForward; pods with a netns only.
    portfwd: Option<net::PortForwarder>,
    stopping: AtomicBool,
}

/// CNI links of a netns that carry hull's tc redirects.
#[derive(Debug, Clone)]
struct Wired {
    netns: PathBuf,
    links: Vec<String>,
}

impl Wired {
    async fn unwire(self) {
        let Wired { netns, links } = self;
        let _ = tokio::task::spawn_blocking(move || net::detach(&netns, links)).await;
    }
}

impl std::fmt::Debug for VmPod {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VmPod")
            .field("dir", &self.dir)
            .field("vmm", &self.vmm.pid())
            .field("virtiofsd", &self.virtiofsd.pid())
            .finish_non_exhaustive()
    }
}

/// The sizing inputs: CRI's pod annotations, or for a lone container (`ctr run`) its own
/// `linux.resources` in the same form.
fn sizing_inputs(spec: &Value) -> HashMap<String, String> {
    let mut m: HashMap<String, String> = spec
        .get("annotations")
        .and_then(Value::as_object)
        .map(|a| {
            a.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
                .collect()
        })
        .unwrap_or_default();
    let res = |p: &str| spec.pointer(p).and_then(Value::as_i64).filter(|v| *v > 0);
    let cri = [
        ANNOTATION_CPU_PERIOD,
        ANNOTATION_CPU_QUOTA,
        ANNOTATION_MEMORY,
    ]
    .iter()
    .any(|k| m.contains_key(*k));
    if !cri {
        for (key, ptr) in [
            (ANNOTATION_CPU_PERIOD, "/linux/resources/cpu/period"),
            (ANNOTATION_CPU_QUOTA, "/linux/resources/cpu/quota"),
            (ANNOTATION_MEMORY, "/linux/resources/memory/limit"),
        ] {
            if let Some(v) = res(ptr) {
                m.insert(key.to_owned(), v.to_string());
            }
        }
    }
    m
}

fn tail(path: &Path) -> String {
    let text = std::fs::read(path).unwrap_or_default();
    let start = text.len().saturating_sub(LOG_TAIL);
    String::from_utf8_lossy(&text[start..]).trim().to_owned()
}

/// What is torn down, in reverse, if launch fails half way.
struct Partial {
    dir: PathBuf,
    share: Option<Share>,
    cgroup: Option<PodCgroup>,
    children: Vec<Supervised>,
    wired: Option<Wired>,
}

impl Partial {
    async fn undo(self) {
        // hull-vmm (pushed last) first: virtiofsd then exits by itself on the disconnect.
        for c in self.children.iter().rev() {
            c.stop(VMM_STOP_GRACE.max(VIRTIOFSD_STOP_GRACE)).await;
        }
        if let Some(w) = self.wired {
            w.unwire().await;
        }
        if let Some(s) = &self.share {
            s.destroy();
        }
        if let Some(c) = &self.cgroup {
            super::cleanup::remove_cgroup(c.dir()).await;
        }
        let _ = tokio::fs::remove_dir_all(&self.dir).await;
    }
}

impl VmPod {
    pub(super) async fn launch(
        cfg: &HullConfig,
        sid: &str,
        bundle: &Path,
    ) -> Result<Self, BackendError> {
        let spec = crate::spec::read(bundle)?;
        // What a VM cannot give (the node's network, IPC or PID namespace) is refused before
        // anything is made for it.
        let netns = net::netns_path(&spec)?;
        crate::spec::refuse_host_namespaces(&spec)?;
        // A lone `ctr run` container is its own sandbox: its binds are checked before a VM
        // boots for nothing (a CRI sandbox has none).
        crate::spec::refuse_shared_propagation(&spec)?;
        let size = sizing::vm_size(&sizing_inputs(&spec), &cfg.vm)?;
        let dir = pod_dir(sid);
        if dir.exists() {
            // A previous shim of this pod died without cleaning up (DESIGN §2 shim/: nothing
            // outlives its pod).
            tracing::warn!(dir = %dir.display(), "stale pod directory; cleaning it");
            Share::at(&dir).destroy();
            let _ = tokio::fs::remove_dir_all(&dir).await;
        }
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(io_err(format!("create {}", dir.display())))?;
        let mut partial = Partial {
            dir: dir.clone(),
            share: None,
            cgroup: None,
            children: vec![],
            wired: None,
        };
        match Self::start(cfg, sid, &spec, netns, size, &mut partial).await {
            Ok((vmm, virtiofsd, client)) => Ok(VmPod {
                portfwd: partial.wired.as_ref().map(|w| {
                    net::PortForwarder::start(
                        client.clone(),
                        w.netns.clone(),
                        dir.join(VSOCK_SOCKET),
                    )
                }),
                dir,
                share: partial
                    .share
                    .take()
                    .unwrap_or_else(|| Share::at(&partial.dir)),
                cgroup: partial.cgroup.take(),
                vmm,
                virtiofsd,
                client,
                wired: partial.wired.take(),
                stopping: AtomicBool::new(false),
            }),
            Err(e) => {
                partial.undo().await;
                Err(e)
            }
        }
    }

    async fn start(
        cfg: &HullConfig,
        sid: &str,
        spec: &Value,
        netns: Option<PathBuf>,
        size: sizing::VmSize,
        p: &mut Partial,
    ) -> Result<(Supervised, Supervised, ttrpc::asynchronous::Client), BackendError> {
        // Read before the VM boots: a pod file that cannot be read fails the pod at once.
        let pod_file = |dest| crate::spec::pod_file(spec, dest);
        let sandbox = CreateSandboxRequest {
            sandbox_id: sid.to_owned(),
            hostname: spec
                .get("hostname")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned(),
            resolv_conf: pod_file("/etc/resolv.conf")?.unwrap_or_default(),
            hosts: pod_file("/etc/hosts")?.unwrap_or_default(),
            ..Default::default()
        };
        let dir = p.dir.clone();
        let share = Share::at(&dir);
        share.create()?;
        p.share = Some(share.clone());
        let cgroups_path = spec
            .pointer("/linux/cgroupsPath")
            .and_then(Value::as_str)
            .unwrap_or_default();
        p.cgroup = PodCgroup::create(cgroups_path)?;
        let procs = p.cgroup.as_ref().map(PodCgroup::procs_fd);
        let fs_sock = dir.join("fs.sock");
        let virtiofsd = super::virtiofsd::start(
            &cfg.virtiofs,
            share.served_dir(),
            &fs_sock,
            &dir.join("virtiofsd.log"),
            procs,
        )?;
        p.children.push(virtiofsd.clone());

        let pod_net = match netns {
            Some(ns) => {
                let path = ns.clone();
                let n = tokio::task::spawn_blocking(move || net::attach(&path))
                    .await
                    .map_err(|_| NetError::Panicked)??;
                p.wired = Some(Wired {
                    netns: ns,
                    links: n.nics.iter().map(|n| n.link.name.clone()).collect(),
                });
                Some(n)
            }
            None => None,
        };

        let vsock = dir.join(VSOCK_SOCKET);
        let console = dir.join("console.log");
        let vmm_log = dir.join("vmm.log");
        let log = std::fs::File::create(&vmm_log).map_err(io_err("create vmm.log".into()))?;
        let mut args = VmmArgs::new(&cfg.vm.kernel, size.vcpus, size.memory_mib);
        args.initrd = Some(cfg.vm.initrd.clone());
        args.vsock_uds = Some(vsock.clone());
        args.cid = Some(hull_contract::vsock::GUEST_CID);
        args.fs.push(FsArg {
            socket: fs_sock,
            tag: hull_contract::SHARE_FS_TAG.to_owned(),
        });
        args.console = Console::File(console.clone());
        // Blank parameters are not passed (`VmmArgs::to_args`).
        args.cmdline_append = Some(cfg.vm.kernel_params.clone());
        let mut fds = [None; 3];
        if let Some(n) = &pod_net {
            for ((slot, fd_no), nic) in fds.iter_mut().zip(3..).zip(&n.nics) {
                *slot = Some(std::os::fd::AsRawFd::as_raw_fd(&nic.tap));
                // A link's MTU is at most ETH_MAX_MTU (65535): the saturation never bites.
                let mtu = u16::try_from(nic.link.mtu).unwrap_or(u16::MAX);
                args.net
                    .push(NetArg::fd(fd_no, &nic.link.mac.to_string(), mtu));
            }
        }
        let mut cmd = Command::new(&cfg.vm.vmm);
        cmd.args(args.to_args())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true);
        let child = spawn(
            &mut cmd,
            ChildSetup {
                cgroup_procs: procs,
                fds,
                die_with_parent: true,
            },
        )
        .map_err(io_err(format!("spawn {}", cfg.vm.vmm.display())))?;
        // hull-vmm holds the taps now; the shim's copies would keep them alive after it.
        let pod_net = pod_net.map(PodNetwork::without_taps);
        let vmm = Supervised::new("hull-vmm", child);
        p.children.push(vmm.clone());
        tracing::info!(
            vmm = vmm.pid(),
            virtiofsd = virtiofsd.pid(),
            vcpus = size.vcpus,
            mem_mib = size.memory_mib,
            "pod VM starting"
        );

        let deadline = Duration::from_secs(u64::from(cfg.vm.boot_timeout_secs));
        let client = connect_when_ready(&vmm, &virtiofsd, &vsock, deadline)
            .await
            .map_err(|why| {
                BackendError::AgentStart(format!(
                    "{why}\n--- hull-vmm log ---\n{}\n--- guest console ---\n{}\n--- virtiofsd log ---\n{}",
                    tail(&vmm_log),
                    tail(&console),
                    tail(&dir.join("virtiofsd.log"))
                ))
            })?;
        if let Some(n) = &pod_net {
            configure_guest_network(&client, n)
                .await
                .map_err(|e| BackendError::AgentStart(format!("guest network: {e}")))?;
        }
        SandboxClient::new(client.clone())
            .create_sandbox(ttrpc::context::with_timeout(30_000_000_000), &sandbox)
            .await
            .map_err(|e| BackendError::AgentStart(format!("CreateSandbox: {e}")))?;
        Ok((vmm, virtiofsd, client))
    }
}

/// Sends the pod's links, routes and neighbours to the agent, which configures the guest
/// with them (before any container can start).
async fn configure_guest_network(
    client: &ttrpc::asynchronous::Client,
    n: &net::PodLinks,
) -> Result<(), ttrpc::Error> {
    let c = NetworkClient::new(client.clone());
    let ctx = || ttrpc::context::with_timeout(30_000_000_000);
    c.update_interfaces(ctx(), &net::wire::interfaces(n))
        .await?;
    c.update_routes(ctx(), &net::wire::routes(n)).await?;
    c.add_neighbors(ctx(), &net::wire::neighbors(n)).await?;
    Ok(())
}

/// Retries the agent until it answers SERVING, hull-vmm or virtiofsd dies, or `deadline`.
async fn connect_when_ready(
    vmm: &Supervised,
    virtiofsd: &Supervised,
    vsock: &Path,
    deadline: Duration,
) -> Result<ttrpc::asynchronous::Client, String> {
    let start = Instant::now();
    let mut last = String::from("no attempt");
    loop {
        if let Some(s) = vmm.try_status() {
            return Err(format!("hull-vmm exited ({s}) before the agent answered"));
        }
        if let Some(s) = virtiofsd.try_status() {
            // virtiofsd exits 0 when its frontend disconnects: say what happened to hull-vmm.
            let vmm_status = tokio::time::timeout(Duration::from_secs(2), vmm.exited())
                .await
                .map_or_else(|_| "still running".to_owned(), |v| v.to_string());
            return Err(format!(
                "virtiofsd exited ({s}) before the agent answered; hull-vmm: {vmm_status}"
            ));
        }
        if start.elapsed() > deadline {
            return Err(format!(
                "the agent did not answer within {deadline:?} (last: {last})"
            ));
        }
        match hull_proto::connect_agent(vsock, hull_contract::vsock::AGENT_PORT, ATTEMPT_TIMEOUT)
            .await
        {
            Ok(client) => {
                let ns = i64::try_from(ATTEMPT_TIMEOUT.as_nanos()).unwrap_or(i64::MAX);
                match HealthClient::new(client.clone())
                    .check(ttrpc::context::with_timeout(ns), &CheckRequest::new())
                    .await
                {
                    Ok(r) if r.status.enum_value() == Ok(ServingStatus::SERVING) => {
                        tracing::info!(elapsed = ?start.elapsed(), "agent serving");
                        return Ok(client);
                    }
                    Ok(r) => last = format!("health {:?}", r.status),
                    Err(e) => last = format!("Health.Check: {e}"),
                }
            }
            Err(e) => last = e.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[async_trait]
impl PodBackend for VmPod {
    fn agent(&self) -> ttrpc::asynchronous::Client {
        self.client.clone()
    }

    fn task_pid(&self, _guest_pid: u32) -> u32 {
        self.vmm.pid()
    }

    async fn prepare_container(
        &self,
        cid: &str,
        bundle: &Path,
        rootfs: &Path,
        sandbox_pid: Option<u32>,
    ) -> Result<Prepared, BackendError> {
        let share = self.share.clone();
        let (cid2, bundle, rootfs) = (cid.to_owned(), bundle.to_owned(), rootfs.to_owned());
        // Mounts and file reads: keep them off the runtime thread.
        let r = tokio::task::spawn_blocking(move || -> Result<Prepared, BackendError> {
            let source = share.bind_rootfs(&cid2, &rootfs)?;
            let spec = crate::spec::for_vm(&bundle, &cid2, &share, sandbox_pid)?;
            let rootfs = Storage {
                driver: Driver::VIRTIOFS.into(),
                source,
                mount_point: guest_rootfs(&cid2).display().to_string(),
                ..Default::default()
            };
            // The agent mounts each once per pod and keeps it while a container uses it.
            let volumes = spec.memory_volumes.iter().map(|v| Storage {
                driver: Driver::TMPFS.into(),
                source: "tmpfs".into(),
                fstype: "tmpfs".into(),
                options: v.tmpfs_options(),
                mount_point: v.guest_path.display().to_string(),
                ..Default::default()
            });
            Ok(Prepared {
                spec_json: spec.json,
                storages: std::iter::once(rootfs).chain(volumes).collect(),
            })
        })
        .await
        .map_err(|_| BackendError::Blocking("prepare container"))?;
        if r.is_err() {
            self.release_container(cid).await;
        }
        r
    }

    async fn release_container(&self, cid: &str) {
        let share = self.share.clone();
        let cid = cid.to_owned();
        let _ = tokio::task::spawn_blocking(move || share.release(&cid)).await;
    }

    fn record(&self) -> super::record::PodRecord {
        super::record::PodRecord {
            shim: super::record::ProcId::current(),
            children: [&self.vmm, &self.virtiofsd]
                .iter()
                .filter_map(|c| super::record::ProcId::of(c.pid()))
                .collect(),
            cgroups: self.cgroup.iter().map(|c| c.dir().to_path_buf()).collect(),
            netns: self.wired.as_ref().map(|w| w.netns.clone()),
            links: self.wired.iter().flat_map(|w| w.links.clone()).collect(),
        }
    }

    fn alive(&self) -> bool {
        self.vmm.try_status().is_none() && self.virtiofsd.try_status().is_none()
    }

    async fn died(&self) {
        tokio::select! {
            s = self.vmm.exited() => {
                if !self.stopping.load(Ordering::Acquire) {
                    tracing::error!(status = %s, log = %tail(&self.dir.join("vmm.log")), "hull-vmm ended unexpectedly");
                }
            }
            s = self.virtiofsd.exited() => {
                if !self.stopping.load(Ordering::Acquire) {
                    tracing::error!(status = %s, log = %tail(&self.dir.join("virtiofsd.log")), "virtiofsd ended unexpectedly");
                }
            }
        }
    }

    async fn shutdown(&self) -> Result<(), BackendError> {
        self.stopping.store(true, Ordering::Release);
        // First: its listeners hold the netns, and its streams run through the VM.
        if let Some(f) = &self.portfwd {
            f.stop();
        }
        let s = self.vmm.stop(VMM_STOP_GRACE).await;
        tracing::info!(status = %s, "hull-vmm stopped");
        self.virtiofsd.stop(VIRTIOFSD_STOP_GRACE).await;
        if let Some(w) = self.wired.clone() {
            w.unwire().await;
        }
        self.share.destroy();
        if let Some(c) = &self.cgroup {
            super::cleanup::remove_cgroup(c.dir()).await;
        }
        tokio::fs::remove_dir_all(&self.dir)
            .await
            .map_err(io_err(format!("remove {}", self.dir.display())))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn lone_container_sizes_from_its_resources_and_cri_annotations_win() {
        let spec = json!({"linux": {"resources": {"cpu": {"quota": 150000, "period": 100000},
                                                  "memory": {"limit": 536870912}}}});
        let m = sizing_inputs(&spec);
        assert_eq!(m[ANNOTATION_CPU_QUOTA], "150000");
        assert_eq!(m[ANNOTATION_CPU_PERIOD], "100000");
        assert_eq!(m[ANNOTATION_MEMORY], "536870912");
        let spec = json!({"annotations": {ANNOTATION_MEMORY: "1048576"},
                          "linux": {"resources": {"memory": {"limit": 536870912}}}});
        let m = sizing_inputs(&spec);
        assert_eq!(m[ANNOTATION_MEMORY], "1048576");
        assert!(!m.contains_key(ANNOTATION_CPU_QUOTA));
        // -1 (unlimited) and absent values do not size anything.
        let m = sizing_inputs(&json!({"linux": {"resources": {"cpu": {"quota": -1}}}}));
        assert!(m.is_empty());
    }
}
