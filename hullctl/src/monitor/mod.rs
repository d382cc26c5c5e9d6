//! `hullctl monitor --listen ADDR`: the node's Prometheus endpoint for hull pods (Kata's
//! kata-monitor is the anchor). Each scrape of `GET /metrics` asks every pod's hull-vmm for
//! its metrics (`GET /metrics/prometheus`, vmm/API.md) and its guest's agent for the guest's
//! memory, pressure and RPC latencies (`Guest.GuestStats`), labels them with the pod
//! (`sandbox_id`, `namespace`, `pod`, `uid`), adds what the host sees of the pod's processes
//! (shim, hull-vmm, virtiofsd: resident memory and CPU time; the guest RAM the host backs) and
//! whether each answered ([`pod`]), and the endpoint's own process metrics.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context;
use hull_contract::pods::POD_STATE_ROOT;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::pods::{self, process_stats, Pod};

mod pod;

/// One metric family: its HELP and TYPE, then its samples in order.
#[derive(Debug, Default)]
struct Family {
    help: String,
    kind: String,
    samples: Vec<String>,
}

/// A histogram's values: cumulative `buckets` for the upper `bounds`, the sum and count.
#[derive(Debug)]
pub(crate) struct Histogram<'a> {
    pub(crate) bounds: &'a [f64],
    pub(crate) buckets: &'a [u64],
    pub(crate) sum: f64,
    pub(crate) count: u64,
}

/// Families by name, in name order (the text format wants each family's lines together).
#[derive(Debug, Default)]
pub(crate) struct Exposition(BTreeMap<String, Family>);

/// A label value in the text format: backslash, quote and newline escaped.
fn escape(v: &str) -> String {
    v.replace('\\', r"\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn labels_of(pod: &Pod) -> String {
    format!(
        "sandbox_id=\"{}\",namespace=\"{}\",pod=\"{}\",uid=\"{}\"",
        escape(&pod.sandbox_id),
        escape(&pod.identity.namespace),
        escape(&pod.identity.name),
        escape(&pod.identity.uid)
    )
}

impl Exposition {
    fn family(&mut self, name: &str, kind: &str, help: &str) -> &mut Family {
        self.0.entry(name.to_owned()).or_insert_with(|| Family {
            help: help.to_owned(),
            kind: kind.to_owned(),
            samples: Vec::new(),
        })
    }

    /// One sample; `labels` already in `k="v",...` form (may be empty).
    pub(crate) fn sample(&mut self, name: &str, kind: &str, help: &str, labels: &str, v: f64) {
        let line = if labels.is_empty() {
            format!("{name} {v}")
        } else {
            format!("{name}{{{labels}}} {v}")
        };
        self.family(name, kind, help).samples.push(line);
    }

    /// One histogram's samples: its buckets, then +Inf, `_sum` and `_count`; `labels` as in
    /// [`Exposition::sample`], not empty.
    pub(crate) fn histogram(&mut self, name: &str, help: &str, labels: &str, h: &Histogram<'_>) {
        let f = self.family(name, "histogram", help);
        for (bound, n) in h.bounds.iter().zip(h.buckets) {
            f.samples
                .push(format!("{name}_bucket{{{labels},le=\"{bound}\"}} {n}"));
        }
        let (sum, count) = (h.sum, h.count);
        f.samples
            .push(format!("{name}_bucket{{{labels},le=\"+Inf\"}} {count}"));
        f.samples.push(format!("{name}_sum{{{labels}}} {sum}"));
        f.samples.push(format!("{name}_count{{{labels}}} {count}"));
    }

    /// Adds a hull-vmm's exposition, each sample with `pod_labels` in front of its own.
    pub(crate) fn add_vmm(&mut self, text: &str, pod_labels: &str) {
        let mut meta: BTreeMap<&str, (&str, &str)> = BTreeMap::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# HELP ") {
                if let Some((name, help)) = rest.split_once(' ') {
                    meta.entry(name).or_default().0 = help;
                }
            } else if let Some(rest) = line.strip_prefix("# TYPE ") {
                if let Some((name, kind)) = rest.split_once(' ') {
                    meta.entry(name).or_default().1 = kind;
                }
            } else if !line.is_empty() && !line.starts_with('#') {
                let name_end = line.find(['{', ' ']).unwrap_or(line.len());
                let name = &line[..name_end];
                let rest = &line[name_end..];
                let labelled = match rest.strip_prefix('{') {
                    Some(own) => format!("{name}{{{pod_labels},{own}"),
                    None => format!("{name}{{{pod_labels}}}{rest}"),
                };
                let (help, kind) = meta.get(name).copied().unwrap_or(("", "untyped"));
                self.family(name, kind, help).samples.push(labelled);
            }
        }
    }

    pub(crate) fn render(&self) -> String {
        let mut out = String::new();
        for (name, f) in &self.0 {
            if !f.help.is_empty() {
                let _ = writeln!(out, "# HELP {name} {}", f.help);
            }
            let _ = writeln!(out, "# TYPE {name} {}", f.kind);
            for s in &f.samples {
                let _ = writeln!(out, "{s}");
            }
        }
        out
    }
}

/// The exposition of every pod on the node, now. Pods are asked at once, each bounded in
/// time, so one stuck VMM or guest delays a scrape by its timeout, not by that times N.
pub(crate) async fn scrape(root: &Path) -> Exposition {
    let mut e = Exposition::default();
    let list = pods::list(root).unwrap_or_default();
    let mut set = tokio::task::JoinSet::new();
    for p in list.iter().cloned() {
        set.spawn(async move {
            let s = pod::PodScrape::take(&p).await;
            (p, s)
        });
    }
    let mut done = Vec::with_capacity(list.len());
    while let Some(r) = set.join_next().await {
        if let Ok(one) = r {
            done.push(one);
        }
    }
    // The text format wants no order, but a stable one makes scrapes comparable by eye.
    done.sort_by(|a, b| a.0.sandbox_id.cmp(&b.0.sandbox_id));
    for (p, s) in &done {
        s.add_to(&mut e, &labels_of(p));
    }
    #[allow(clippy::cast_precision_loss)]
    e.sample(
        "hull_pods",
        "gauge",
        "hull pods on this node.",
        "",
        list.len() as f64,
    );
    let me = i32::try_from(std::process::id()).unwrap_or(0);
    if let Some((rss, cpu, start)) = process_stats(me) {
        #[allow(clippy::cast_precision_loss)]
        e.sample(
            "process_resident_memory_bytes",
            "gauge",
            "Resident memory size in bytes.",
            "",
            rss as f64,
        );
        e.sample(
            "process_cpu_seconds_total",
            "counter",
            "Total user and system CPU time spent in seconds.",
            "",
            cpu,
        );
        let boot = std::fs::read_to_string("/proc/stat").ok().and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("btime "))
                .and_then(|v| v.trim().parse::<f64>().ok())
        });
        if let Some(boot) = boot {
            e.sample(
                "process_start_time_seconds",
                "gauge",
                "Start time of the process since unix epoch in seconds.",
                "",
                boot + start,
            );
        }
    }
    e
}

/// How long a client may take to send its request.
const REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Reads one request head (bounded in size and time).
async fn read_head(s: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 8192 {
        let n = s.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    Ok(head)
}

/// Answers `GET /metrics`, and 404 for the rest.
async fn serve_one(mut s: TcpStream) -> std::io::Result<()> {
    let head = tokio::time::timeout(REQUEST_TIMEOUT, read_head(&mut s))
        .await
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??;
    let line = String::from_utf8_lossy(&head);
    let mut words = line.split_whitespace();
    let (method, path) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    let (status, ctype, body) =
        if method == "GET" && (path == "/metrics" || path.starts_with("/metrics?")) {
            (
                "200 OK",
                "text/plain; version=0.0.4; charset=utf-8",
                scrape(Path::new(POD_STATE_ROOT)).await.render(),
            )
        } else {
            (
                "404 Not Found",
                "text/plain",
                "only GET /metrics\n".to_owned(),
            )
        };
    let resp = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(resp.as_bytes()).await?;
    s.shutdown().await
}

/// `hullctl monitor`: serves until killed.
pub(crate) async fn run(listen: &str) -> anyhow::Result<i32> {
    let l = TcpListener::bind(listen)
        .await
        .with_context(|| format!("listen on {listen}"))?;
    eprintln!(
        "hullctl monitor: serving http://{}/metrics",
        l.local_addr()?
    );
    loop {
        let (s, _) = l.accept().await?;
        tokio::spawn(async move {
            let _ = serve_one(s).await;
        });
    }
}

#[cfg(test)]
mod tests {
    use hull_contract::pods::PodIdentity;

    use super::*;

    fn pod(id: &str, name: &str) -> Pod {
        Pod {
            sandbox_id: id.into(),
            dir: Path::new("/nonexistent").join(id),
            identity: PodIdentity {
                namespace: "default".into(),
                name: name.into(),
                uid: format!("uid-{name}"),
            },
        }
    }

    #[test]
    fn pods_metrics_merge_into_one_family_each_with_the_pods_labels() {
        let vmm = "# HELP hull_vmm_net_tx_packets_total hull-vmm metric.\n\
                   # TYPE hull_vmm_net_tx_packets_total counter\n\
                   hull_vmm_net_tx_packets_total{index=\"0\"} 5\n\
                   # HELP hull_vmm_vcpu_exits_io_total hull-vmm metric.\n\
                   # TYPE hull_vmm_vcpu_exits_io_total counter\n\
                   hull_vmm_vcpu_exits_io_total 9\n";
        let mut e = Exposition::default();
        e.add_vmm(vmm, &labels_of(&pod("aaa", "web-0")));
        e.add_vmm(vmm, &labels_of(&pod("bbb", "we\"b-1")));
        e.sample("hull_pods", "gauge", "hull pods on this node.", "", 2.0);
        let text = e.render();
        assert_eq!(
            text.matches("# TYPE hull_vmm_net_tx_packets_total counter")
                .count(),
            1,
            "{text}"
        );
        for line in [
            "hull_vmm_net_tx_packets_total{sandbox_id=\"aaa\",namespace=\"default\",pod=\"web-0\",uid=\"uid-web-0\",index=\"0\"} 5",
            "hull_vmm_vcpu_exits_io_total{sandbox_id=\"bbb\",namespace=\"default\",pod=\"we\\\"b-1\",uid=\"uid-we\\\"b-1\"} 9",
            "# TYPE hull_pods gauge",
            "hull_pods 2",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line:?} in\n{text}");
        }
        // Each family's samples directly follow its TYPE line.
        let lines: Vec<&str> = text.lines().collect();
        let at = lines
            .iter()
            .position(|l| *l == "# TYPE hull_vmm_net_tx_packets_total counter")
            .unwrap();
        assert!(lines[at + 1].starts_with("hull_vmm_net_tx_packets_total{sandbox_id=\"aaa\""));
        assert!(lines[at + 2].starts_with("hull_vmm_net_tx_packets_total{sandbox_id=\"bbb\""));
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_node_without_pods_still_answers_with_its_own_metrics() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir(root.path().join("dead-pod")).unwrap();
        let text = scrape(root.path()).await.render();
        assert!(text.contains("\nhull_pods 1\n"), "{text}");
        assert!(
            text.contains(
                "hull_pod_up{sandbox_id=\"dead-pod\",namespace=\"\",pod=\"\",uid=\"\"} 0"
            ),
            "{text}"
        );
        assert!(
            text.contains("# TYPE process_cpu_seconds_total counter"),
            "{text}"
        );
    }
}
