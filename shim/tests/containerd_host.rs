//! The shim against a real containerd 1.6 (Debian's `/usr/bin/containerd`) on this host, with
//! the test-only host-agent backend (hull-agent on the host instead of a VM), side by side with
//! runc: output, exit codes, death by signal, and that nothing is left behind.
//!
//! Needs root (containerd, mounts, cgroups). It never skips: without root it fails.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const IMAGE: &str = "docker.io/library/hull-busybox:latest";
const NS: &str = "hull-test";

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// Builds the agent and the shim with the host-agent backend; copies the shim away so a
/// concurrent default-feature build cannot swap the binary under the test.
fn build(dir: &Path) -> (PathBuf, PathBuf) {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(cargo)
        .args(["build", "--locked", "-p", "hull-agent", "-p", "hull-shim"])
        .args(["--features", "hull-shim/host-agent-backend"])
        .current_dir(repo_root())
        .status()
        .expect("run cargo build");
    assert!(status.success(), "cargo build failed");
    let target = std::env::current_exe()
        .expect("current_exe")
        .parent()
        .and_then(Path::parent)
        .expect("target dir")
        .to_path_buf();
    let shim = dir.join("containerd-shim-hull-v2");
    std::fs::copy(target.join("containerd-shim-hull-v2"), &shim).expect("copy shim");
    (shim, target.join("hull-agent"))
}

/// A private containerd under /tmp, stopped and removed on drop.
struct Containerd {
    dir: PathBuf,
    child: Child,
}

impl Containerd {
    fn sock(&self) -> PathBuf {
        self.dir.join("containerd.sock")
    }

    fn start(dir: &Path) -> Self {
        let cfg = dir.join("config.toml");
        std::fs::write(
            &cfg,
            format!(
                "version = 2\nroot = \"{d}/root\"\nstate = \"{d}/state\"\n\
                 imports = [\"{r}/deploy/containerd/hull.toml\"]\n\
                 disabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n\
                 [grpc]\n  address = \"{d}/containerd.sock\"\n[debug]\n  level = \"debug\"\n",
                d = dir.display(),
                r = repo_root().display()
            ),
        )
        .expect("write config");
        let log = std::fs::File::create(dir.join("containerd.log")).expect("log");
        let child = Command::new("/usr/bin/containerd")
            .arg("--config")
            .arg(&cfg)
            .stdout(log.try_clone().expect("dup"))
            .stderr(log)
            .spawn()
            .expect("spawn containerd");
        let c = Containerd {
            dir: dir.to_path_buf(),
            child,
        };
        let start = Instant::now();
        while !c.ctr(&["version"]).status.success() {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "containerd did not come up"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        c
    }

    fn ctr_cmd(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("ctr");
        cmd.arg("-a").arg(self.sock()).args(["-n", NS]).args(args);
        cmd.stdin(Stdio::null());
        cmd
    }

    fn ctr(&self, args: &[&str]) -> Output {
        self.ctr_cmd(args).output().expect("run ctr")
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = Command::new("umount")
            .arg("-R")
            .arg(self.dir.join("root"))
            .stderr(Stdio::null())
            .status();
    }
}

/// The `--runtime` arguments of one runtime.
struct Runtime {
    name: &'static str,
    args: Vec<String>,
}

fn run_args<'a>(rt: &'a Runtime, id: &'a str, cmd: &[&'a str]) -> Vec<&'a str> {
    let mut a = vec!["run", "--rm"];
    a.extend(rt.args.iter().map(String::as_str));
    a.extend([IMAGE, id]);
    a.extend(cmd);
    a
}

fn sockets() -> BTreeSet<String> {
    std::fs::read_dir("/run/containerd/s")
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Pids whose command line mentions `needle`.
fn procs_with(needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let cmdline = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if cmdline.contains(needle) {
            found.push(format!("{}: {cmdline}", e.file_name().to_string_lossy()));
        }
    }
    found
}

fn wait_running(c: &Containerd, id: &str) {
    let start = Instant::now();
    loop {
        let out = c.ctr(&["task", "ls"]);
        let ls = String::from_utf8_lossy(&out.stdout);
        if ls
            .lines()
            .any(|l| l.starts_with(id) && l.contains("RUNNING"))
        {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "{id} never ran: {ls}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn ctr_run_output_exit_codes_and_signals_match_runc_and_leave_nothing() {
    assert!(
        nix::unistd::Uid::effective().is_root(),
        "this test drives a private containerd and needs root"
    );
    let dir = PathBuf::from(format!("/tmp/hull-shim-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("mkdir");
    let (shim, agent) = build(&dir);
    let hull_toml = dir.join("hull.toml");
    std::fs::write(
        &hull_toml,
        format!(
            "[vm]\nvmm = \"/usr/local/bin/hull-vmm\"\nkernel = \"/k\"\ninitrd = \"/i\"\n\
             [log]\nlevel = \"debug\"\n[host_agent]\nagent = \"{}\"\n",
            agent.display()
        ),
    )
    .expect("hull.toml");
    let image = dir.join("busybox.tar");
    let st = Command::new(repo_root().join("scripts/mk-busybox-image"))
        .arg(&image)
        .status()
        .expect("mk-busybox-image");
    assert!(st.success(), "mk-busybox-image failed");

    let sockets_before = sockets();
    let c = Containerd::start(&dir);
    let out = c.ctr(&["images", "import", image.to_str().expect("utf8")]);
    assert!(out.status.success(), "import: {out:?}");

    let runtimes = [
        Runtime {
            name: "hull",
            args: vec![
                "--runtime".into(),
                shim.display().to_string(),
                "--runtime-config-path".into(),
                hull_toml.display().to_string(),
            ],
        },
        Runtime {
            name: "runc",
            args: vec!["--runtime".into(), "io.containerd.runc.v2".into()],
        },
    ];
    for rt in &runtimes {
        // Output on both streams and the exit code.
        let id = format!("{}-out", rt.name);
        let out = c
            .ctr_cmd(&run_args(
                rt,
                &id,
                &["sh", "-c", "echo out; echo err >&2; exit 3"],
            ))
            .output()
            .expect("ctr run");
        let (so, se) = (
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
        );
        assert_eq!(so, "out\n", "{}: stdout, stderr {se}", rt.name);
        assert_eq!(se, "err\n", "{}: stderr", rt.name);
        assert_eq!(out.status.code(), Some(3), "{}: exit code", rt.name);

        // Death by signal: 128 + n.
        let id = format!("{}-sig", rt.name);
        let run = c
            .ctr_cmd(&run_args(rt, &id, &["sleep", "1000"]))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("ctr run");
        wait_running(&c, &id);
        let k = c.ctr(&["task", "kill", "-s", "SIGKILL", &id]);
        assert!(k.status.success(), "{}: kill {k:?}", rt.name);
        let out = run.wait_with_output().expect("wait ctr");
        assert_eq!(out.status.code(), Some(137), "{}: {out:?}", rt.name);
        let ls = c.ctr(&["containers", "ls", "-q"]);
        assert_eq!(String::from_utf8_lossy(&ls.stdout), "", "{}", rt.name);
    }

    // Nothing of hull's is left: no shim, agent, socket, pod dir, mount.
    let left = procs_with(shim.to_str().expect("utf8"));
    assert!(left.is_empty(), "shim processes left: {left:?}");
    let left = procs_with("/run/hull/pods/hull-");
    assert!(left.is_empty(), "agent processes left: {left:?}");
    for id in ["hull-out", "hull-sig"] {
        let pod = Path::new("/run/hull/pods").join(id);
        assert!(!pod.exists(), "{} left", pod.display());
    }
    let new: Vec<_> = sockets().difference(&sockets_before).cloned().collect();
    assert!(new.is_empty(), "shim sockets left: {new:?}");
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    let ours: Vec<_> = mounts
        .lines()
        .filter(|l| l.contains(&format!("{}/state", dir.display())))
        .collect();
    assert!(ours.is_empty(), "mounts left: {ours:?}");

    drop(c);
    std::fs::remove_dir_all(&dir).expect("remove test dir");
}
