//! The pod-level state of the guest: hostname, resolv.conf, hosts, sysctls and the pod's
//! storages. One owner: the [`Sandbox`] behind an async mutex (create and destroy are rare and
//! must not interleave).

use std::path::{Path, PathBuf};

use hull_proto::common::Storage;
use tokio::sync::Mutex;

use crate::engine::{spec, Engine, EngineError, Result};
use crate::storage::{self, StorageConfig};

/// What CreateSandbox asks for, free of wire types.
#[derive(Debug, Clone, Default)]
pub(crate) struct SandboxRequest {
    pub(crate) id: String,
    pub(crate) hostname: String,
    pub(crate) dns_servers: Vec<String>,
    pub(crate) dns_searches: Vec<String>,
    pub(crate) dns_options: Vec<String>,
    pub(crate) resolv_conf: Vec<u8>,
    pub(crate) hosts: Vec<u8>,
    pub(crate) storages: Vec<Storage>,
    pub(crate) sysctls: Vec<(String, String)>,
}

#[derive(Debug, Default)]
struct State {
    id: Option<String>,
    mounts: Vec<PathBuf>,
}

/// The sandbox manager.
#[derive(Debug)]
pub struct Sandbox {
    etc_dir: PathBuf,
    storage: StorageConfig,
    /// The agent runs on a real host: its namespaces are the host's (see `EngineConfig`).
    host_mode: bool,
    state: Mutex<State>,
}

fn resolv_conf(r: &SandboxRequest) -> Result<Vec<u8>> {
    if !r.resolv_conf.is_empty() {
        return Ok(r.resolv_conf.clone());
    }
    let mut out = String::new();
    for s in &r.dns_servers {
        s.parse::<std::net::IpAddr>().map_err(|_| {
            EngineError::InvalidArgument(format!("DNS server {s:?} is not an IP address"))
        })?;
        out.push_str(&format!("nameserver {s}\n"));
    }
    let bad = |v: &String| v.chars().any(|c| c.is_whitespace() || c.is_control());
    if let Some(b) = r.dns_searches.iter().chain(&r.dns_options).find(|v| bad(v)) {
        return Err(EngineError::InvalidArgument(format!(
            "bad resolver entry {b:?}"
        )));
    }
    if !r.dns_searches.is_empty() {
        out.push_str(&format!("search {}\n", r.dns_searches.join(" ")));
    }
    if !r.dns_options.is_empty() {
        out.push_str(&format!("options {}\n", r.dns_options.join(" ")));
    }
    Ok(out.into_bytes())
}

fn valid_hostname(h: &str) -> bool {
    !h.is_empty()
        && h.len() <= 64
        && h.split('.')
            .all(|l| !l.is_empty() && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'))
}

impl Sandbox {
    pub fn new(etc_dir: PathBuf, storage: StorageConfig, host_mode: bool) -> Self {
        Sandbox {
            etc_dir,
            storage,
            host_mode,
            state: Mutex::new(State::default()),
        }
    }

    pub(crate) async fn do_create(&self, r: SandboxRequest) -> Result<()> {
        if r.id.is_empty() {
            return Err(EngineError::InvalidArgument(
                "sandbox_id must not be empty".into(),
            ));
        }
        let mut st = self.state.lock().await;
        if let Some(id) = &st.id {
            return Err(EngineError::AlreadyExists(format!(
                "sandbox {id:?} already exists"
            )));
        }
        if !r.hostname.is_empty() && !valid_hostname(&r.hostname) {
            return Err(EngineError::InvalidArgument(format!(
                "bad hostname {:?}",
                r.hostname
            )));
        }
        // Written in the agent's own namespaces: in the guest its network namespace is the
        // pod's, but its ipc namespace is not (the sandbox container has one of its own), so
        // only net.* ones are taken, and none in host mode.
        let sysctls = spec::sysctls(
            r.sysctls.iter().map(|(k, v)| (k, v)),
            &spec::Namespaces::default(),
            self.host_mode,
        )?;
        let resolv = resolv_conf(&r)?;
        if !r.hostname.is_empty() {
            nix::unistd::sethostname(&r.hostname)
                .map_err(|e| EngineError::Internal(format!("sethostname: {e}")))?;
        }
        let hosts = if r.hosts.is_empty() {
            let mut h =
                String::from("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n");
            if !r.hostname.is_empty() {
                h.push_str(&format!("127.0.1.1\t{}\n", r.hostname));
            }
            h.into_bytes()
        } else {
            r.hosts.clone()
        };
        std::fs::create_dir_all(&self.etc_dir).map_err(|e| EngineError::io("create etc dir", e))?;
        for (name, data) in [
            ("resolv.conf", resolv),
            ("hosts", hosts),
            ("hostname", format!("{}\n", r.hostname).into_bytes()),
        ] {
            std::fs::write(self.etc_dir.join(name), data)
                .map_err(|e| EngineError::io(format!("write {name}"), e))?;
        }
        for (path, value) in &sysctls {
            std::fs::write(Path::new("/proc/sys").join(path), value)
                .map_err(|e| EngineError::InvalidArgument(format!("sysctl {path}={value}: {e}")))?;
        }
        let storage = self.storage.clone();
        let storages = r.storages.clone();
        st.mounts = tokio::task::spawn_blocking(move || storage::mount_all(&storage, &storages))
            .await
            .map_err(|e| EngineError::Internal(e.to_string()))??;
        st.id = Some(r.id);
        Ok(())
    }

    pub(crate) async fn do_destroy(&self, engine: &Engine, id: &str) -> Result<()> {
        let mut st = self.state.lock().await;
        match &st.id {
            Some(cur) if cur == id => {}
            Some(cur) => {
                return Err(EngineError::NotFound(format!(
                    "sandbox {id:?} not found (this guest runs {cur:?})"
                )))
            }
            None => return Err(EngineError::NotFound(format!("sandbox {id:?} not found"))),
        }
        let mut first_err = None;
        for cid in engine.container_ids().await {
            if let Err(e) = engine.remove(&cid, 0).await {
                tracing::warn!("destroy sandbox: remove {cid}: {e}");
                first_err.get_or_insert(e);
            }
        }
        for m in st.mounts.drain(..).rev() {
            storage::unmount(&m);
        }
        st.id = None;
        first_err.map_or(Ok(()), Err)
    }

    /// Storage config for container storages.
    pub(crate) fn storage_config(&self) -> &StorageConfig {
        &self.storage
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sandbox(etc: &Path) -> Sandbox {
        let storage = StorageConfig {
            share_dir: etc.join("unused-share"),
            share_premounted: true,
        };
        Sandbox::new(etc.to_path_buf(), storage, true)
    }

    #[tokio::test]
    async fn the_pods_resolv_conf_and_hosts_are_written_verbatim() {
        let dir = tempfile::tempdir().unwrap();
        let s = sandbox(dir.path());
        let resolv = b"nameserver 10.96.0.10\nsearch default.svc.cluster.local\noptions ndots:5\n";
        let hosts = b"127.0.0.1\tlocalhost\n10.88.0.7\tweb-0\n";
        let r = SandboxRequest {
            id: "pod".into(),
            // Ignored: the verbatim file wins over resolver fields.
            dns_servers: vec!["1.1.1.1".into()],
            resolv_conf: resolv.to_vec(),
            hosts: hosts.to_vec(),
            ..Default::default()
        };
        s.do_create(r).await.unwrap();
        assert_eq!(
            std::fs::read(dir.path().join("resolv.conf")).unwrap(),
            resolv
        );
        assert_eq!(std::fs::read(dir.path().join("hosts")).unwrap(), hosts);
    }

    #[tokio::test]
    async fn without_pod_files_the_resolver_fields_and_a_localhost_hosts_are_written() {
        let dir = tempfile::tempdir().unwrap();
        let s = sandbox(dir.path());
        let r = SandboxRequest {
            id: "pod".into(),
            dns_servers: vec!["10.0.0.2".into()],
            dns_searches: vec!["svc.local".into()],
            ..Default::default()
        };
        s.do_create(r).await.unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.path().join("resolv.conf")).unwrap(),
            "nameserver 10.0.0.2\nsearch svc.local\n"
        );
        let hosts = std::fs::read_to_string(dir.path().join("hosts")).unwrap();
        assert!(hosts.starts_with("127.0.0.1\tlocalhost\n"), "{hosts}");
        let bad = SandboxRequest {
            id: "pod2".into(),
            dns_servers: vec!["not-an-ip".into()],
            ..Default::default()
        };
        let e = sandbox(dir.path()).do_create(bad).await.unwrap_err();
        assert!(matches!(e, EngineError::InvalidArgument(_)), "{e}");
    }

    #[tokio::test]
    async fn pod_sysctls_outside_the_pods_network_namespace_are_refused_before_anything() {
        let dir = tempfile::tempdir().unwrap();
        // Host mode: the agent's namespaces are the host's. The guest's IPC namespace is not
        // the pod's either (the sandbox container has its own), nor is anything global.
        for (key, host_mode) in [
            ("net.ipv4.ping_group_range", true),
            ("kernel.shm_rmid_forced", false),
            ("fs.mqueue.msg_max", false),
            ("kernel.panic", false),
            ("vm.swappiness", false),
        ] {
            let s = Sandbox::new(
                dir.path().to_path_buf(),
                sandbox(dir.path()).storage,
                host_mode,
            );
            let r = SandboxRequest {
                id: "pod".into(),
                sysctls: vec![(key.into(), "1".into())],
                ..Default::default()
            };
            let e = s.do_create(r).await.unwrap_err();
            assert!(matches!(e, EngineError::InvalidArgument(_)), "{key}: {e}");
            assert!(!dir.path().join("hosts").exists(), "{key}");
        }
    }
}
