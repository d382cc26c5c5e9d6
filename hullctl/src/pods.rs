//! The node operator's view of hull pods: `hullctl pods`, `inspect POD`, `metrics POD`. A pod
//! is a directory under `/run/hull/pods` (`hull_contract::pods`): who it is (its identity
//! file) and its hull-vmm's API socket, asked for the VM's state and counters. The VMM's host
//! pid comes from the socket itself (SO_PEERCRED): hull-vmm runs in a pid namespace of its own
//! and does not know it.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use hull_contract::pods::{PodIdentity, API_SOCKET, IDENTITY, POD_STATE_ROOT};
use serde_json::{json, Value};

pub(crate) use hull_proto::vmm_api::Reply;

/// How long one API request may take: hull-vmm answers on its event loop at once, so more
/// means a stuck VMM, which must not hang `hullctl pods` or a scrape of every pod.
const API_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Sends one request to the VMM API socket `sock` (vmm/API.md).
pub(crate) async fn request(
    sock: &Path,
    method: &str,
    path: &str,
    body: &str,
) -> anyhow::Result<Reply> {
    Ok(hull_proto::vmm_api::request(sock, method, path, body, API_TIMEOUT).await?)
}

/// A GET that must answer 200 with JSON.
async fn get_json(sock: &Path, path: &str) -> anyhow::Result<(Value, Option<i32>)> {
    let r = request(sock, "GET", path, "").await?;
    if r.status != 200 {
        bail!("GET {path}: status {}: {}", r.status, r.body.trim());
    }
    let v = serde_json::from_str(&r.body).with_context(|| format!("GET {path}: not JSON"))?;
    Ok((v, r.peer_pid))
}

/// A pod on this node, as its directory says.
#[derive(Debug, Clone)]
pub(crate) struct Pod {
    pub(crate) sandbox_id: String,
    pub(crate) dir: PathBuf,
    pub(crate) identity: PodIdentity,
}

impl Pod {
    pub(crate) fn api_socket(&self) -> PathBuf {
        self.dir.join(API_SOCKET)
    }
}

/// Every pod directory under `root`, by sandbox id.
pub(crate) fn list(root: &Path) -> anyhow::Result<Vec<Pod>> {
    let entries = match std::fs::read_dir(root) {
        Ok(e) => e,
        // No pod has run on this node since boot.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("read {}", root.display())),
    };
    let mut pods: Vec<Pod> = entries
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| {
            let dir = e.path();
            let identity = std::fs::read_to_string(dir.join(IDENTITY))
                .map(|t| PodIdentity::parse(&t))
                .unwrap_or_default();
            Pod {
                sandbox_id: e.file_name().to_string_lossy().into_owned(),
                dir,
                identity,
            }
        })
        .collect();
    pods.sort_by(|a, b| a.sandbox_id.cmp(&b.sandbox_id));
    Ok(pods)
}

/// The pod `which` names: its sandbox id, a unique prefix of it, or `namespace/name`.
pub(crate) fn find(root: &Path, which: &str) -> anyhow::Result<Pod> {
    let pods = list(root)?;
    let by_name: Vec<&Pod> = pods
        .iter()
        .filter(|p| p.identity.display_name() == which || p.sandbox_id == which)
        .collect();
    let hits = if by_name.is_empty() {
        pods.iter()
            .filter(|p| p.sandbox_id.starts_with(which))
            .collect()
    } else {
        by_name
    };
    match hits.as_slice() {
        [one] => Ok((*one).clone()),
        [] => bail!("no hull pod {which:?} on this node (hullctl pods lists them)"),
        many => bail!(
            "{which:?} names {} pods: {}",
            many.len(),
            many.iter()
                .map(|p| p.sandbox_id.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// Seconds the process `pid` has run: /proc/uptime less its start ([`process_stats`]).
fn uptime_secs(pid: i32) -> Option<u64> {
    let (_, _, started) = process_stats(pid)?;
    let up: f64 = std::fs::read_to_string("/proc/uptime")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    // Whole seconds for an uptime column; a negative difference (clock granularity) is 0.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    Some((up - started).max(0.0) as u64)
}

/// What hullctl reads of a `/proc/PID/stat` (or `/proc/PID/task/TID/stat`) text.
#[derive(Debug, Clone, PartialEq)]
struct Stat {
    /// The process's (or thread's) name.
    comm: String,
    rss_bytes: u64,
    /// User and system time.
    cpu_secs: f64,
    /// Clock ticks after boot at which it started (`hull_contract::pods::ProcessId`).
    start_ticks: u64,
    start_secs: f64,
}

/// Parses a stat text with the system's clock tick and page size.
fn parse_stat(stat: &str) -> Option<Stat> {
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .and_then(|h| u64::try_from(h).ok())
        .filter(|&h| h > 0)?;
    let page = nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
        .ok()
        .flatten()
        .and_then(|p| u64::try_from(p).ok())?;
    parse_stat_with(stat, hz, page)
}

fn parse_stat_with(stat: &str, hz: u64, page: u64) -> Option<Stat> {
    // `pid (comm) state ...`: comm may hold spaces and parentheses, so fields are counted
    // from the last ')'. After it: utime and stime are the 12th and 13th, starttime the
    // 20th, rss (pages) the 22nd.
    let close = stat.rfind(')')?;
    let comm = stat.get(stat.find('(')? + 1..close)?.to_owned();
    let fields: Vec<&str> = stat[close + 1..].split_whitespace().collect();
    let num = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok());
    #[allow(clippy::cast_precision_loss)] // tick counts fit f64's 53 bits for ages
    let secs = |ticks: u64| ticks as f64 / hz as f64;
    let start_ticks = num(19)?;
    Some(Stat {
        comm,
        rss_bytes: num(21)? * page,
        cpu_secs: secs(num(11)? + num(12)?),
        start_ticks,
        start_secs: secs(start_ticks),
    })
}

fn read_stat(path: &str) -> Option<Stat> {
    parse_stat(&std::fs::read_to_string(path).ok()?)
}

/// (resident bytes, CPU seconds, start in seconds after boot) of `pid`, from /proc/PID/stat.
pub(crate) fn process_stats(pid: i32) -> Option<(u64, f64, f64)> {
    let s = read_stat(&format!("/proc/{pid}/stat"))?;
    Some((s.rss_bytes, s.cpu_secs, s.start_secs))
}

/// (resident bytes, CPU seconds) of process `id` if it still runs: the same pid with another
/// start time is another process, and gets no numbers.
pub(crate) fn stats_of(id: hull_contract::pods::ProcessId) -> Option<(u64, f64)> {
    let s = read_stat(&format!("/proc/{}/stat", id.pid))?;
    (s.start_ticks == id.start_time).then_some((s.rss_bytes, s.cpu_secs))
}

/// CPU seconds of each of hull-vmm `pid`'s vCPU threads (named `hull_vcpu<N>` by hull-vmm),
/// by vCPU index.
pub(crate) fn vcpu_seconds(pid: i32) -> Vec<(u32, f64)> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    let mut out: Vec<(u32, f64)> = tasks
        .filter_map(Result::ok)
        .filter_map(|t| {
            let s = read_stat(t.path().join("stat").to_str()?)?;
            let index: u32 = s.comm.strip_prefix("hull_vcpu")?.parse().ok()?;
            Some((index, s.cpu_secs))
        })
        .collect();
    out.sort_by_key(|(i, _)| *i);
    out
}

/// Resident shared memory of `pid` (`RssShmem` in /proc/PID/status), bytes: for hull-vmm,
/// the pages of the guest RAM memfd the host backs now (its other shared mappings are a few
/// pages).
pub(crate) fn shmem_resident(pid: i32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("RssShmem:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some(kib * 1024)
}

/// What `hullctl pods` shows of one pod, and the `GET /vm` and `GET /metrics` replies it was
/// read from (`inspect` prints them too; `null` for one that failed).
pub(crate) async fn summary(pod: &Pod) -> (Value, Value, Value) {
    let sock = pod.api_socket();
    let mut v = json!({
        "sandbox_id": pod.sandbox_id,
        "pod": pod.identity.display_name(),
        "namespace": pod.identity.namespace,
        "name": pod.identity.name,
        "uid": pod.identity.uid,
    });
    let vm = match get_json(&sock, "/vm").await {
        Ok((vm, pid)) => {
            v["state"] = vm["state"].clone();
            v["vcpus"] = vm["config"]["vcpus"].clone();
            v["memory_mib"] = vm["config"]["mem_mib"].clone();
            v["vmm_pid"] = json!(pid);
            v["uptime_secs"] = json!(pid.and_then(uptime_secs));
            vm
        }
        Err(e) => {
            v["error"] = json!(format!("{e:#}"));
            Value::Null
        }
    };
    let metrics = get_json(&sock, "/metrics")
        .await
        .map_or(Value::Null, |(m, _)| m);
    // The agent's ready mark, in µs after hull-vmm's exec (vmm/API.md, Metrics).
    let ready = metrics["boot"]["guest_boot_timer_us"]
        .as_u64()
        .filter(|&us| us > 0);
    v["boot_ms"] = json!(ready.map(|us| us / 1000));
    (v, vm, metrics)
}

fn cell(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) if s.is_empty() => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn duration_cell(secs: &Value) -> String {
    let Some(s) = secs.as_u64() else {
        return "-".into();
    };
    match s {
        0..=119 => format!("{s}s"),
        120..=7199 => format!("{}m", s / 60),
        7200..=172_799 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86_400),
    }
}

/// The table `hullctl pods` prints.
pub(crate) fn table(rows: &[Value]) -> String {
    let header = [
        "SANDBOX", "POD", "STATE", "VMM PID", "VCPUS", "MEMORY", "UPTIME", "BOOT",
    ];
    let mut lines: Vec<Vec<String>> = vec![header.iter().map(|h| (*h).to_owned()).collect()];
    for r in rows {
        let id = cell(&r["sandbox_id"]);
        lines.push(vec![
            id.chars().take(12).collect(),
            cell(&r["pod"]),
            if r["error"].is_string() {
                "unreachable".into()
            } else {
                cell(&r["state"])
            },
            cell(&r["vmm_pid"]),
            cell(&r["vcpus"]),
            r["memory_mib"]
                .as_u64()
                .map_or("-".into(), |m| format!("{m}Mi")),
            duration_cell(&r["uptime_secs"]),
            r["boot_ms"]
                .as_u64()
                .map_or("-".into(), |ms| format!("{ms}ms")),
        ]);
    }
    let widths: Vec<usize> = (0..header.len())
        .map(|c| {
            lines
                .iter()
                .map(|l| l[c].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    lines
        .iter()
        .map(|l| {
            let cells: Vec<String> = l
                .iter()
                .zip(&widths)
                .map(|(c, w)| format!("{c:<w$}"))
                .collect();
            cells.join("  ").trim_end().to_owned() + "\n"
        })
        .collect()
}

/// `hullctl pods`.
pub(crate) async fn pods(json_out: bool) -> anyhow::Result<i32> {
    let mut rows = Vec::new();
    for p in list(Path::new(POD_STATE_ROOT))? {
        rows.push(summary(&p).await.0);
    }
    if json_out {
        println!("{}", Value::Array(rows));
    } else {
        print!("{}", table(&rows));
    }
    Ok(0)
}

/// `hullctl inspect POD`: the summary, the VM's configuration and its counters.
pub(crate) async fn inspect(which: &str) -> anyhow::Result<i32> {
    let pod = find(Path::new(POD_STATE_ROOT), which)?;
    let (mut v, vm, metrics) = summary(&pod).await;
    v["dir"] = json!(pod.dir);
    v["api_socket"] = json!(pod.api_socket());
    v["vm"] = vm;
    v["metrics"] = metrics;
    println!("{v}");
    Ok(0)
}

/// `hullctl metrics POD`: the VMM's counters (vmm/API.md, Metrics).
pub(crate) async fn metrics(which: &str) -> anyhow::Result<i32> {
    let pod = find(Path::new(POD_STATE_ROOT), which)?;
    let (m, _) = get_json(&pod.api_socket(), "/metrics").await?;
    println!("{m}");
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod_dir(root: &Path, id: &str, who: Option<(&str, &str)>) {
        let dir = root.join(id);
        std::fs::create_dir_all(&dir).unwrap();
        if let Some((ns, name)) = who {
            let identity = PodIdentity {
                namespace: ns.into(),
                name: name.into(),
                uid: "u".into(),
            };
            std::fs::write(dir.join(IDENTITY), identity.to_text()).unwrap();
        }
    }

    #[test]
    fn pods_are_found_by_id_prefix_and_kubernetes_name() {
        let root = tempfile::tempdir().unwrap();
        pod_dir(root.path(), "abc123", Some(("default", "web-0")));
        pod_dir(root.path(), "abd456", Some(("default", "web-1")));
        pod_dir(root.path(), "ctr-run", None);
        std::fs::write(root.path().join("stray-file"), "").unwrap();
        let all = list(root.path()).unwrap();
        let ids: Vec<&str> = all.iter().map(|p| p.sandbox_id.as_str()).collect();
        assert_eq!(ids, ["abc123", "abd456", "ctr-run"]);
        assert_eq!(find(root.path(), "abc").unwrap().sandbox_id, "abc123");
        assert_eq!(
            find(root.path(), "default/web-1").unwrap().sandbox_id,
            "abd456"
        );
        assert_eq!(
            find(root.path(), "ctr-run")
                .unwrap()
                .identity
                .display_name(),
            "-"
        );
        let e = find(root.path(), "ab").unwrap_err().to_string();
        assert!(e.contains("names 2 pods"), "{e}");
        let e = find(root.path(), "nope").unwrap_err().to_string();
        assert!(e.contains("no hull pod"), "{e}");
        assert!(list(&root.path().join("missing")).unwrap().is_empty());
    }

    #[test]
    fn stat_fields_are_counted_from_the_last_parenthesis() {
        // A comm with a space and a ')' of its own; utime 300, stime 100, start 5000, rss 25.
        let stat = "42 (hull_vcpu1 (x)) S 1 42 42 0 -1 4194560 0 0 0 0 300 100 0 0 20 0 3 0 \
                    5000 1000000 25 18446744073709551615";
        let s = parse_stat_with(stat, 100, 4096).expect("parses");
        assert_eq!(
            s,
            Stat {
                comm: "hull_vcpu1 (x)".into(),
                rss_bytes: 25 * 4096,
                cpu_secs: 4.0,
                start_ticks: 5000,
                start_secs: 50.0,
            }
        );
        assert_eq!(parse_stat_with("no parens", 100, 4096), None);
    }

    #[test]
    fn vcpu_threads_are_found_by_hull_vmms_thread_names() {
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let (started_tx, started) = std::sync::mpsc::channel::<()>();
        let t = std::thread::Builder::new()
            .name("hull_vcpu7".into())
            .spawn(move || {
                // The thread names itself before this runs.
                started_tx.send(()).unwrap();
                let _ = rx.recv();
            })
            .unwrap();
        started.recv().unwrap();
        let me = i32::try_from(std::process::id()).unwrap();
        let found = vcpu_seconds(me);
        tx.send(()).unwrap();
        t.join().unwrap();
        assert_eq!(found.iter().map(|(i, _)| *i).collect::<Vec<_>>(), [7]);
        assert!(found[0].1 >= 0.0);
    }

    #[test]
    fn the_table_has_a_column_per_field_and_dashes_for_unknowns() {
        let rows = [
            json!({"sandbox_id": "0123456789abcdef", "pod": "default/web-0", "state": "running",
                   "vmm_pid": 4242, "vcpus": 2, "memory_mib": 576, "uptime_secs": 7300,
                   "boot_ms": 85}),
            json!({"sandbox_id": "ctr", "pod": "-", "error": "connect: refused"}),
        ];
        let t = table(&rows);
        let lines: Vec<&str> = t.lines().collect();
        assert!(lines[0].starts_with("SANDBOX       POD"), "{t}");
        assert!(
            lines[1].starts_with("0123456789ab  default/web-0  running")
                && lines[1].ends_with("4242     2      576Mi   2h      85ms"),
            "{t}"
        );
        assert!(
            lines[2].contains("unreachable") && lines[2].ends_with("-"),
            "{t}"
        );
    }
}
