//! The container engine through the real ttrpc service, in host mode: real namespaces,
//! cgroups (under a dedicated parent removed afterwards) and a busybox rootfs.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use hull_proto::containers::*;
use hull_proto::processes::*;
use serde_json::json;

#[tokio::test(flavor = "multi_thread")]
async fn echo_exit_codes_env_cwd_hostname() {
    let a = agent("echo").await;
    let root = busybox_rootfs(a.dir.path());
    let mut s = spec(
        &root,
        &[
            "sh",
            "-c",
            "echo hello $FOO $(pwd) $(hostname) $$; echo oops >&2; exit 3",
        ],
    );
    s["process"]["env"] = json!(["PATH=/bin", "FOO=bar"]);
    s["process"]["cwd"] = json!("/tmp");
    a.run("c1", &s).await;
    let out = a.read_all("c1", "", false).await;
    let err = a.read_all("c1", "", true).await;
    assert_eq!(String::from_utf8_lossy(&out), "hello bar /tmp box 1\n");
    assert_eq!(String::from_utf8_lossy(&err), "oops\n");
    let st = a.wait("c1", "").await;
    assert_eq!(st.code(), 3);
    assert_eq!(st.status, 3);
    a.remove("c1").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn signals_give_128_plus_n() {
    let a = agent("sig").await;
    let root = busybox_rootfs(a.dir.path());
    a.run("c", &spec(&root, &["sleep", "1000"])).await;
    // An exec'd process is not its namespace's init, so SIGTERM kills it.
    a.exec("c", "e1", &["sleep", "1000"], false, false)
        .await
        .expect("exec");
    a.signal("c", "e1", 15).await;
    let st = a.wait("c", "e1").await;
    assert_eq!((st.signal(), st.status), (15, 143));
    // A SIGKILL from outside the agent is not an OOM kill (cgroup_v2.rs checks it again with
    // a memory controller, which this host's cgroup v2 may lack).
    let pid = a
        .exec("c", "e2", &["sleep", "1000"], false, false)
        .await
        .expect("exec");
    let status = Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    let st = a.wait("c", "e2").await;
    assert_eq!((st.signal(), st.status, st.oom_killed), (9, 137, false));
    a.signal("c", "", 9).await;
    let st = a.wait("c", "").await;
    assert_eq!((st.signal(), st.status, st.oom_killed), (9, 137, false));
    // Signalling an exited process is NOT_FOUND.
    let e = a
        .processes
        .signal_process(
            ctx(),
            &SignalProcessRequest {
                container_id: "c".into(),
                signal: 9,
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    assert_eq!(code(&e), ttrpc::Code::NOT_FOUND);
    a.remove("c").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn exec_with_and_without_tty_and_stdin_eof() {
    let a = agent("exec").await;
    let root = busybox_rootfs(a.dir.path());
    a.create("c", &spec(&root, &["cat"]), true)
        .await
        .expect("create");
    a.start("c").await;
    // Non-tty exec.
    a.exec("c", "e", &["sh", "-c", "echo $((40+2))"], false, false)
        .await
        .unwrap();
    assert_eq!(a.read_all("c", "e", false).await, b"42\n");
    assert_eq!(a.wait("c", "e").await.code(), 0);
    // Tty exec: its terminal is one of the container's, and resizes reach it.
    let script = format!("{TTY_PROBE}; read x; stty size; exit 7");
    a.exec("c", "t", &["sh", "-c", &script], true, true)
        .await
        .unwrap();
    a.resize("c", "t", 40, 120).await;
    a.write_stdin("c", "t", b"go\n").await;
    let out = String::from_utf8_lossy(&a.read_all("c", "t", false).await).to_string();
    check_tty_output(&out);
    assert_eq!(a.wait("c", "t").await.code(), 7);
    // CloseStdin on a terminal is an end of input for a reader at the start of a line.
    a.exec("c", "cat", &["cat"], true, true).await.unwrap();
    a.write_stdin("c", "cat", b"abc\n").await;
    a.processes
        .close_stdin(
            ctx(),
            &CloseStdinRequest {
                container_id: "c".into(),
                exec_id: "cat".into(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(a.read_all("c", "cat", false).await, b"abc\r\nabc\r\n");
    assert_eq!(a.wait("c", "cat").await.code(), 0);
    // Duplicate exec id.
    let e = a.exec("c", "t", &["true"], false, false).await.unwrap_err();
    assert_eq!(code(&e), ttrpc::Code::ALREADY_EXISTS);
    // Stdin of init: write then close; cat echoes and exits 0.
    let w = a
        .processes
        .write_stdin(
            ctx(),
            &WriteStdinRequest {
                container_id: "c".into(),
                data: b"abc".to_vec(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(w.bytes_written, 3);
    a.processes
        .close_stdin(
            ctx(),
            &CloseStdinRequest {
                container_id: "c".into(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(a.read_all("c", "", false).await, b"abc");
    assert_eq!(a.wait("c", "").await.code(), 0);
    a.remove("c").await;
}

/// Shell commands that show whether a process's terminal belongs to the container: `tty` names
/// it (ttyname fails for a terminal of another devpts instance) and the path exists there.
const TTY_PROBE: &str = r#"tty; echo rc=$?; test -e "$(tty)" && echo visible"#;

/// Output of [`TTY_PROBE`] then `stty size` after a resize to 40x120, as a terminal gives it.
fn check_tty_output(out: &str) {
    // The echo of what the test types can land before or after `tty`'s line, so look for a
    // `/dev/pts/N` line anywhere before `rc=`.
    let lines: Vec<&str> = out.split("\r\n").collect();
    let rc = lines.iter().position(|l| l.starts_with("rc=")).unwrap_or(0);
    let named = lines[..rc].iter().any(|l| {
        l.strip_prefix("/dev/pts/")
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
    });
    assert!(named, "tty output {out:?}");
    for line in ["rc=0\r\n", "visible\r\n", "40 120\r\n"] {
        assert!(out.contains(line), "{line:?} missing in tty output {out:?}");
    }
    assert!(
        !out.replace("\r\n", "").contains('\n'),
        "a bare LF in tty output {out:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn init_on_a_terminal_of_the_container() {
    let a = agent("ttyinit").await;
    let root = busybox_rootfs(a.dir.path());
    let script = format!(
        "{TTY_PROBE}; stat -c owner=%u \"$(tty)\"; \
         [ \"$(stat -L -c %t:%T /dev/console)\" = \"$(stat -c %t:%T \"$(tty)\")\" ] && echo console; \
         read x; stty size; exit 5"
    );
    let mut s = spec(&root, &["sh", "-c", &script]);
    s["process"]["user"] = json!({"uid": 1000, "gid": 1000});
    // /dev/console is bound before / turns read-only.
    s["root"]["readonly"] = json!(true);
    a.create_with("c", &s, true, true).await.expect("create");
    a.start("c").await;
    a.resize("c", "", 40, 120).await;
    a.write_stdin("c", "", b"go\n").await;
    let out = String::from_utf8_lossy(&a.read_all("c", "", false).await).to_string();
    check_tty_output(&out);
    // The process's user owns its terminal, and /dev/console is that terminal.
    assert!(out.contains("owner=1000\r\n"), "tty output {out:?}");
    assert!(out.contains("console\r\n"), "tty output {out:?}");
    assert_eq!(a.wait("c", "").await.code(), 5);
    // A terminal process has no separate stderr.
    assert!(a.read_all("c", "", true).await.is_empty());
    a.remove("c").await;
    // Without a devpts of its own the container cannot have a terminal it can name: a clear
    // error rather than the guest's terminal.
    let mut s = spec(&root, &["true"]);
    s["mounts"] = json!([
        {"destination": "/proc", "type": "proc", "source": "proc"},
        {"destination": "/dev", "type": "tmpfs", "source": "tmpfs"}
    ]);
    let e = a.create_with("nopts", &s, false, true).await.unwrap_err();
    assert_eq!(code(&e), ttrpc::Code::FAILED_PRECONDITION);
    assert!(format!("{e:?}").contains("devpts"), "{e:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn one_gib_of_stdout_without_loss() {
    use std::io::Write;
    let a = agent("gib").await;
    let root = busybox_rootfs(a.dir.path());
    // Random bytes, so a lost, duplicated or reordered chunk changes the checksum; the
    // container hashes what it wrote (through a fifo) and reports it on stderr.
    a.run(
        "c",
        &spec(
            &root,
            &[
                "sh",
                "-c",
                "mkfifo /tmp/p; sha256sum < /tmp/p >&2 & \
                 head -c 1073741824 /dev/urandom | tee /tmp/p; wait",
            ],
        ),
    )
    .await;
    let mut hasher = Command::new("sha256sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn sha256sum");
    let mut sink = hasher.stdin.take().expect("sha256sum stdin");
    let start = Instant::now();
    let mut total = 0u64;
    loop {
        let r = a
            .processes
            .read_stdout(
                ctx(),
                &ReadStreamRequest {
                    container_id: "c".into(),
                    max_len: 1 << 20,
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        sink.write_all(&r.data).expect("feed sha256sum");
        total += r.data.len() as u64;
        if r.eof {
            break;
        }
    }
    let secs = start.elapsed().as_secs_f64();
    drop(sink);
    let ours = hasher.wait_with_output().expect("sha256sum");
    let ours = String::from_utf8_lossy(&ours.stdout).to_string();
    let theirs = String::from_utf8_lossy(&a.read_all("c", "", true).await).to_string();
    eprintln!(
        "1 GiB through stdout (checksummed on both sides): {:.0} MB/s",
        total as f64 / secs / 1e6
    );
    assert_eq!(total, 1 << 30);
    let hash = |s: &str| s.split_whitespace().next().unwrap_or("").to_owned();
    assert_eq!(hash(&ours).len(), 64, "host sha256sum: {ours:?}");
    assert_eq!(hash(&ours), hash(&theirs), "container said {theirs:?}");
    assert_eq!(a.wait("c", "").await.code(), 0);
    a.remove("c").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn readonly_rootfs_user_seccomp_and_caps() {
    let a = agent("sec").await;
    let root = busybox_rootfs(a.dir.path());
    // Read-only rootfs: writing / fails, /tmp (tmpfs) works.
    let mut s = spec(
        &root,
        &[
            "sh",
            "-c",
            "touch /x 2>/dev/null && exit 1; touch /tmp/y && exit 5",
        ],
    );
    s["root"]["readonly"] = json!(true);
    a.run("ro", &s).await;
    assert_eq!(a.wait("ro", "").await.code(), 5);
    a.remove("ro").await;
    // Non-root user with no capabilities and no_new_privileges.
    let mut s = spec(
        &root,
        &[
            "sh",
            "-c",
            "echo $(id -u):$(id -g):$(grep CapEff /proc/self/status | cut -f2)",
        ],
    );
    s["process"]["user"] = json!({"uid": 1000, "gid": 1000, "additionalGids": [1001]});
    s["process"]["capabilities"] =
        json!({"bounding": [], "effective": [], "permitted": [], "inheritable": [], "ambient": []});
    s["process"]["noNewPrivileges"] = json!(true);
    a.run("user", &s).await;
    assert_eq!(
        String::from_utf8_lossy(&a.read_all("user", "", false).await),
        "1000:1000:0000000000000000\n"
    );
    a.remove("user").await;
    // Seccomp: mkdir denied with EPERM, the rest allowed.
    let mut s = spec(&root, &["sh", "-c", "mkdir /tmp/d; echo rc=$?"]);
    s["linux"]["seccomp"] = json!({"defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1}]});
    a.run("sc", &s).await;
    let out = String::from_utf8_lossy(&a.read_all("sc", "", false).await).to_string();
    let err = String::from_utf8_lossy(&a.read_all("sc", "", true).await).to_string();
    assert_eq!(out, "rc=1\n");
    assert!(err.contains("Operation not permitted"), "{err}");
    a.remove("sc").await;
}

/// CRI's read-only and masked paths (containerd's defaults).
const CRI_READONLY_PATHS: [&str; 5] = [
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];
const CRI_MASKED_PATHS: [&str; 9] = [
    "/proc/acpi",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
];

/// Runs container `id` to its end (exit 0), removes it and returns its stdout.
async fn stdout_of_run(a: &Agent, id: &str, s: &serde_json::Value) -> String {
    a.run(id, s).await;
    let out = String::from_utf8_lossy(&a.read_all(id, "", false).await).to_string();
    assert_eq!(a.wait(id, "").await.code(), 0, "{id}: stdout {out:?}");
    a.remove(id).await;
    out
}

fn host_sysctl(path: &str) -> String {
    std::fs::read_to_string(Path::new("/proc/sys").join(path)).expect("read host sysctl")
}

#[tokio::test(flavor = "multi_thread")]
async fn pod_sysctls_under_cri_read_only_proc_sys() {
    let a = agent("sysctl").await;
    let root = busybox_rootfs(a.dir.path());
    let before = (
        host_sysctl("kernel/shm_rmid_forced"),
        host_sysctl("fs/mqueue/msg_max"),
    );
    // The sysctls are written in the container's new ipc namespace before /proc/sys turns
    // read-only (runc's order): the container sees them, and cannot write /proc/sys itself.
    let mut s = spec(
        &root,
        &[
            "sh",
            "-c",
            "cat /proc/sys/kernel/shm_rmid_forced /proc/sys/fs/mqueue/msg_max; \
             echo 0 >/proc/sys/kernel/shm_rmid_forced 2>/dev/null || echo read-only",
        ],
    );
    s["linux"]["sysctl"] = json!({"kernel.shm_rmid_forced": "1", "fs.mqueue.msg_max": "100"});
    s["linux"]["readonlyPaths"] = json!(CRI_READONLY_PATHS);
    s["linux"]["maskedPaths"] = json!(CRI_MASKED_PATHS);
    assert_eq!(stdout_of_run(&a, "ipc", &s).await, "1\n100\nread-only\n");
    assert_eq!(
        (
            host_sysctl("kernel/shm_rmid_forced"),
            host_sysctl("fs/mqueue/msg_max")
        ),
        before,
        "the host's values changed"
    );
    // net.* sysctls: in host mode the agent's network namespace is the host's, so only a
    // container with its own gets them.
    let mut s = spec(&root, &["cat", "/proc/sys/net/ipv4/ping_group_range"]);
    s["linux"]["sysctl"] = json!({"net.ipv4.ping_group_range": "0 2147483647"});
    s["linux"]["readonlyPaths"] = json!(CRI_READONLY_PATHS);
    let e = a.create("hostnet", &s, false).await.unwrap_err();
    assert_eq!(code(&e), ttrpc::Code::INVALID_ARGUMENT, "{e:?}");
    s["linux"]["namespaces"]
        .as_array_mut()
        .unwrap()
        .push(json!({"type": "network"}));
    assert_eq!(stdout_of_run(&a, "net", &s).await, "0\t2147483647\n");
    // A sysctl of no namespace (or IPC ones without an ipc namespace) is refused.
    for (sysctl, drop_ipc) in [
        (json!({"kernel.panic": "1"}), false),
        (json!({"vm.swappiness": "1"}), false),
        (json!({"kernel.shm_rmid_forced": "1"}), true),
    ] {
        let mut s = spec(&root, &["true"]);
        s["linux"]["sysctl"] = sysctl.clone();
        if drop_ipc {
            s["linux"]["namespaces"] = json!([{"type": "pid"}, {"type": "uts"}, {"type": "mount"}]);
        }
        let e = a.create("global", &s, false).await.unwrap_err();
        assert_eq!(code(&e), ttrpc::Code::INVALID_ARGUMENT, "{sysctl}: {e:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn pause_resume_stats_pids() {
    let a = agent("pause").await;
    let root = busybox_rootfs(a.dir.path());
    let init = a
        .create(
            "c",
            &spec(
                &root,
                &[
                    "sh",
                    "-c",
                    "i=0; while true; do i=$((i+1)); echo $i > /tmp/n; usleep 10000; done",
                ],
            ),
            false,
        )
        .await
        .expect("create");
    a.start("c").await;
    let sleeper = a
        .exec("c", "sl", &["sleep", "1000"], false, false)
        .await
        .expect("exec");
    let listed = a
        .containers
        .list_pids(
            ctx(),
            &ListPidsRequest {
                container_id: "c".into(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    // Every pid once, in the same order, labelled: the exec with its id, the init and the
    // shell's children (usleep) with none.
    let labelled: Vec<u32> = listed.processes.iter().map(|p| p.pid).collect();
    assert_eq!(labelled, listed.pids);
    let exec_id = |want: u32| {
        listed
            .processes
            .iter()
            .find(|p| p.pid == want)
            .map(|p| p.exec_id.clone())
    };
    assert_eq!(exec_id(init).as_deref(), Some(""), "{:?}", listed.processes);
    assert_eq!(
        exec_id(sleeper).as_deref(),
        Some("sl"),
        "{:?}",
        listed.processes
    );
    assert!(
        listed
            .processes
            .iter()
            .all(|p| p.pid == sleeper || p.exec_id.is_empty()),
        "{:?}",
        listed.processes
    );
    let counter = |p: u32| -> u64 {
        std::fs::read_to_string(format!("/proc/{p}/root/tmp/n"))
            .unwrap_or_default()
            .trim()
            .parse()
            .unwrap_or(0)
    };
    std::thread::sleep(Duration::from_millis(200));
    a.containers
        .pause_container(
            ctx(),
            &PauseContainerRequest {
                container_id: "c".into(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let n1 = counter(init);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(counter(init), n1, "frozen container made progress");
    a.containers
        .resume_container(
            ctx(),
            &ResumeContainerRequest {
                container_id: "c".into(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    // Polled: on a loaded host the shell may be caught between truncating the file and
    // writing it (a read of 0), or be slow to get a CPU back.
    let start = Instant::now();
    while counter(init) <= n1 {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "resumed container is stuck"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let stats = a
        .containers
        .stats_container(
            ctx(),
            &StatsContainerRequest {
                container_id: "c".into(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert!(stats.stats.cpu.usage_usec > 0);
    a.remove("c").await;
}

fn zombie_children(pid: u32) -> Vec<String> {
    let mut z = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        if let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) {
            let after = stat.rsplit_once(')').map(|x| x.1).unwrap_or("");
            let f: Vec<&str> = after.split_whitespace().collect();
            if f.len() > 2 && f[0] == "Z" && f[1] == pid.to_string() {
                z.push(stat);
            }
        }
    }
    z
}

#[tokio::test(flavor = "multi_thread")]
async fn hundred_cycles_leak_nothing() {
    let a = agent("cycles").await;
    let root = busybox_rootfs(a.dir.path());
    let agent_pid = a.child.id();
    let fds = || {
        std::fs::read_dir(format!("/proc/{agent_pid}/fd"))
            .unwrap()
            .count()
    };
    let mounts = || {
        std::fs::read_to_string(format!("/proc/{agent_pid}/mountinfo"))
            .unwrap()
            .lines()
            .count()
    };
    // One warm-up cycle so lazily created fds exist before counting.
    a.run("w", &spec(&root, &["true"])).await;
    a.wait("w", "").await;
    a.remove("w").await;
    let (fd0, m0) = (fds(), mounts());
    let start = Instant::now();
    for i in 0..100 {
        let id = format!("c{i}");
        a.run(&id, &spec(&root, &["sh", "-c", "sleep 0 & exit 0"]))
            .await;
        assert_eq!(a.wait(&id, "").await.code(), 0);
        a.remove(&id).await;
    }
    eprintln!(
        "100 create/start/wait/remove cycles: {:?} ({:?} each)",
        start.elapsed(),
        start.elapsed() / 100
    );
    std::thread::sleep(Duration::from_millis(300));
    assert!(fds() <= fd0 + 2, "fds {fd0} -> {}", fds());
    assert_eq!(mounts(), m0);
    let left: Vec<_> = std::fs::read_dir(&a.cgroup_parent)
        .unwrap()
        .flatten()
        .filter(|e| e.path().is_dir())
        .collect();
    assert!(left.is_empty(), "cgroups left: {left:?}");
    assert!(
        zombie_children(agent_pid).is_empty(),
        "zombies: {:?}",
        zombie_children(agent_pid)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_input_gets_the_right_code() {
    let a = agent("bad").await;
    let root = busybox_rootfs(a.dir.path());
    let inv = ttrpc::Code::INVALID_ARGUMENT;
    let raw = |bytes: &[u8]| CreateContainerRequest {
        container_id: "x".into(),
        oci_spec_json: bytes.to_vec(),
        ..Default::default()
    };
    assert_eq!(
        code(
            &a.containers
                .create_container(ctx(), &raw(b"{nope"))
                .await
                .unwrap_err()
        ),
        inv
    );
    let mut s = spec(&root, &["true"]);
    s["linux"]["namespaces"] = json!([{"type": "bogus"}]);
    assert_eq!(code(&a.create("x", &s, false).await.unwrap_err()), inv);
    let mut s = spec(&root, &["true"]);
    s["mounts"][0]["destination"] = json!("/../../../etc");
    assert_eq!(code(&a.create("x", &s, false).await.unwrap_err()), inv);
    let mut s = spec(&root, &["true"]);
    s["root"]["path"] = json!("/nonexistent/rootfs");
    assert_eq!(code(&a.create("x", &s, false).await.unwrap_err()), inv);
    let mut s = spec(&root, &["true"]);
    s["process"]["rlimits"] = json!([{"type": "RLIMIT_NOFILE", "soft": 100, "hard": 10}]);
    assert_eq!(code(&a.create("x", &s, false).await.unwrap_err()), inv);
    let mut s = spec(&root, &["true"]);
    s["process"]["rlimits"] = json!([{"type": "RLIMIT_BOGUS", "soft": 1, "hard": 1}]);
    assert_eq!(code(&a.create("x", &s, false).await.unwrap_err()), inv);
    assert_eq!(
        code(
            &a.create("../x", &spec(&root, &["true"]), false)
                .await
                .unwrap_err()
        ),
        inv
    );
    assert_eq!(
        code(
            &a.create("", &spec(&root, &["true"]), false)
                .await
                .unwrap_err()
        ),
        inv
    );
    // A missing binary fails at start with FAILED_PRECONDITION, and the agent lives on.
    a.create("nobin", &spec(&root, &["/no/such/binary"]), false)
        .await
        .unwrap();
    let e = a
        .containers
        .start_container(
            ctx(),
            &StartContainerRequest {
                container_id: "nobin".into(),
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    assert_eq!(code(&e), ttrpc::Code::FAILED_PRECONDITION);
    a.remove("nobin").await;
    // Duplicate ids, unknown ids, double start.
    a.run("dup", &spec(&root, &["sleep", "100"])).await;
    assert_eq!(
        code(
            &a.create("dup", &spec(&root, &["true"]), false)
                .await
                .unwrap_err()
        ),
        ttrpc::Code::ALREADY_EXISTS
    );
    let e = a
        .containers
        .start_container(
            ctx(),
            &StartContainerRequest {
                container_id: "dup".into(),
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    assert_eq!(code(&e), ttrpc::Code::FAILED_PRECONDITION);
    let e = a
        .containers
        .start_container(
            ctx(),
            &StartContainerRequest {
                container_id: "ghost".into(),
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    assert_eq!(code(&e), ttrpc::Code::NOT_FOUND);
    let e = a
        .exec("ghost", "e", &["true"], false, false)
        .await
        .unwrap_err();
    assert_eq!(code(&e), ttrpc::Code::NOT_FOUND);
    let e = a
        .exec("dup", "", &["true"], false, false)
        .await
        .unwrap_err();
    assert_eq!(code(&e), inv);
    a.remove("dup").await;
    // Copy file outside the root.
    let files = hull_proto::files_ttrpc::FilesClient::new(a.client.clone());
    let req = hull_proto::files::CopyFileRequest {
        path: "/etc/evil".into(),
        file_size: 1,
        data: b"x".to_vec(),
        ..Default::default()
    };
    assert_eq!(code(&files.copy_file(ctx(), &req).await.unwrap_err()), inv);
    let ok = hull_proto::files::CopyFileRequest {
        path: format!("{}/state/sub/f", a.dir.path().display()),
        file_size: 2,
        data: b"hi".to_vec(),
        file_mode: 0o644,
        dir_mode: 0o755,
        ..Default::default()
    };
    files.copy_file(ctx(), &ok).await.unwrap();
    assert_eq!(
        std::fs::read(a.dir.path().join("state/sub/f")).unwrap(),
        b"hi"
    );
    // Logs and guest details still answer.
    let guest = hull_proto::guest_ttrpc::GuestClient::new(a.client.clone());
    let logs = guest
        .get_logs(ctx(), &hull_proto::guest::GetLogsRequest::default())
        .await
        .unwrap();
    assert!(
        logs.lines
            .iter()
            .any(|l| l.message.contains("CreateContainer")),
        "logs hold the failures"
    );
    let d = guest
        .guest_details(ctx(), &hull_proto::guest::GuestDetailsRequest::default())
        .await
        .unwrap();
    assert_eq!(d.agent_version, env!("CARGO_PKG_VERSION"));
}
