//! Helpers shared by the agent's integration tests.
#![allow(dead_code)] // each test binary uses a different subset

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hull_proto::containers::*;
use hull_proto::containers_ttrpc::ContainersClient;
use hull_proto::processes::*;
use hull_proto::processes_ttrpc::ProcessesClient;
use serde_json::{json, Value};

/// The repository root (this crate lives in `<repo>/agent`).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// Builds the workspace binary `name` (debug) and returns its path.
pub fn build_bin(name: &str) -> PathBuf {
    hull_tests::build_bin(name).unwrap_or_else(|e| panic!("{e}"))
}

/// A host-mode agent on a private socket and cgroup parent, killed and cleaned up on drop.
pub struct Agent {
    pub child: Child,
    pub dir: tempfile::TempDir,
    pub cgroup_parent: PathBuf,
    pub containers: ContainersClient,
    pub processes: ProcessesClient,
    pub client: ttrpc::r#async::Client,
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // Leftover container cgroups (a failed test) then the parent.
        if let Ok(rd) = std::fs::read_dir(&self.cgroup_parent) {
            for e in rd.flatten() {
                if e.path().is_dir() {
                    let _ = std::fs::write(e.path().join("cgroup.kill"), "1");
                    std::thread::sleep(Duration::from_millis(50));
                    let _ = std::fs::remove_dir(e.path());
                }
            }
        }
        let _ = std::fs::remove_dir(&self.cgroup_parent);
    }
}

pub fn cgroup2_root() -> PathBuf {
    for p in ["/sys/fs/cgroup/unified", "/sys/fs/cgroup"] {
        if Path::new(p).join("cgroup.procs").exists()
            && Path::new(p).join("cgroup.subtree_control").exists()
        {
            return p.into();
        }
    }
    panic!("no cgroup2 hierarchy");
}

pub fn ctx() -> ttrpc::context::Context {
    ttrpc::context::with_timeout(60_000_000_000)
}

pub async fn agent(name: &str) -> Agent {
    let dir = tempfile::tempdir().expect("tempdir");
    let sock = dir.path().join("agent.sock");
    let cgroup_parent = cgroup2_root().join(format!("hull-test-{}-{name}", std::process::id()));
    let mut child = Command::new(env!("CARGO_BIN_EXE_hull-agent"))
        .arg("--listen")
        .arg(format!("unix:{}", sock.display()))
        .arg("--root")
        .arg(dir.path().join("state"))
        .arg("--cgroup-parent")
        .arg(&cgroup_parent)
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn agent");
    let start = Instant::now();
    while !sock.exists() {
        assert!(child.try_wait().unwrap().is_none(), "agent exited early");
        assert!(start.elapsed() < Duration::from_secs(20));
        std::thread::sleep(Duration::from_millis(10));
    }
    let client = ttrpc::r#async::Client::connect(&format!("unix://{}", sock.display()))
        .await
        .expect("connect");
    Agent {
        child,
        cgroup_parent,
        containers: ContainersClient::new(client.clone()),
        processes: ProcessesClient::new(client.clone()),
        client,
        dir,
    }
}

pub fn busybox_rootfs(dir: &Path) -> PathBuf {
    let root = dir.join("rootfs");
    for d in ["bin", "proc", "dev", "tmp", "etc", "sys"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    std::fs::copy("/bin/busybox", root.join("bin/busybox")).expect("copy busybox");
    // Relative links (busybox --install -s would point at the host path of the binary).
    let list = Command::new("/bin/busybox")
        .arg("--list")
        .output()
        .expect("busybox --list");
    for applet in String::from_utf8_lossy(&list.stdout).lines() {
        if applet != "busybox" {
            let _ = std::os::unix::fs::symlink("busybox", root.join("bin").join(applet));
        }
    }
    std::fs::write(
        root.join("etc/passwd"),
        "root:x:0:0:root:/:/bin/sh\nuser:x:1000:1000::/tmp:/bin/sh\n",
    )
    .unwrap();
    root
}

pub fn spec(root: &Path, args: &[&str]) -> Value {
    json!({
        "ociVersion": "1.0.2",
        "root": {"path": root},
        "process": {"args": args, "cwd": "/", "user": {"uid": 0, "gid": 0},
                    "env": ["PATH=/bin", "HOME=/"]},
        "hostname": "box",
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "mode=755"]},
            {"destination": "/dev/pts", "type": "devpts", "source": "devpts", "options": ["newinstance", "ptmxmode=0666"]},
            {"destination": "/tmp", "type": "tmpfs", "source": "tmpfs"}
        ],
        "linux": {"namespaces": [{"type": "pid"}, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"}]}
    })
}

impl Agent {
    pub async fn create(&self, id: &str, spec: &Value, stdin: bool) -> Result<u32, ttrpc::Error> {
        self.create_with(id, spec, stdin, false).await
    }

    /// Create with the init process's stdio on a terminal (`terminal`) or on pipes.
    pub async fn create_with(
        &self,
        id: &str,
        spec: &Value,
        stdin: bool,
        terminal: bool,
    ) -> Result<u32, ttrpc::Error> {
        let req = CreateContainerRequest {
            container_id: id.into(),
            exec_id: id.into(),
            oci_spec_json: serde_json::to_vec(spec).unwrap(),
            stdin,
            terminal,
            ..Default::default()
        };
        self.containers
            .create_container(ctx(), &req)
            .await
            .map(|r| r.pid)
    }

    pub async fn start(&self, id: &str) {
        self.containers
            .start_container(
                ctx(),
                &StartContainerRequest {
                    container_id: id.into(),
                    ..Default::default()
                },
            )
            .await
            .expect("start");
    }

    pub async fn run(&self, id: &str, spec: &Value) {
        self.create(id, spec, false).await.expect("create");
        self.start(id).await;
    }

    pub async fn read_all(&self, id: &str, exec: &str, stderr: bool) -> Vec<u8> {
        let mut out = Vec::new();
        loop {
            let req = ReadStreamRequest {
                container_id: id.into(),
                exec_id: exec.into(),
                max_len: 1 << 20,
                ..Default::default()
            };
            let r = if stderr {
                self.processes.read_stderr(ctx(), &req).await
            } else {
                self.processes.read_stdout(ctx(), &req).await
            }
            .expect("read");
            out.extend_from_slice(&r.data);
            if r.eof {
                return out;
            }
        }
    }

    pub async fn wait(&self, id: &str, exec: &str) -> ExitStatus {
        self.processes
            .wait_process(
                ctx(),
                &WaitProcessRequest {
                    container_id: id.into(),
                    exec_id: exec.into(),
                    ..Default::default()
                },
            )
            .await
            .expect("wait")
            .exit
            .unwrap()
    }

    pub async fn remove(&self, id: &str) {
        self.containers
            .remove_container(
                ctx(),
                &RemoveContainerRequest {
                    container_id: id.into(),
                    ..Default::default()
                },
            )
            .await
            .expect("remove");
    }

    pub async fn exec(
        &self,
        id: &str,
        exec: &str,
        args: &[&str],
        terminal: bool,
        stdin: bool,
    ) -> Result<u32, ttrpc::Error> {
        let p = json!({"args": args, "cwd": "/", "user": {"uid": 0, "gid": 0}, "env": ["PATH=/bin"], "terminal": terminal});
        let req = ExecProcessRequest {
            container_id: id.into(),
            exec_id: exec.into(),
            process_json: serde_json::to_vec(&p).unwrap(),
            terminal,
            stdin,
            ..Default::default()
        };
        self.processes
            .exec_process(ctx(), &req)
            .await
            .map(|r| r.pid)
    }

    pub async fn resize(&self, id: &str, exec: &str, rows: u32, cols: u32) {
        self.processes
            .tty_win_resize(
                ctx(),
                &TtyWinResizeRequest {
                    container_id: id.into(),
                    exec_id: exec.into(),
                    rows,
                    cols,
                    ..Default::default()
                },
            )
            .await
            .expect("resize");
    }

    pub async fn write_stdin(&self, id: &str, exec: &str, data: &[u8]) -> u32 {
        self.processes
            .write_stdin(
                ctx(),
                &WriteStdinRequest {
                    container_id: id.into(),
                    exec_id: exec.into(),
                    data: data.to_vec(),
                    ..Default::default()
                },
            )
            .await
            .expect("write stdin")
            .bytes_written
    }

    pub async fn signal(&self, id: &str, exec: &str, sig: u32) {
        self.processes
            .signal_process(
                ctx(),
                &SignalProcessRequest {
                    container_id: id.into(),
                    exec_id: exec.into(),
                    signal: sig,
                    ..Default::default()
                },
            )
            .await
            .expect("signal");
    }
}

pub fn code(e: &ttrpc::Error) -> ttrpc::Code {
    match e {
        ttrpc::Error::RpcStatus(s) => s.code(),
        other => panic!("not a status: {other:?}"),
    }
}
