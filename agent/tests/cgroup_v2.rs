//! cgroup v2 behaviour of the engine, for real: memory limit -> OOM kill (status 137,
//! `oom_killed` for init and exec processes but not for a plain SIGKILL, OOM event, counters),
//! pids limit, freeze/thaw, stats values, UpdateContainer, and the device cgroup (BPF program)
//! denying a device. Host mode (`hull-agent --listen unix:`).
//!
//! These need a pure cgroup v2 host with the memory, pids and cpu controllers. Where this
//! test runs without them (this project's hosts are cgroup v1 hybrid), it runs itself inside
//! the lab (`lab/run`, a pure cgroup v2 kernel) and passes only if it passed there: it never
//! skips. Hence a lab test (`#[ignore = "lab"]`, run by `scripts/run-tests`). Alone:
//! `cargo test -p hull-agent --test cgroup_v2 -- --include-ignored --nocapture`.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use hull_proto::containers::*;
use hull_proto::events::GetOomEventRequest;
use hull_proto::events_ttrpc::EventsClient;
use hull_proto::processes::*;
use serde_json::{json, Value};

const MIB: u64 = 1 << 20;
/// Set (through lab/run, which passes HULL_* on) when this binary runs inside the lab.
const IN_LAB: &str = "HULL_IN_LAB";

fn has_v2_controllers() -> bool {
    let root = Path::new("/sys/fs/cgroup");
    let ctl = std::fs::read_to_string(root.join("cgroup.controllers")).unwrap_or_default();
    ["memory", "pids", "cpu"]
        .iter()
        .all(|c| ctl.split_whitespace().any(|x| x == *c))
}

#[test]
#[ignore = "lab"]
fn cgroup_v2_limits_events_freezer_stats_update_devices() {
    if has_v2_controllers() {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(scenarios());
    } else {
        run_in_lab();
    }
}

/// Runs this test binary's one test inside the lab and passes only if it passed there.
fn run_in_lab() {
    assert!(
        std::env::var_os(IN_LAB).is_none(),
        "running in the lab, yet /sys/fs/cgroup has no memory+pids+cpu controllers"
    );
    let exe = std::env::current_exe().expect("current_exe");
    eprintln!("no cgroup v2 controllers here: running this test inside lab/run");
    let out = Command::new(repo_root().join("lab/run"))
        .args(["--timeout", "600", "--"])
        .arg(&exe)
        .args([
            "--exact",
            "cgroup_v2_limits_events_freezer_stats_update_devices",
            "--include-ignored",
            "--nocapture",
        ])
        .env(IN_LAB, "1")
        .current_dir(repo_root())
        .output()
        .expect("run lab/run");
    // The inner run's output goes through the harness's capture, prefixed, so its own
    // "test result:" line is not counted a second time by scripts/run-tests' summary.
    for line in String::from_utf8_lossy(&out.stdout)
        .lines()
        .chain(String::from_utf8_lossy(&out.stderr).lines())
    {
        println!("lab| {line}");
    }
    assert!(
        out.status.success(),
        "cgroup v2 checks failed in the lab: {}",
        out.status
    );
}

async fn scenarios() {
    let a = agent("v2").await;
    let root = busybox_rootfs(a.dir.path());
    oom(&a, &root).await;
    eprintln!("PASS: memory limit -> OOM kill, status 137, oom_killed, OOM event, counters");
    plain_kill(&a, &root).await;
    eprintln!("PASS: kill -9 from outside is not oom_killed");
    pids(&a, &root).await;
    eprintln!("PASS: pids limit");
    freezer(&a, &root).await;
    eprintln!("PASS: pause/resume (cgroup.freeze)");
    stats_and_update(&a, &root).await;
    eprintln!("PASS: stats values, UpdateContainer");
    devices(&a, &root).await;
    eprintln!("PASS: device cgroup (BPF) denies and allows");
}

fn with_resources(root: &Path, args: &[&str], resources: Value) -> Value {
    let mut s = spec(root, args);
    s["linux"]["resources"] = resources;
    s
}

async fn stats(a: &Agent, id: &str) -> hull_proto::stats::ContainerStats {
    a.containers
        .stats_container(
            ctx(),
            &StatsContainerRequest {
                container_id: id.into(),
                ..Default::default()
            },
        )
        .await
        .expect("stats")
        .stats
        .unwrap()
}

async fn list_pids(a: &Agent, id: &str) -> Vec<u32> {
    list_processes(a, id).await.pids
}

async fn list_processes(a: &Agent, id: &str) -> ListPidsResponse {
    a.containers
        .list_pids(
            ctx(),
            &ListPidsRequest {
                container_id: id.into(),
                ..Default::default()
            },
        )
        .await
        .expect("list pids")
}

/// SIGKILL from outside the agent, as an administrator's `kill -9` would.
fn kill_9(pid: u32) {
    let status = Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .expect("kill");
    assert!(status.success(), "kill -9 {pid}: {status}");
}

fn cgroup_file(a: &Agent, id: &str, file: &str) -> String {
    std::fs::read_to_string(a.cgroup_parent.join(id).join(file))
        .unwrap_or_else(|e| panic!("read {file} of {id}: {e}"))
        .trim()
        .to_owned()
}

async fn oom(a: &Agent, root: &Path) {
    let events = EventsClient::new(a.client.clone());
    let oom_event = tokio::spawn(async move {
        events
            .get_oom_event(ctx(), &GetOomEventRequest::default())
            .await
    });
    // busybox tail keeps the whole "last line" of /dev/zero (no newline ever) in memory.
    let s = with_resources(root, &["tail", "/dev/zero"], small_memory());
    a.run("oom", &s).await;
    let st = a.wait("oom", "").await;
    assert_eq!(
        (st.signal(), st.status, st.oom_killed),
        (9, 137, true),
        "{st:?}"
    );
    let ev = tokio::time::timeout(Duration::from_secs(30), oom_event)
        .await
        .expect("an OOM event within 30 s")
        .expect("join")
        .expect("GetOomEvent");
    assert_eq!(ev.container_id, "oom");
    let m = stats(a, "oom").await.memory.unwrap();
    assert_eq!(m.limit_bytes, 32 * MIB);
    assert!(m.oom_kill_events >= 1, "{m:?}");
    assert_eq!(cgroup_file(a, "oom", "memory.swap.max"), "0");
    a.remove("oom").await;

    // An exec'd hog is the OOM killer's victim; the init it runs beside lives on.
    let s = with_resources(root, &["sleep", "1000"], small_memory());
    a.run("oom-exec", &s).await;
    a.exec("oom-exec", "hog", &["tail", "/dev/zero"], false, false)
        .await
        .expect("exec hog");
    let st = a.wait("oom-exec", "hog").await;
    assert_eq!(
        (st.signal(), st.status, st.oom_killed),
        (9, 137, true),
        "{st:?}"
    );
    assert_eq!(
        list_pids(a, "oom-exec").await.len(),
        1,
        "the init still runs"
    );
    a.remove("oom-exec").await;
}

/// 32 MiB and no swap (OCI swap is memory + swap).
fn small_memory() -> Value {
    json!({"memory": {"limit": 32 * MIB, "swap": 32 * MIB}})
}

/// Under the same memory limit as the OOM cases, a SIGKILL that is not the OOM killer's is
/// reported as a plain kill, for an exec and for the init.
async fn plain_kill(a: &Agent, root: &Path) {
    let s = with_resources(root, &["sleep", "1000"], small_memory());
    let init = a.create("plain", &s, false).await.expect("create");
    a.start("plain").await;
    let pid = a
        .exec("plain", "e", &["sleep", "1000"], false, false)
        .await
        .expect("exec");
    kill_9(pid);
    let st = a.wait("plain", "e").await;
    assert_eq!(
        (st.signal(), st.status, st.oom_killed),
        (9, 137, false),
        "{st:?}"
    );
    kill_9(init);
    let st = a.wait("plain", "").await;
    assert_eq!(
        (st.signal(), st.status, st.oom_killed),
        (9, 137, false),
        "{st:?}"
    );
    let m = stats(a, "plain").await.memory.unwrap();
    assert_eq!(m.oom_kill_events, 0, "{m:?}");
    a.remove("plain").await;
}

async fn pids(a: &Agent, root: &Path) {
    let s = with_resources(root, &["sleep", "1000"], json!({"pids": {"limit": 4}}));
    a.run("pids", &s).await;
    // Each exec briefly needs one pid more than it leaves (its helper forks the process).
    a.exec("pids", "e1", &["sleep", "1000"], false, false)
        .await
        .expect("exec 1");
    a.exec("pids", "e2", &["sleep", "1000"], false, false)
        .await
        .expect("exec 2");
    let e = a
        .exec("pids", "e3", &["sleep", "1000"], false, false)
        .await
        .expect_err("a fork beyond pids.max must fail");
    let msg = format!("{e:?}");
    assert!(
        msg.contains("fork") || msg.contains("Resource temporarily unavailable"),
        "{msg}"
    );
    let listed = list_processes(a, "pids").await;
    assert_eq!(listed.pids.len(), 3);
    let mut exec_ids: Vec<&str> = listed
        .processes
        .iter()
        .map(|p| p.exec_id.as_str())
        .collect();
    exec_ids.sort_unstable();
    assert_eq!(exec_ids, ["", "e1", "e2"], "{:?}", listed.processes);
    let p = stats(a, "pids").await.pids.unwrap();
    assert_eq!((p.current, p.limit), (3, 4));
    assert_eq!(cgroup_file(a, "pids", "pids.max"), "4");
    a.remove("pids").await;
}

async fn freezer(a: &Agent, root: &Path) {
    let s = spec(
        root,
        &[
            "sh",
            "-c",
            "i=0; while true; do i=$((i+1)); echo $i > /tmp/n; usleep 20000; done",
        ],
    );
    a.run("frz", &s).await;
    let pid = list_pids(a, "frz").await[0];
    let counter = || -> u64 {
        std::fs::read_to_string(format!("/proc/{pid}/root/tmp/n"))
            .unwrap_or_default()
            .trim()
            .parse()
            .unwrap_or(0)
    };
    let until = |f: &dyn Fn() -> bool| {
        let start = Instant::now();
        while !f() {
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "condition never met"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    until(&|| counter() > 0);
    let req = PauseContainerRequest {
        container_id: "frz".into(),
        ..Default::default()
    };
    a.containers.pause_container(ctx(), &req).await.unwrap();
    assert!(cgroup_file(a, "frz", "cgroup.events").contains("frozen 1"));
    let n = counter();
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(counter(), n, "a frozen container made progress");
    let req = ResumeContainerRequest {
        container_id: "frz".into(),
        ..Default::default()
    };
    a.containers.resume_container(ctx(), &req).await.unwrap();
    assert!(cgroup_file(a, "frz", "cgroup.events").contains("frozen 0"));
    until(&|| counter() > n);
    a.remove("frz").await;
}

async fn stats_and_update(a: &Agent, root: &Path) {
    // 20 MiB in the container's tmpfs is charged to its memory cgroup.
    let s = with_resources(
        root,
        &[
            "sh",
            "-c",
            "head -c 20971520 /dev/zero > /tmp/f; echo written; exec sleep 1000",
        ],
        json!({"memory": {"limit": 64 * MIB}}),
    );
    a.run("st", &s).await;
    let req = ReadStreamRequest {
        container_id: "st".into(),
        ..Default::default()
    };
    let first = a.processes.read_stdout(ctx(), &req).await.unwrap();
    assert_eq!(first.data, b"written\n");
    let st = stats(a, "st").await;
    let m = st.memory.unwrap();
    assert!(m.usage_bytes >= 20 * MIB, "{m:?}");
    assert_eq!(m.limit_bytes, 64 * MIB);
    // Starting sh, head and sleep faulted pages in. How much of the usage is inactive file
    // cache is the kernel's business; the working set excludes it.
    assert!(m.pgfault > 0, "{m:?}");
    assert!(m.inactive_file_bytes <= m.usage_bytes, "{m:?}");
    assert_eq!(m.working_set_bytes, m.usage_bytes - m.inactive_file_bytes);
    assert!(st.cpu.usage_usec > 0);
    let p = st.pids.unwrap();
    assert_eq!(p.current, list_pids(a, "st").await.len() as u64);

    let update = json!({"memory": {"limit": 96 * MIB}, "pids": {"limit": 50},
                        "cpu": {"quota": 50000, "period": 100000, "shares": 512}});
    a.containers
        .update_container(
            ctx(),
            &UpdateContainerRequest {
                container_id: "st".into(),
                resources_json: serde_json::to_vec(&update).unwrap(),
                ..Default::default()
            },
        )
        .await
        .expect("update");
    let st = stats(a, "st").await;
    assert_eq!(st.memory.unwrap().limit_bytes, 96 * MIB);
    assert_eq!(st.pids.unwrap().limit, 50);
    assert_eq!(cgroup_file(a, "st", "cpu.max"), "50000 100000");
    // runc's shares -> weight conversion: 1 + (512 - 2) * 9999 / 262142 = 20.
    assert_eq!(cgroup_file(a, "st", "cpu.weight"), "20");
    // A limit below current usage is the kernel's to refuse or reclaim; a bad value is ours.
    let bad = json!({"unified": {"../memory.max": "1"}});
    let e = a
        .containers
        .update_container(
            ctx(),
            &UpdateContainerRequest {
                container_id: "st".into(),
                resources_json: serde_json::to_vec(&bad).unwrap(),
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    assert_eq!(code(&e), ttrpc::Code::INVALID_ARGUMENT);
    a.remove("st").await;
}

async fn devices(a: &Agent, root: &Path) {
    let probe = "head -c 1 /dev/kmsg >/dev/null && echo kmsg-open || echo kmsg-denied; \
                 echo x > /dev/null && echo null-ok";
    let kmsg =
        json!([{"path": "/dev/kmsg", "type": "c", "major": 1, "minor": 11, "fileMode": 420}]);
    let cases = [
        ("dev-none", None, "kmsg-open\nnull-ok\n"),
        (
            "dev-deny",
            Some(json!([{"allow": false, "access": "rwm"}])),
            "kmsg-denied\nnull-ok\n",
        ),
        (
            "dev-allow",
            Some(json!([{"allow": false, "access": "rwm"},
                        {"allow": true, "type": "c", "major": 1, "minor": 11, "access": "r"}])),
            "kmsg-open\nnull-ok\n",
        ),
    ];
    for (id, rules, want) in cases {
        let mut s = spec(root, &["sh", "-c", probe]);
        s["linux"]["devices"] = kmsg.clone();
        if let Some(rules) = rules {
            s["linux"]["resources"] = json!({"devices": rules});
        }
        a.run(id, &s).await;
        let out = String::from_utf8_lossy(&a.read_all(id, "", false).await).to_string();
        let err = String::from_utf8_lossy(&a.read_all(id, "", true).await).to_string();
        assert_eq!(out, want, "{id}: stderr {err}");
        if id == "dev-deny" {
            assert!(err.contains("Operation not permitted"), "{id}: {err}");
        }
        assert_eq!(a.wait(id, "").await.code(), 0);
        a.remove(id).await;
    }
    // A write is denied by a read-only rule even though the device may be read.
    let mut s = spec(
        root,
        &[
            "sh",
            "-c",
            "echo hi > /dev/kmsg && echo w-ok || echo w-denied",
        ],
    );
    s["linux"]["devices"] = kmsg.clone();
    s["linux"]["resources"] = json!({"devices": [{"allow": false, "access": "rwm"},
        {"allow": true, "type": "c", "major": 1, "minor": 11, "access": "r"}]});
    a.run("dev-ro", &s).await;
    assert_eq!(a.read_all("dev-ro", "", false).await, b"w-denied\n");
    a.remove("dev-ro").await;
}
