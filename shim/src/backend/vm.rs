//! The VM backend: one hull-vmm and one virtiofsd per pod (DESIGN §1–§3).
//!
//! Launch order: refusal of what a VM cannot give (the node's network, IPC or PID namespace,
//! a bind with shared propagation) → pod directory and `pod.json` (the shim alone) → log
//! directory → jail uid → share (mounts) → pod cgroup → jail directory → virtiofsd
//! (listening socket `<jail>/fs.sock` passed as fd 3) → pod network (a tap per CNI link in
//! the pod's netns, tc-wired; DESIGN §1) → hull-vmm, jailed (`jail/`: its command line built
//! only by `hull_contract::vmm_args` with paths inside the jail, taps as fds 3…, the console
//! after them; it connects to virtiofsd while building the VM) → hybrid-vsock connection to
//! the agent through `<jail>/vsock.sock`, retried until `Health.Check` says SERVING or
//! `boot_timeout_secs` passes → the guest's interfaces, routes and neighbours →
//! `CreateSandbox`. Each resource is in `pod.json` before it exists, each child as soon as it
//! does. Any failure tears down what was made, in reverse, and the error says why in its
//! first line (`boot_failure`), then carries the tails of the VMM log, guest console and
//! virtiofsd log.

use std::collections::HashMap;
use std::os::fd::AsRawFd;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
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

use super::boot_failure::{self, NotReady};
use super::cgroup::PodCgroup;
use super::jail::{self, Jail};
use super::log_relay;
use super::record::{PodRecord, ProcId};
use super::{io_err, pod_dir, BackendError, PodBackend, Prepared};
use crate::annotations::HullAnnotations;
use crate::child::Supervised;
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
/// Bytes of each log quoted in a boot failure.
const LOG_TAIL: usize = 2000;
/// Kernel parameters of every pod VM before the operator's `vm.kernel_params`. `quiet`: the
/// console is an emulated 8250, one VM exit per byte, and the full boot log (~20 KB) cost a
/// booting guest several seconds in the lab; with `vm.guest_console`, warnings, oopses and
/// the panic line still reach `console.log`, and so does the agent's own output.
const POD_KERNEL_PARAMS: &str = "quiet";
/// Added without `vm.guest_console`: no UART at all, so the kernel neither probes nor
/// registers one (guest/README has the boot time it saves). A panic is then known from the
/// crash record the guest kernel leaves in its RAM, which hull-vmm reads back and logs
/// (vmm/src/pstore.rs); the agent logs its warnings to the kernel log instead.
const NO_UART_KERNEL_PARAMS: &str = "8250.nr_uarts=0";

/// What the shim appends to hull-vmm's command line: [`POD_KERNEL_PARAMS`] (and
/// [`NO_UART_KERNEL_PARAMS`] without a console, `HULL_DEBUG_SHELL=1` with `vm.debug_shell`),
/// then the operator's (the kernel takes the last of a repeated parameter).
fn kernel_params(operator: &str, console: bool, debug_shell: bool) -> String {
    let mut p = POD_KERNEL_PARAMS.to_owned();
    if !console {
        p = format!("{p} {NO_UART_KERNEL_PARAMS}");
    }
    if debug_shell {
        p = format!("{p} {}=1", hull_contract::guest_env::DEBUG_SHELL);
    }
    format!("{p} {operator}")
}

/// A running pod VM.
pub(super) struct VmPod {
    sid: String,
    dir: PathBuf,
    /// `<[log] pod_dir>/<sid>`: console.log, vmm.log, virtiofsd.log.
    logs: PathBuf,
    /// hull-vmm's uid and gid.
    id: u32,
    share: Share,
    cgroup: Option<PodCgroup>,
    vmm: Supervised,
    virtiofsd: Supervised,
    client: ttrpc::asynchronous::Client,
    /// The pod's netns and the CNI links wired to taps in it, to unwire at shutdown.
    wired: Option<Wired>,
    /// Loopback listeners in the netns for CRI PortForward; pods with a netns only.
    portfwd: Option<net::PortForwarder>,
    growth: super::grow::Growth,
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

/// The last [`LOG_TAIL`] bytes of a log, read by seeking (a log may be large).
fn tail(path: &Path) -> String {
    use std::io::{Read, Seek, SeekFrom};
    let Ok(mut f) = std::fs::File::open(path) else {
        return String::new();
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let want = u64::try_from(LOG_TAIL).unwrap_or(u64::MAX);
    if f.seek(SeekFrom::Start(len.saturating_sub(want))).is_err() {
        return String::new();
    }
    let mut buf = Vec::with_capacity(LOG_TAIL);
    let _ = f.take(want).read_to_end(&mut buf);
    String::from_utf8_lossy(&buf).trim().to_owned()
}

/// What is torn down, in reverse, if launch fails half way; and `pod.json` as it grows.
struct Partial {
    sid: String,
    dir: PathBuf,
    /// Written before each resource is made, and as each child starts.
    record: PodRecord,
    share: Option<Share>,
    cgroup: Option<PodCgroup>,
    children: Vec<Supervised>,
    wired: Option<Wired>,
}

impl Partial {
    fn save(&self) -> Result<(), BackendError> {
        super::record::write(&self.dir, &self.record)
    }

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
        super::cleanup::remove_pod_dir(&self.dir).await;
        if let Some(logs) = &self.record.log_dir {
            super::cleanup::remove_log_dir(logs, &self.sid).await;
        }
        release_id(&self.sid).await;
    }
}

/// Frees the jail uid of sandbox `sid` (off the runtime thread: it takes a file lock).
async fn release_id(sid: &str) {
    let sid = sid.to_owned();
    let _ = tokio::task::spawn_blocking(move || jail::Ids::node().release(&sid)).await;
}

/// The node's online CPUs (not the shim's own cgroup quota, which `available_parallelism`
/// would give): how many vCPUs a pod may grow to by default.
fn node_cpus() -> usize {
    nix::unistd::sysconf(nix::unistd::SysconfVar::_NPROCESSORS_ONLN)
        .ok()
        .flatten()
        .and_then(|n| usize::try_from(n).ok())
        .unwrap_or(1)
}

/// What the pod asked for and the node allows, decided before anything is made for it.
#[derive(Debug)]
struct Wanted {
    netns: Option<PathBuf>,
    pod_cgroup: Option<PathBuf>,
    size: sizing::VmSize,
    /// How far the VM may grow while it runs.
    reserve: sizing::Reserve,
    /// Every NIC's limits ([`crate::limits`]).
    limits: crate::limits::NetLimits,
}

impl VmPod {
    pub(super) async fn launch(
        cfg: &HullConfig,
        sid: &str,
        bundle: &Path,
        annotations: &HullAnnotations,
    ) -> Result<Self, BackendError> {
        let spec = crate::spec::read(bundle)?;
        let limits = cfg.limits.for_pod(annotations)?;
        // What a VM cannot give (the node's network, IPC or PID namespace) is refused before
        // anything is made for it.
        let netns = net::netns_path(&spec)?;
        crate::spec::refuse_host_namespaces(&spec)?;
        // A lone `ctr run` container is its own sandbox: its binds are checked before a VM
        // boots for nothing (a CRI sandbox has none).
        crate::spec::refuse_shared_propagation(&spec)?;
        // The VM must fit the host cgroup the kubelet made for the pod, whose limit is also the
        // pod's only size when a kubelet before 1.23 passes no sandbox annotations.
        let pod_cgroup = PodCgroup::dir_for(
            spec.pointer("/linux/cgroupsPath")
                .and_then(Value::as_str)
                .unwrap_or_default(),
        )?;
        let pod_memory = super::cgroup::pod_memory(pod_cgroup.as_deref());
        let size = sizing::vm_size_within(&sizing_inputs(&spec), &cfg.vm, pod_memory)?;
        let reserve = sizing::reserve(size, &cfg.vm, node_cpus());
        let dir = pod_dir(sid);
        if dir.exists() {
            // A previous shim of this pod died without cleaning up (DESIGN §2 shim/: nothing
            // outlives its pod): clean it from its record, as `shim delete` would.
            tracing::warn!(dir = %dir.display(), "stale pod directory; cleaning it");
            let mut old = super::record::read(&dir).unwrap_or_default();
            // Its shim is gone or is not this pod's any more: never kill a shim from here.
            old.shim = None;
            super::cleanup::dead_pod(sid, &old).await;
            if dir.exists() {
                return Err(BackendError::Io {
                    context: format!("remove the stale pod directory {}", dir.display()),
                    source: std::io::Error::other("something is still mounted in it"),
                });
            }
        }
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(io_err(format!("create {}", dir.display())))?;
        // For hullctl; a pod without it is only shown without its Kubernetes name.
        let identity = dir.join(hull_contract::pods::IDENTITY);
        let who = crate::spec::pod_identity(&spec);
        if !who.name.is_empty() {
            crate::bootstrap::name_pod(&who.display_name());
        }
        if let Err(e) = std::fs::write(&identity, who.to_text()) {
            tracing::warn!("cannot write {}: {e}", identity.display());
        }
        let mut partial = Partial {
            sid: sid.to_owned(),
            dir: dir.clone(),
            record: PodRecord {
                shim: ProcId::current(),
                ..Default::default()
            },
            share: None,
            cgroup: None,
            children: vec![],
            wired: None,
        };
        let started = match partial.save() {
            Ok(()) => {
                let wanted = Wanted {
                    netns,
                    pod_cgroup: pod_cgroup.clone(),
                    size,
                    reserve,
                    limits,
                };
                Self::start(cfg, sid, &spec, wanted, &mut partial).await
            }
            Err(e) => Err(e),
        };
        let api_socket = dir.join(hull_contract::pods::API_SOCKET);
        match started {
            Ok(Started {
                vmm,
                virtiofsd,
                client,
                id,
            }) => Ok(VmPod {
                portfwd: partial.wired.as_ref().map(|w| {
                    net::PortForwarder::start(
                        client.clone(),
                        w.netns.clone(),
                        jail::host_path(&dir, jail::VSOCK_SOCKET),
                    )
                }),
                logs: partial.record.log_dir.clone().unwrap_or_default(),
                sid: sid.to_owned(),
                id,
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
                growth: super::grow::Growth::new(api_socket, size, reserve, pod_cgroup),
                stopping: AtomicBool::new(false),
            }),
            Err(e) => {
                partial.undo().await;
                Err(e)
            }
        }
    }

    /// Makes the pod's resources in order, each recorded in `p` (and `pod.json`) before it
    /// is created.
    async fn start(
        cfg: &HullConfig,
        sid: &str,
        spec: &Value,
        wanted: Wanted,
        p: &mut Partial,
    ) -> Result<Started, BackendError> {
        let Wanted {
            netns,
            pod_cgroup,
            size,
            reserve,
            limits,
        } = wanted;
        // Each step's end in the debug log: what a pod start spends on the host before the boot.
        let t = Instant::now();
        let mut steps: Vec<(&'static str, Duration)> = Vec::new();
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
        // A node whose hull.toml names a file that is not there fails every pod: say which,
        // after the pod's own input is checked and before anything is made (the jail's bind
        // mounts would only say ENOENT).
        for (key, path) in [
            ("vmm", &cfg.vm.vmm),
            ("kernel", &cfg.vm.kernel),
            ("initrd", &cfg.vm.initrd),
        ] {
            std::fs::File::open(path).map_err(|source| BackendError::GuestImage {
                key,
                path: path.clone(),
                source,
            })?;
        }
        let dir = p.dir.clone();

        let logs = cfg.log.pod_dir.join(sid);
        p.record.log_dir = Some(logs.clone());
        p.save()?;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&logs)
            .map_err(io_err(format!("create {}", logs.display())))?;

        // The marker of hull-vmm's uid names the sandbox: cleanup frees it even if the shim
        // dies before the uid reaches pod.json.
        let (range, owner) = (cfg.jail.uid_range, sid.to_owned());
        let id = tokio::task::spawn_blocking(move || jail::Ids::node().allocate(range, &owner))
            .await
            .map_err(|_| BackendError::Blocking("allocate a jail uid"))??;
        p.record.uid = Some(id);
        p.save()?;
        steps.push(("logs and uid", t.elapsed()));

        let share = Share::at(&dir);
        share.create()?;
        p.share = Some(share.clone());

        if let Some(cg) = pod_cgroup {
            p.record.cgroups = vec![cg.clone()];
            p.save()?;
            p.cgroup = Some(PodCgroup::create(cg)?);
        }
        let procs = p.cgroup.as_ref().map(PodCgroup::procs_fd);
        steps.push(("share and cgroup", t.elapsed()));

        let jail = Jail::prepare(&dir, id)?;
        let (virtiofsd_err, virtiofsd_relay) = relay_log("virtiofsd", &logs.join("virtiofsd.log"))?;
        let virtiofsd = super::virtiofsd::start(
            &cfg.virtiofs,
            share.served_dir(),
            &jail::host_path(&dir, jail::FS_SOCKET),
            virtiofsd_err,
            procs,
        )?;
        p.children.push(virtiofsd.clone());
        let virtiofsd_id = ProcId::of(virtiofsd.pid());
        p.record.children.extend(virtiofsd_id);
        p.save()?;
        write_processes(&dir, p.record.shim, virtiofsd_id);
        jail.hand_over(jail::FS_SOCKET)?;
        steps.push(("jail and virtiofsd", t.elapsed()));

        let pod_net = match netns {
            Some(ns) => {
                // Recorded before any link is wired, so a shim killed while wiring leaves
                // a record `shim delete` unwires them from.
                let path = ns.clone();
                let planned = tokio::task::spawn_blocking(move || net::links_to_wire(&path))
                    .await
                    .map_err(|_| NetError::Panicked)??;
                p.record.netns = Some(ns.clone());
                p.record.links.clone_from(&planned);
                p.wired = Some(Wired {
                    netns: ns.clone(),
                    links: planned,
                });
                p.save()?;
                let path = ns.clone();
                let n = tokio::task::spawn_blocking(move || net::attach(&path))
                    .await
                    .map_err(|_| NetError::Panicked)??;
                let links: Vec<String> = n.nics.iter().map(|n| n.link.name.clone()).collect();
                p.record.links.clone_from(&links);
                p.wired = Some(Wired { netns: ns, links });
                p.save()?;
                Some(n)
            }
            None => None,
        };

        steps.push(("network", t.elapsed()));
        let vsock = jail::host_path(&dir, jail::VSOCK_SOCKET);
        let console_path = logs.join("console.log");
        let console = if cfg.vm.guest_console {
            Some(
                std::fs::File::create(&console_path)
                    .map_err(io_err(format!("create {}", console_path.display())))?,
            )
        } else {
            None
        };
        let vmm_log = logs.join("vmm.log");
        let (log, vmm_relay) = relay_log("hull-vmm", &vmm_log)?;
        // Paths as hull-vmm sees them, inside its jail.
        let mut args = VmmArgs::new(jail::KERNEL, size.vcpus, size.memory_mib);
        args.max_vcpus = Some(reserve.max_vcpus);
        args.hotplug_mib = (reserve.hotplug_mib > 0).then_some(reserve.hotplug_mib);
        args.disk_slots = (cfg.vm.disk_slots > 0).then_some(cfg.vm.disk_slots);
        args.initrd = Some(jail::INITRD.into());
        args.vsock_uds = Some(jail::VSOCK_SOCKET.into());
        args.api_sock = Some(jail::API_SOCKET.into());
        args.boot = true;
        args.cid = Some(hull_contract::vsock::GUEST_CID);
        args.fs.push(FsArg {
            socket: jail::FS_SOCKET.into(),
            tag: hull_contract::SHARE_FS_TAG.to_owned(),
        });
        // The operator's parameters come after hull's, so `loglevel=7` there undoes `quiet`.
        args.cmdline_append = Some(kernel_params(
            &cfg.vm.kernel_params,
            console.is_some(),
            cfg.vm.debug_shell,
        ));
        args.no_free_page_reporting = !cfg.vm.free_page_reporting;
        let mut fds = vec![];
        if let Some(n) = &pod_net {
            for (fd_no, nic) in (3..).zip(&n.nics) {
                fds.push(nic.tap.as_raw_fd());
                // A link's MTU is at most ETH_MAX_MTU (65535): the saturation never bites.
                let mtu = u16::try_from(nic.link.mtu).unwrap_or(u16::MAX);
                let mut nic = NetArg::fd(fd_no, &nic.link.mac.to_string(), mtu);
                (nic.rx, nic.tx) = (limits.rx, limits.tx);
                args.net.push(nic);
            }
        }
        // The console is opened here and passed: hull-vmm cannot open host paths.
        args.console = match &console {
            Some(f) => {
                let fd_no = 3 + i32::try_from(fds.len()).unwrap_or(0);
                fds.push(f.as_raw_fd());
                Console::Fd(fd_no)
            }
            None => Console::Off,
        };
        let vmm = jail.spawn_vmm(jail::VmmLaunch {
            vmm: &cfg.vm.vmm,
            kernel: &cfg.vm.kernel,
            initrd: &cfg.vm.initrd,
            args: args.to_args(),
            fds,
            stderr: log.as_raw_fd(),
            cgroup_procs: procs,
            fsize: jail::fsize_limit(size.memory_mib.saturating_add(reserve.hotplug_mib)),
        })?;
        // hull-vmm holds the taps and its logs now; the shim's copies would keep the taps
        // alive after it.
        drop((console, log));
        let pod_net = pod_net.map(PodNetwork::without_taps);
        p.children.push(vmm.clone());
        p.record.children.extend(ProcId::of(vmm.pid()));
        p.save()?;
        steps.push(("hull-vmm", t.elapsed()));
        tracing::debug!(?steps, "pod VM prepared (each step's end)");
        tracing::info!(
            vmm = vmm.pid(),
            virtiofsd = virtiofsd.pid(),
            uid = id,
            vcpus = size.vcpus,
            mem_mib = size.memory_mib,
            "pod VM starting"
        );

        let deadline = Duration::from_secs(u64::from(cfg.vm.boot_timeout_secs));
        let client = match connect_when_ready(&vmm, &virtiofsd, &vsock, deadline).await {
            Ok(c) => c,
            Err(why) => {
                // An ended process's last lines may still be in its relay's pipe.
                if !matches!(why, NotReady::Timeout { .. }) {
                    tokio::join!(
                        vmm_relay.settle(RELAY_SETTLE),
                        virtiofsd_relay.settle(RELAY_SETTLE)
                    );
                }
                // The reason first (what `kubectl describe` shows), then the logs. Without a
                // console, a guest kernel's panic is in hull-vmm's log (pstore).
                let vmm_tail = tail(&vmm_log);
                let console = if cfg.vm.guest_console {
                    format!("\n--- guest console ---\n{}", tail(&console_path))
                } else {
                    String::new()
                };
                return Err(BackendError::AgentStart(format!(
                    "{}\n--- hull-vmm log ---\n{vmm_tail}{console}\n--- virtiofsd log ---\n{}",
                    boot_failure::reason(&why, &vmm_tail),
                    tail(&logs.join("virtiofsd.log"))
                )));
            }
        };
        if let Some(n) = &pod_net {
            configure_guest_network(&client, n)
                .await
                .map_err(|e| BackendError::AgentStart(format!("guest network: {e}")))?;
        }
        let t = std::time::Instant::now();
        SandboxClient::new(client.clone())
            .create_sandbox(ttrpc::context::with_timeout(30_000_000_000), &sandbox)
            .await
            .map_err(|e| BackendError::AgentStart(format!("CreateSandbox: {e}")))?;
        tracing::debug!(elapsed = ?t.elapsed(), "sandbox created in the agent");
        Ok(Started {
            vmm,
            virtiofsd,
            client,
            id,
        })
    }
}

/// What [`VmPod::start`] hands back.
struct Started {
    vmm: Supervised,
    virtiofsd: Supervised,
    client: ttrpc::asynchronous::Client,
    id: u32,
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

/// How long a failed start waits for an ended process's last log lines.
const RELAY_SETTLE: Duration = Duration::from_secs(2);

/// `path` (created) and a relay into it and the shim's log (`log_relay`): the descriptor to
/// give the process as its stderr.
fn relay_log(
    source: &'static str,
    path: &Path,
) -> Result<(std::os::fd::OwnedFd, log_relay::Relay), BackendError> {
    let file = std::fs::File::create(path).map_err(io_err(format!("create {}", path.display())))?;
    log_relay::start(source, file).map_err(io_err(format!("relay {source}'s log")))
}

/// For hullctl's metrics (`hull_contract::pods::PROCESSES`); a pod without it only lacks the
/// shim's and virtiofsd's memory there.
fn write_processes(dir: &Path, shim: Option<ProcId>, virtiofsd: Option<ProcId>) {
    let id = |p: ProcId| hull_contract::pods::ProcessId {
        pid: p.pid,
        start_time: p.start_time,
    };
    let text = hull_contract::pods::PodProcesses {
        shim: shim.map(id),
        virtiofsd: virtiofsd.map(id),
    }
    .to_text();
    let path = dir.join(hull_contract::pods::PROCESSES);
    if let Err(e) = std::fs::write(&path, text) {
        tracing::warn!("cannot write {}: {e}", path.display());
    }
}

/// Retries the agent until it answers SERVING, hull-vmm or virtiofsd dies, or `deadline`.
async fn connect_when_ready(
    vmm: &Supervised,
    virtiofsd: &Supervised,
    vsock: &Path,
    deadline: Duration,
) -> Result<ttrpc::asynchronous::Client, NotReady> {
    let start = Instant::now();
    let mut last = String::from("no attempt");
    loop {
        if let Some(s) = vmm.try_status() {
            return Err(NotReady::VmmExited(s.to_string()));
        }
        if let Some(s) = virtiofsd.try_status() {
            // virtiofsd exits 0 when its frontend disconnects: hull-vmm's end, if it ended
            // too, is the cause (a guest kernel panic ends both, virtiofsd first at times).
            return Err(
                match tokio::time::timeout(Duration::from_secs(2), vmm.exited()).await {
                    Ok(vmm_status) => NotReady::VmmExited(vmm_status.to_string()),
                    Err(_) => NotReady::VirtiofsdExited(s.to_string()),
                },
            );
        }
        if start.elapsed() > deadline {
            return Err(NotReady::Timeout {
                after: deadline,
                last,
            });
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
            uid: Some(self.id),
            log_dir: Some(self.logs.clone()),
        }
    }

    async fn grow(&self, want: sizing::VmSize) -> Result<(), BackendError> {
        Ok(self.growth.grow(&self.client, want).await?)
    }

    fn alive(&self) -> bool {
        self.vmm.try_status().is_none() && self.virtiofsd.try_status().is_none()
    }

    /// Says which process ended. Its own last lines are already in the shim's log, relayed
    /// as they came (`log_relay`), so they are not quoted again here.
    async fn died(&self) {
        tokio::select! {
            s = self.vmm.exited() => {
                if !self.stopping.load(Ordering::Acquire) {
                    tracing::error!(status = %s, log = %self.logs.join("vmm.log").display(), "hull-vmm ended unexpectedly (its lines are above)");
                }
            }
            s = self.virtiofsd.exited() => {
                if !self.stopping.load(Ordering::Acquire) {
                    tracing::error!(status = %s, log = %self.logs.join("virtiofsd.log").display(), "virtiofsd ended unexpectedly (its lines are above)");
                }
            }
        }
    }

    async fn shutdown(&self, shim_left: super::ShimLeft) -> Result<(), BackendError> {
        self.stopping.store(true, Ordering::Release);
        // First: its listeners hold the netns, and its streams run through the VM.
        if let Some(f) = &self.portfwd {
            f.stop();
        }
        let (s, ()) = tokio::join!(self.vmm.stop(VMM_STOP_GRACE), shim_left);
        tracing::info!(status = %s, "hull-vmm stopped");
        self.virtiofsd.stop(VIRTIOFSD_STOP_GRACE).await;
        if let Some(w) = self.wired.clone() {
            w.unwire().await;
        }
        self.share.destroy();
        if let Some(c) = &self.cgroup {
            super::cleanup::remove_cgroup(c.dir()).await;
        }
        super::cleanup::remove_pod_dir(&self.dir).await;
        super::cleanup::remove_log_dir(&self.logs, &self.sid).await;
        release_id(&self.sid).await;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn pods_boot_quiet_without_a_uart_unless_the_operator_says_otherwise() {
        assert_eq!(
            kernel_params("", false, false)
                .split_whitespace()
                .collect::<Vec<_>>(),
            ["quiet", "8250.nr_uarts=0"]
        );
        assert_eq!(
            kernel_params("", true, false)
                .split_whitespace()
                .collect::<Vec<_>>(),
            ["quiet"]
        );
        // `loglevel=` after `quiet` wins: the kernel parses early parameters in order.
        assert_eq!(kernel_params("loglevel=7", true, false), "quiet loglevel=7");
        // The debug shell only when the node's hull.toml turns it on.
        assert_eq!(
            kernel_params("", true, true).trim_end(),
            "quiet HULL_DEBUG_SHELL=1"
        );
    }

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
