//! `Guest.SetCpus`: which of the guest's present CPUs are online, through
//! `/sys/devices/system/cpu`.
//!
//! The guest boots with every CPU the pod may grow to present (the MP table) and the first
//! `maxcpus=K` online. The host runs a vCPU's thread only once it granted that CPU, and a
//! CPU whose thread does not run never answers the kernel's INIT/SIPI: writing `1` to its
//! `online` file then fails (EIO) after the kernel waited for it. That failure is the host's
//! mistake and comes back as [`CpuError::Write`], naming the CPU and the errno.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::{errno, excerpt, read_capped, AttrWriter, Roots};

/// Below the sysfs root.
const CPU_DIR: &str = "devices/system/cpu";
/// Linux's largest NR_CPUS (x86_64 MAXSMP): a list naming more CPUs is not the kernel's.
const MAX_CPUS: usize = 8192;
/// A range list of MAX_CPUS CPUs written one by one takes about 40 KiB.
const LIST_CAP: usize = 64 << 10;
/// A `cpuN/online` file holds "0\n" or "1\n".
const SWITCH_CAP: usize = 64;

/// A malformed CPU range list.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(crate) enum ListError {
    #[error("bad CPU range {0:?}")]
    BadRange(String),
    #[error("names more than {MAX_CPUS} CPUs")]
    TooMany,
}

/// Why SetCpus failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CpuError {
    #[error("at least one CPU must stay online")]
    NoneOnline,
    #[error("{wanted} CPUs asked for online, but the guest has {present} present")]
    NotPresent { wanted: u32, present: u32 },
    #[error("read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{}: {source}", path.display())]
    Malformed {
        path: PathBuf,
        #[source]
        source: ListError,
    },
    #[error("cpu{cpu} cannot be brought {}: it has no online switch", if *online { "online" } else { "offline" })]
    NoSwitch { cpu: u32, online: bool },
    /// The kernel refused: for onlining, most likely because the host did not start the vCPU.
    #[error("cpu{cpu}: write {value} to {}: {errno}", path.display())]
    Write {
        cpu: u32,
        value: &'static str,
        path: PathBuf,
        errno: String,
    },
}

/// A CPU list as the kernel writes them (`0-3,5`; empty for none): the CPUs, sorted, each
/// once.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct CpuList(Vec<u32>);

impl CpuList {
    pub(crate) fn parse(text: &str) -> Result<CpuList, ListError> {
        let text = text.trim();
        let mut cpus = Vec::new();
        if text.is_empty() {
            return Ok(CpuList(cpus));
        }
        let bad = |item: &str| ListError::BadRange(excerpt(item, 32));
        for item in text.split(',') {
            let num = |n: &str| {
                (!n.is_empty() && n.len() <= 10 && n.bytes().all(|b| b.is_ascii_digit()))
                    .then(|| n.parse::<u32>().ok())
                    .flatten()
                    .ok_or_else(|| bad(item))
            };
            let (first, last) = match item.split_once('-') {
                Some((a, b)) => (num(a)?, num(b)?),
                None => {
                    let n = num(item)?;
                    (n, n)
                }
            };
            if last < first {
                return Err(bad(item));
            }
            // Counted before expanding, so "0-4294967295" costs nothing.
            let len = usize::try_from(last - first).map_or(usize::MAX, |n| n.saturating_add(1));
            if len > MAX_CPUS - cpus.len() {
                return Err(ListError::TooMany);
            }
            cpus.extend(first..=last);
        }
        cpus.sort_unstable();
        cpus.dedup();
        Ok(CpuList(cpus))
    }

    pub(crate) fn cpus(&self) -> &[u32] {
        &self.0
    }

    pub(crate) fn contains(&self, cpu: u32) -> bool {
        self.0.binary_search(&cpu).is_ok()
    }

    /// How many; at most [`MAX_CPUS`], so it fits.
    pub(crate) fn count(&self) -> u32 {
        u32::try_from(self.0.len()).unwrap_or(u32::MAX)
    }
}

/// The guest's CPUs after SetCpus.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CpuCounts {
    pub(crate) online: u32,
    pub(crate) present: u32,
}

/// Brings the lowest `online` present CPUs online and every other present CPU offline: CPUs
/// 0..online-1, as the guest's CPUs are numbered from 0 without gaps. Up goes lowest first,
/// then down highest first (the order the kernel itself brings CPUs up and down); a file
/// that already says the wanted value is not written. The lowest present CPU (cpu0, which
/// has no switch) is always among the wanted ones, so it is never taken down.
pub(crate) fn set_cpus(
    roots: &Roots,
    w: &dyn AttrWriter,
    online: u32,
) -> Result<CpuCounts, CpuError> {
    // Two calls interleaving their writes would leave neither count.
    static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());
    let _one = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if online == 0 {
        return Err(CpuError::NoneOnline);
    }
    let dir = roots.sys.join(CPU_DIR);
    let present = read_list(&dir.join("present"))?;
    let listed_online = read_list(&dir.join("online"))?;
    if online > present.count() {
        return Err(CpuError::NotPresent {
            wanted: online,
            present: present.count(),
        });
    }
    let (up, down) = present
        .cpus()
        .split_at(usize::try_from(online).unwrap_or(usize::MAX));
    for &cpu in up {
        switch(&dir, w, cpu, true, listed_online.contains(cpu))?;
    }
    for &cpu in down.iter().rev() {
        switch(&dir, w, cpu, false, listed_online.contains(cpu))?;
    }
    Ok(CpuCounts {
        online: read_list(&dir.join("online"))?.count(),
        present: read_list(&dir.join("present"))?.count(),
    })
}

fn read_list(path: &Path) -> Result<CpuList, CpuError> {
    let text = read_capped(path, LIST_CAP).map_err(|source| CpuError::Read {
        path: path.to_owned(),
        source,
    })?;
    CpuList::parse(&text).map_err(|source| CpuError::Malformed {
        path: path.to_owned(),
        source,
    })
}

/// Sets `cpu` online or offline through its `online` file, unless the file says so already.
/// A CPU without the file (cpu0) is left as the kernel's list says it is, if that is what is
/// wanted.
fn switch(
    dir: &Path,
    w: &dyn AttrWriter,
    cpu: u32,
    online: bool,
    listed_online: bool,
) -> Result<(), CpuError> {
    let path = dir.join(format!("cpu{cpu}")).join("online");
    let value = if online { "1" } else { "0" };
    match read_capped(&path, SWITCH_CAP) {
        Ok(now) if now.trim() == value => return Ok(()),
        // Anything else (the other value, or not a value at all): the kernel decides.
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return if listed_online == online {
                Ok(())
            } else {
                Err(CpuError::NoSwitch { cpu, online })
            };
        }
        Err(source) => return Err(CpuError::Read { path, source }),
    }
    tracing::info!(cpu, online, "hot-plug: switching CPU");
    w.write(&path, value).map_err(|e| CpuError::Write {
        cpu,
        value,
        errno: errno(&e),
        path,
    })
}

#[cfg(test)]
mod tests {
    use super::super::testing::{FakeTree, Recorder};
    use super::*;

    #[test]
    fn range_lists_parse_as_the_kernel_writes_them() {
        let p = |s: &str| CpuList::parse(s).map(|l| l.cpus().to_vec());
        assert_eq!(p("0-3,5\n"), Ok(vec![0, 1, 2, 3, 5]));
        assert_eq!(p("0\n"), Ok(vec![0]));
        assert_eq!(p("\n"), Ok(vec![]));
        assert_eq!(p(""), Ok(vec![]));
        assert_eq!(p("7,0-1,1"), Ok(vec![0, 1, 7]), "sorted, each once");
        assert_eq!(p("0-8191").map(|v| v.len()), Ok(8192));
        assert_eq!(p("0-8192"), Err(ListError::TooMany));
        assert_eq!(p("0-4294967295"), Err(ListError::TooMany));
        assert_eq!(p("0-4095,4096-8191,1"), Err(ListError::TooMany));
        assert_eq!(p("4294967295"), Ok(vec![u32::MAX]));
        for bad in [
            "3-1",
            "1-",
            "-1",
            "a",
            "1,,2",
            "1 - 2",
            "+1",
            "0x1",
            "4294967296",
            "1-2-3",
            ",",
            "0-3,5 junk",
        ] {
            assert!(
                matches!(p(bad), Err(ListError::BadRange(_))),
                "{bad:?}: {:?}",
                p(bad)
            );
        }
        let long = "9".repeat(10_000);
        match p(&long) {
            Err(ListError::BadRange(shown)) => assert!(shown.chars().count() <= 33, "{shown}"),
            other => panic!("{other:?}"),
        }
        let l = CpuList::parse("0-3,5").expect("parse");
        assert!(l.contains(5) && !l.contains(4));
        assert_eq!(l.count(), 5);
    }

    /// A guest with `present` CPUs, those of `online` online: cpu0 without a switch, every
    /// other CPU's `online` file saying whether it is.
    fn guest(present: u32, online: &[u32]) -> FakeTree {
        let tree = FakeTree::new();
        tree.put(
            &format!("sys/{CPU_DIR}/present"),
            &format!("0-{}\n", present - 1),
        );
        set_online_list(&tree, online);
        for cpu in 1..present {
            let on = if online.contains(&cpu) { "1\n" } else { "0\n" };
            tree.put(&format!("sys/{CPU_DIR}/cpu{cpu}/online"), on);
        }
        tree
    }

    fn set_online_list(tree: &FakeTree, online: &[u32]) {
        let list: Vec<String> = online.iter().map(u32::to_string).collect();
        tree.put(
            &format!("sys/{CPU_DIR}/online"),
            &format!("{}\n", list.join(",")),
        );
    }

    fn switch_path(tree: &FakeTree, cpu: u32) -> PathBuf {
        tree.path(&format!("sys/{CPU_DIR}/cpu{cpu}/online"))
    }

    /// The writes as `(cpu, value)`.
    fn written(tree: &FakeTree, w: &Recorder) -> Vec<(u32, String)> {
        w.writes()
            .into_iter()
            .map(|(path, v)| {
                let cpu = (0..64)
                    .find(|&c| switch_path(tree, c) == path)
                    .unwrap_or_else(|| panic!("write to {}", path.display()));
                (cpu, v)
            })
            .collect()
    }

    #[test]
    fn cpus_come_up_lowest_first_and_go_down_highest_first() {
        let tree = guest(8, &[0, 1]);
        let w = Recorder::default();
        // The fake kernel does not keep its online list itself: the counts read back are the
        // test's list.
        let counts = set_cpus(&tree.roots, &w, 5).expect("up");
        assert_eq!(
            written(&tree, &w),
            [(2, "1".into()), (3, "1".into()), (4, "1".into())],
            "cpu1 already online, cpu5-7 already offline: not written"
        );
        assert_eq!(
            counts,
            CpuCounts {
                online: 2,
                present: 8
            }
        );
        for cpu in 2..5 {
            assert_eq!(tree.read(&format!("sys/{CPU_DIR}/cpu{cpu}/online")), "1");
        }

        set_online_list(&tree, &[0, 1, 2, 3, 4]);
        let w = Recorder::default();
        let counts = set_cpus(&tree.roots, &w, 2).expect("down");
        assert_eq!(
            written(&tree, &w),
            [(4, "0".into()), (3, "0".into()), (2, "0".into())]
        );
        assert_eq!(
            counts,
            CpuCounts {
                online: 5,
                present: 8
            }
        );

        // Up before down when both are needed: 0,1,3 online, want 0-2.
        let tree = guest(4, &[0, 1, 3]);
        let w = Recorder::default();
        set_cpus(&tree.roots, &w, 3).expect("both");
        assert_eq!(written(&tree, &w), [(2, "1".into()), (3, "0".into())]);
    }

    #[test]
    fn a_second_call_writes_nothing() {
        let tree = guest(4, &[0]);
        let w = Recorder::default();
        set_cpus(&tree.roots, &w, 3).expect("first");
        assert_eq!(w.writes().len(), 2);
        let again = Recorder::default();
        set_cpus(&tree.roots, &again, 3).expect("second");
        assert!(again.writes().is_empty(), "{:?}", again.writes());
        // One CPU: cpu0 has no switch and stays; every other goes down.
        let w = Recorder::default();
        set_cpus(&tree.roots, &w, 1).expect("one");
        assert_eq!(written(&tree, &w), [(2, "0".into()), (1, "0".into())]);
    }

    #[test]
    fn counts_outside_what_is_present_are_refused_before_any_write() {
        let tree = guest(4, &[0, 1]);
        let w = Recorder::default();
        assert!(matches!(
            set_cpus(&tree.roots, &w, 0),
            Err(CpuError::NoneOnline)
        ));
        match set_cpus(&tree.roots, &w, 5) {
            Err(
                e @ CpuError::NotPresent {
                    wanted: 5,
                    present: 4,
                },
            ) => {
                assert_eq!(
                    e.to_string(),
                    "5 CPUs asked for online, but the guest has 4 present"
                );
            }
            other => panic!("{other:?}"),
        }
        set_cpus(&tree.roots, &w, 4).expect("all present");
        assert!(matches!(
            set_cpus(&tree.roots, &w, u32::MAX),
            Err(CpuError::NotPresent { .. })
        ));
        assert_eq!(w.writes().len(), 2, "only the valid call wrote");
    }

    #[test]
    fn a_cpu_the_host_did_not_start_fails_naming_it_and_the_errno() {
        let tree = guest(4, &[0, 1]);
        let w = Recorder::default().failing(switch_path(&tree, 3), libc::EIO);
        let e = set_cpus(&tree.roots, &w, 4).expect_err("cpu3 never came up");
        assert!(matches!(e, CpuError::Write { cpu: 3, .. }), "{e:?}");
        let msg = e.to_string();
        assert!(msg.starts_with("cpu3: write 1 to "), "{msg}");
        assert!(msg.ends_with("cpu3/online: EIO: I/O error"), "{msg}");
        // cpu2 came up before; nothing was taken down.
        assert_eq!(written(&tree, &w), [(2, "1".into()), (3, "1".into())]);
    }

    #[test]
    fn a_cpu_without_a_switch_is_left_alone_or_refused() {
        // cpu0 has no switch: listed online and wanted online is fine (every call above); a
        // CPU without one that would have to change is refused by name.
        let tree = guest(4, &[0, 1, 2]);
        std::fs::remove_file(switch_path(&tree, 2)).expect("rm");
        let w = Recorder::default();
        set_cpus(&tree.roots, &w, 3).expect("cpu2 stays online");
        let e = set_cpus(&tree.roots, &w, 2).expect_err("cpu2 cannot go");
        assert!(
            matches!(
                e,
                CpuError::NoSwitch {
                    cpu: 2,
                    online: false
                }
            ),
            "{e:?}"
        );
        assert_eq!(
            e.to_string(),
            "cpu2 cannot be brought offline: it has no online switch"
        );
        assert!(w.writes().is_empty());
    }

    #[test]
    fn malformed_sysfs_is_an_error_not_a_guess() {
        let tree = guest(4, &[0]);
        let w = Recorder::default();
        tree.put(&format!("sys/{CPU_DIR}/present"), "0-3,banana\n");
        let e = set_cpus(&tree.roots, &w, 2).expect_err("malformed");
        assert!(matches!(e, CpuError::Malformed { .. }), "{e:?}");
        assert!(
            e.to_string().ends_with("present: bad CPU range \"banana\""),
            "{e}"
        );

        tree.put(&format!("sys/{CPU_DIR}/present"), &"0,".repeat(40_000));
        let e = set_cpus(&tree.roots, &w, 2).expect_err("too large");
        assert!(matches!(e, CpuError::Read { .. }), "{e:?}");

        tree.put(&format!("sys/{CPU_DIR}/present"), "0-3\n");
        std::fs::remove_file(tree.path(&format!("sys/{CPU_DIR}/online"))).expect("rm");
        assert!(matches!(
            set_cpus(&tree.roots, &w, 2),
            Err(CpuError::Read { .. })
        ));

        // A switch saying neither 0 nor 1 is written: the kernel has the last word.
        set_online_list(&tree, &[0]);
        tree.put(&format!("sys/{CPU_DIR}/cpu1/online"), "\u{1b}[2J weird");
        set_cpus(&tree.roots, &w, 2).expect("written");
        assert_eq!(written(&tree, &w), [(1, "1".into())]);
    }
}
