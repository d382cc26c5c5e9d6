//! The shim against a real containerd 1.6 (Debian's `/usr/bin/containerd`) on this host, with
//! the test-only host-agent backend (hull-agent on the host instead of a VM), side by side with
//! runc: output, exit codes, death by signal, exec with and without a terminal, stdin that
//! ends (CloseIO), pause and resume, metrics, `file://` and `binary://` log URIs, the task
//! events, a containerd crash and restart, a shim crash (`shim delete` cleans up), 20 pods in
//! sequence, and that nothing is left behind.
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

/// The shim cargo built for this test (with the host-agent backend: the package's
/// dev-dependency on itself turns it on) and the agent; copies the shim away so a concurrent
/// build cannot swap the binary under the test.
fn build(dir: &Path) -> (PathBuf, PathBuf) {
    let agent = hull_tests::build_bin("hull-agent").unwrap_or_else(|e| panic!("{e}"));
    let shim = dir.join("containerd-shim-hull-v2");
    std::fs::copy(env!("CARGO_BIN_EXE_containerd-shim-hull-v2"), &shim).expect("copy shim");
    (shim, agent)
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

    /// Kills containerd with SIGKILL (a crash) and starts it again on the same state: its
    /// shims keep running and must be found again.
    fn restart(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.child = Self::daemon(&self.dir);
        self.wait_up();
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
        let c = Containerd {
            dir: dir.to_path_buf(),
            child: Self::daemon(dir),
        };
        c.wait_up();
        c
    }

    fn daemon(dir: &Path) -> Child {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("containerd.log"))
            .expect("log");
        Command::new("/usr/bin/containerd")
            .arg("--config")
            .arg(dir.join("config.toml"))
            .stdout(log.try_clone().expect("dup"))
            .stderr(log)
            .spawn()
            .expect("spawn containerd")
    }

    fn wait_up(&self) {
        let start = Instant::now();
        while !self.ctr(&["version"]).status.success() {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "containerd did not come up"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
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

/// The sandbox ids of this test's hull pods: what it cleans and checks is only its own, as
/// the host may run other hull pods (a benchmark, a node).
fn hull_pod_ids() -> Vec<String> {
    [
        "hull-out",
        "hull-sig",
        "hull-task",
        "hull-stdin",
        "hull-stdin-exec",
        "hull-file",
        "hull-bin",
        "hull-restart",
        "hull-crash",
    ]
    .into_iter()
    .map(str::to_owned)
    .chain((0..20).map(|n| format!("hull-seq{n}")))
    .collect()
}

impl Drop for Containerd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // After a failed assertion, shims (and their host agents) may still run: containerd
        // would reconnect to them on restart, but this one is gone for good.
        let ids = hull_pod_ids();
        let agents = ids
            .iter()
            .map(|id| format!("hull-agent --listen unix:/run/hull/pods/{id}/"));
        for needle in std::iter::once(self.dir.display().to_string()).chain(agents) {
            for p in procs_with(&needle) {
                if let Some(pid) = p.split(':').next().and_then(|p| p.parse::<i32>().ok()) {
                    sigkill(pid);
                }
            }
        }
        // ... and the host agents' cgroups (container cgroups first, then the parent).
        std::thread::sleep(Duration::from_millis(200));
        for id in &ids {
            let parent = Path::new("/sys/fs/cgroup/unified").join(format!("hull-host-{id}"));
            for child in std::fs::read_dir(&parent).into_iter().flatten().flatten() {
                let procs = std::fs::read_to_string(child.path().join("cgroup.procs"));
                for pid in procs.unwrap_or_default().lines() {
                    if let Ok(pid) = pid.parse() {
                        sigkill(pid);
                    }
                }
                std::thread::sleep(Duration::from_millis(100));
                let _ = std::fs::remove_dir(child.path());
            }
            let _ = std::fs::remove_dir(&parent);
        }
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

/// `ctr events` for the whole test: (topic, container id) of every task event.
struct EventLog {
    child: Child,
}

impl EventLog {
    fn start(c: &Containerd) -> Self {
        let child = c
            .ctr_cmd(&["events"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("ctr events");
        EventLog { child }
    }

    fn stop(mut self) -> Vec<(String, String)> {
        // The last events may still be on their way to the subscriber.
        std::thread::sleep(Duration::from_millis(500));
        let _ = self.child.kill();
        let out = self.child.wait_with_output().expect("ctr events output");
        // Lines: `<time> <namespace> <topic> <json>`.
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| {
                let topic = l
                    .split_whitespace()
                    .find(|w| w.starts_with("/tasks/"))?
                    .to_owned();
                let json = l.split_once('{').map(|(_, j)| format!("{{{j}"))?;
                let v: serde_json::Value = serde_json::from_str(&json).ok()?;
                Some((topic, v.get("container_id")?.as_str()?.to_owned()))
            })
            .collect()
    }
}

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// Status of `id` in `ctr task ls`.
fn task_status(c: &Containerd, id: &str) -> String {
    let out = c.ctr(&["task", "ls"]);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find(|l| l.starts_with(&format!("{id} ")))
        .and_then(|l| l.split_whitespace().nth(2))
        .unwrap_or("")
        .to_owned()
}

/// Exec with and without a terminal, pause and resume, metrics: the same as runc.
fn exec_pause_and_metrics(c: &Containerd, rt: &Runtime) {
    let id = format!("{}-task", rt.name);
    run_detached(c, rt, &id);

    let out = c.ctr(&[
        "task",
        "exec",
        "--exec-id",
        "e1",
        &id,
        "sh",
        "-c",
        "echo exec-out; echo exec-err >&2; exit 5",
    ]);
    assert_eq!(
        text(&out),
        ("exec-out\n".into(), "exec-err\n".into()),
        "{}: exec output",
        rt.name
    );
    assert_eq!(out.status.code(), Some(5), "{}: exec exit code", rt.name);

    // `ctr task exec -t` needs a terminal of its own: script(1) gives it one. The output
    // comes back through two terminals, each adding a CR before the NL, and script echoes
    // the end of its /dev/null input (`^@`) at some point: both are dropped.
    // The sleep lets ctr's resize after start find the process alive (runc's "cannot resize
    // a stopped container" otherwise).
    let ctr = format!(
        "ctr -a {} -n {NS} task exec -t --exec-id e2 {id} sh -c 'test -t 0 && test -t 1 && test -e \"$(tty)\" && echo tty; sleep 1; exit 4'",
        c.sock().display()
    );
    let out = Command::new("script")
        .args(["-qec", &ctr, "/dev/null"])
        .stdin(Stdio::null())
        .output()
        .expect("script");
    let (so, se) = text(&out);
    assert_eq!(
        so.replace("^@", "").replace('\r', ""),
        "tty\n",
        "{}: exec -t stdout, stderr {se}",
        rt.name
    );
    assert_eq!(out.status.code(), Some(4), "{}: exec -t exit code", rt.name);

    let ok = |args: &[&str]| {
        let out = c.ctr(args);
        assert!(out.status.success(), "{}: {args:?}: {out:?}", rt.name);
    };
    ok(&["task", "pause", &id]);
    assert_eq!(task_status(c, &id), "PAUSED", "{}", rt.name);
    ok(&["task", "resume", &id]);
    assert_eq!(task_status(c, &id), "RUNNING", "{}", rt.name);

    // This host is cgroup v1 (runc reports v1 metrics); hull's agent always reports v2.
    let out = c.ctr(&["task", "metrics", &id]);
    assert!(out.status.success(), "{}: metrics {out:?}", rt.name);
    if rt.name == "hull" {
        let (so, _) = text(&out);
        let usage = so
            .lines()
            .find_map(|l| l.strip_prefix("cpu.usage_usec"))
            .and_then(|v| v.trim().parse::<u64>().ok());
        assert!(usage.is_some_and(|u| u > 0), "hull metrics: {so}");
    }

    kill_and_remove(c, rt, &id);
}

/// Runs `cmd` with a stdin pipe, writes `input` once `started` says the process runs, closes
/// the pipe, and fails if `cmd` has not exited within `bound` of that. (ctr arms its CloseIO
/// only once the task or exec exists: a stdin that ends earlier is never closed, with runc
/// too.)
fn with_stdin(mut cmd: Command, started: impl Fn() -> bool, input: &[u8], what: &str) -> Output {
    let bound = Duration::from_secs(20);
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{what}: spawn: {e}"));
    let start = Instant::now();
    while !started() {
        if start.elapsed() > bound || child.try_wait().expect("try_wait").is_some() {
            let _ = child.kill();
            let out = child.wait_with_output().expect("output");
            panic!("{what}: never started: {out:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut stdin = child.stdin.take().expect("stdin");
    std::io::Write::write_all(&mut stdin, input).unwrap_or_else(|e| panic!("{what}: {e}"));
    drop(stdin);
    let start = Instant::now();
    while child.try_wait().expect("try_wait").is_none() {
        if start.elapsed() > bound {
            let _ = child.kill();
            let out = child.wait_with_output().expect("output");
            panic!("{what}: still running {bound:?} after its stdin ended: {out:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().expect("output")
}

/// stdin from a pipe that ends, for `ctr run` and `ctr task exec` (containerd 1.6's ctr always
/// wires its stdin to the process, and sends CloseIO when it ends): the process reads it, then
/// EOF, and ctr returns with its status.
fn stdin_reaches_eof(c: &Containerd, rt: &Runtime) {
    let id = format!("{}-stdin", rt.name);
    let mut a = vec!["run", "--rm"];
    a.extend(rt.args.iter().map(String::as_str));
    a.extend([IMAGE, &id, "cat"]);
    let running = || task_status(c, &id) == "RUNNING";
    let what = format!("{}: run", rt.name);
    let out = with_stdin(c.ctr_cmd(&a), running, b"hello\n", &what);
    assert_eq!(text(&out).0, "hello\n", "{what}: {out:?}");
    assert_eq!(out.status.code(), Some(0), "{what}: {out:?}");

    let id = format!("{}-stdin-exec", rt.name);
    run_detached(c, rt, &id);
    let a = ["task", "exec", "--exec-id", "in1", &id, "cat"];
    // `ctr task ps`: a header, then sleep and, once started, cat.
    let started = || {
        c.ctr(&["task", "ps", &id])
            .stdout
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .count()
            >= 3
    };
    let what = format!("{}: exec", rt.name);
    let out = with_stdin(c.ctr_cmd(&a), started, b"hello\n", &what);
    assert_eq!(text(&out).0, "hello\n", "{what}: {out:?}");
    assert_eq!(out.status.code(), Some(0), "{what}: {out:?}");
    kill_and_remove(c, rt, &id);
}

/// `--log-uri file://` and `binary://`: the same bytes as runc.
fn log_uris(c: &Containerd, rt: &Runtime, dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let logger = dir.join("logger.sh");
    std::fs::write(
        &logger,
        "#!/bin/sh\nexec 5>&-\ncat <&3 > \"$1/$CONTAINER_ID.out\" &\ncat <&4 > \"$1/$CONTAINER_ID.err\"\nwait\n",
    )
    .expect("logger");
    std::fs::set_permissions(&logger, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let file = dir.join(format!("{}.log", rt.name));
    let uris = [
        (
            format!("{}-file", rt.name),
            format!("file://{}", file.display()),
        ),
        (
            format!("{}-bin", rt.name),
            format!("binary://{}?{}", logger.display(), dir.display()),
        ),
    ];
    for (id, uri) in &uris {
        let mut a = vec!["run", "--rm", "--log-uri", uri];
        a.extend(rt.args.iter().map(String::as_str));
        a.extend([IMAGE, id, "sh", "-c", "echo out; echo err >&2; exit 2"]);
        let out = c.ctr(&a);
        assert_eq!(out.status.code(), Some(2), "{}: {uri}: {out:?}", rt.name);
    }
    let read =
        |p: PathBuf| std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    // Both streams append to one file, each through its own copy: their order is timing.
    // runc's shim (containerd 1.6) sometimes loses one of the two equal-length lines here
    // (seen once in a few runs): it is the reference for the line content only.
    let mut lines: Vec<String> = read(file).lines().map(str::to_owned).collect();
    lines.sort();
    if rt.name == "hull" {
        assert_eq!(lines, ["err", "out"], "{}: file://", rt.name);
    } else {
        assert!(
            !lines.is_empty() && lines.iter().all(|l| l == "err" || l == "out"),
            "{}: file:// {lines:?}",
            rt.name
        );
    }
    let bin = &uris[1].0;
    assert_eq!(
        read(dir.join(format!("{bin}.out"))),
        "out\n",
        "{}: binary:// stdout",
        rt.name
    );
    assert_eq!(
        read(dir.join(format!("{bin}.err"))),
        "err\n",
        "{}: binary:// stderr",
        rt.name
    );
}

/// `ctr run --rm … sleep 1000` in the background, once its task runs.
fn run_sleep(c: &Containerd, rt: &Runtime, id: &str) -> Child {
    let run = c
        .ctr_cmd(&run_args(rt, id, &["sleep", "1000"]))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("ctr run");
    wait_running(c, id);
    run
}

fn sigkill(pid: i32) {
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    );
}

fn run_detached(c: &Containerd, rt: &Runtime, id: &str) {
    let mut a = vec!["run", "-d"];
    a.extend(rt.args.iter().map(String::as_str));
    a.extend([IMAGE, id, "sleep", "1000"]);
    let out = c.ctr(&a);
    assert!(out.status.success(), "{}: run -d {out:?}", rt.name);
    wait_running(c, id);
}

fn kill_and_remove(c: &Containerd, rt: &Runtime, id: &str) {
    let ok = |args: &[&str]| {
        let out = c.ctr(args);
        assert!(out.status.success(), "{}: {args:?}: {out:?}", rt.name);
    };
    ok(&["task", "kill", "-s", "SIGKILL", id]);
    let start = Instant::now();
    while task_status(c, id) != "STOPPED" {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "{id} never stopped"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    ok(&["task", "rm", id]);
    ok(&["containers", "rm", id]);
}

/// containerd crashes and comes back: the task is still there, answers exec, and its exit
/// still arrives (the shim reconnects its event publisher).
fn survives_containerd_restart(c: &mut Containerd, rt: &Runtime) {
    let id = format!("{}-restart", rt.name);
    run_detached(c, rt, &id);
    c.restart();
    assert_eq!(task_status(c, &id), "RUNNING", "{}: after restart", rt.name);
    let out = c.ctr(&["task", "exec", "--exec-id", "r1", &id, "echo", "again"]);
    assert_eq!(
        text(&out).0,
        "again\n",
        "{}: exec after restart {out:?}",
        rt.name
    );
    kill_and_remove(c, rt, &id);
}

/// kill -9 of the shim under a running `ctr run`: containerd runs `shim delete`, which must
/// find the pod from pod.json and leave nothing (checked at the end of the test). Returns
/// ctr's exit code, to compare with runc's, and the name of the shim's socket.
fn shim_crash_is_cleaned_by_shim_delete(
    c: &Containerd,
    rt: &Runtime,
) -> (Option<i32>, Option<String>) {
    let id = format!("{}-crash", rt.name);
    let run = run_sleep(c, rt, &id);
    let needle = format!("-namespace {NS} -id {id} ");
    let shims: Vec<_> = procs_with(&needle)
        .into_iter()
        .filter(|p| p.contains("containerd-shim"))
        .collect();
    assert_eq!(shims.len(), 1, "one shim for {id}: {shims:?}");
    let pid: i32 = shims[0]
        .split(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("pid");
    // containerd 1.6 names a shim socket sha256(<grpc address>/<namespace>/<id>).
    let key = format!("{}/{NS}/{id}", c.sock().display());
    let mut sha = Command::new("sha256sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("sha256sum");
    std::io::Write::write_all(&mut sha.stdin.take().expect("stdin"), key.as_bytes())
        .expect("write key");
    let sha = sha.wait_with_output().expect("sha256sum output");
    let socket = String::from_utf8_lossy(&sha.stdout)
        .split_whitespace()
        .next()
        .map(str::to_owned);
    sigkill(pid);
    let out = run.wait_with_output().expect("wait ctr");
    let start = Instant::now();
    while c
        .ctr(&["task", "ls", "-q"])
        .stdout
        .windows(id.len())
        .any(|w| w == id.as_bytes())
    {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "{id}: task never went away"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // `ctr run --rm` removed the container itself.
    (out.status.code(), socket)
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
    let mut c = Containerd::start(&dir);
    let out = c.ctr(&["images", "import", image.to_str().expect("utf8")]);
    assert!(out.status.success(), "import: {out:?}");
    let events = EventLog::start(&c);

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
        let run = run_sleep(&c, rt, &id);
        let k = c.ctr(&["task", "kill", "-s", "SIGKILL", &id]);
        assert!(k.status.success(), "{}: kill {k:?}", rt.name);
        let out = run.wait_with_output().expect("wait ctr");
        assert_eq!(out.status.code(), Some(137), "{}: {out:?}", rt.name);
        let ls = c.ctr(&["containers", "ls", "-q"]);
        assert_eq!(String::from_utf8_lossy(&ls.stdout), "", "{}", rt.name);

        exec_pause_and_metrics(&c, rt);
        stdin_reaches_eof(&c, rt);
        log_uris(&c, rt, &dir);
    }
    let events = events.stop();
    for rt in &runtimes {
        let id = format!("{}-task", rt.name);
        let topics: Vec<&str> = events
            .iter()
            .filter(|(_, cid)| *cid == id)
            .map(|(t, _)| t.as_str())
            .collect();
        for want in [
            "/tasks/create",
            "/tasks/start",
            "/tasks/exec-added",
            "/tasks/exec-started",
            "/tasks/paused",
            "/tasks/resumed",
            "/tasks/exit",
            "/tasks/delete",
        ] {
            assert!(
                topics.contains(&want),
                "{}: no {want} in {topics:?}",
                rt.name
            );
        }
    }

    for rt in &runtimes {
        survives_containerd_restart(&mut c, rt);
    }
    // 20 pods in sequence (the leftover checks below cover them).
    for n in 0..20 {
        let id = format!("hull-seq{n}");
        let out = c.ctr(&run_args(&runtimes[0], &id, &["true"]));
        assert!(out.status.success(), "{id}: {out:?}");
    }
    let crash: Vec<_> = runtimes
        .iter()
        .map(|rt| shim_crash_is_cleaned_by_shim_delete(&c, rt))
        .collect();
    assert_eq!(
        crash[0].0, crash[1].0,
        "a shim crash: hull vs runc (ctr's exit code)"
    );
    // containerd 1.6's runc shim leaves its socket behind after a crash; hull's must not.
    let runc_crash_socket = crash[1].1.clone();

    // Nothing of hull's is left: no shim, agent, socket, pod dir, mount. A shim answers
    // Shutdown at once and tears its pod down afterwards: give that time to finish.
    let start = Instant::now();
    let mut left = procs_with(shim.to_str().expect("utf8"));
    while !left.is_empty() && start.elapsed() < Duration::from_secs(40) {
        std::thread::sleep(Duration::from_millis(100));
        left = procs_with(shim.to_str().expect("utf8"));
    }
    assert!(left.is_empty(), "shim processes left: {left:?}");
    let ids = hull_pod_ids();
    for id in &ids {
        let pod = Path::new("/run/hull/pods").join(id);
        let left = procs_with(&format!("{}/", pod.display()));
        assert!(left.is_empty(), "agent processes of {id} left: {left:?}");
        assert!(!pod.exists(), "{} left", pod.display());
        let cgroup = Path::new("/sys/fs/cgroup/unified").join(format!("hull-host-{id}"));
        assert!(
            !cgroup.exists(),
            "host agent cgroup {} left",
            cgroup.display()
        );
    }
    let new: Vec<_> = sockets()
        .difference(&sockets_before)
        .filter(|s| Some(s.as_str()) != runc_crash_socket.as_deref())
        .cloned()
        .collect();
    assert!(new.is_empty(), "shim sockets left: {new:?}");
    let mounts_under = |d: &Path| -> Vec<String> {
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
        mounts
            .lines()
            .filter(|l| l.contains(&format!("{}/state", d.display())))
            .map(str::to_owned)
            .collect()
    };
    // containerd unmounts a crashed shim's rootfs on its own time after `shim delete` (runc's
    // took ~0.2 s once hull's shims stopped taking 5 s to exit and hid that wait).
    let start = Instant::now();
    let mut ours = mounts_under(&dir);
    while !ours.is_empty() && start.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(200));
        ours = mounts_under(&dir);
    }
    assert!(ours.is_empty(), "mounts left: {ours:?}");

    drop(c);
    std::fs::remove_dir_all(&dir).expect("remove test dir");
}
