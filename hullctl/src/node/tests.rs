//! The containerd configuration edit against real files: `containerd config default` of the
//! three containerd lines hull supports (testdata/containerd-*-default.toml, printed by Debian
//! 12's 1.6.20, trixie's 1.7.24 and sid's 2.1.9) and node files with other runtimes.

use std::path::{Path, PathBuf};

use super::containerd::{self, ConfigError, Mode, Outcome};

const HULL_TOML: &str = "/etc/hull/hull.toml";

struct Node {
    root: tempfile::TempDir,
    paths: containerd::Paths,
}

impl Node {
    /// A node whose containerd config is `config` (None: no file).
    fn new(config: Option<&str>) -> Node {
        let root = tempfile::tempdir().expect("tempdir");
        let paths = containerd::Paths {
            root: root.path().to_owned(),
            config: PathBuf::from("/etc/containerd/config.toml"),
            drop_in: PathBuf::from("/etc/containerd/conf.d/hull.toml"),
            state: PathBuf::from("/var/lib/hull/installer"),
        };
        let node = Node { root, paths };
        if let Some(c) = config {
            let p = node.file(&node.paths.config);
            std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
            std::fs::write(p, c).expect("write config");
        }
        node
    }
    fn file(&self, p: &Path) -> PathBuf {
        self.root
            .path()
            .join(p.strip_prefix("/").expect("absolute"))
    }
    fn read(&self, p: &Path) -> Option<String> {
        std::fs::read_to_string(self.file(p)).ok()
    }
    fn config(&self) -> Option<String> {
        self.read(&self.paths.config)
    }
    fn drop_in(&self) -> Option<String> {
        self.read(&self.paths.drop_in)
    }
    fn add(&self, containerd: &str) -> Result<Outcome, ConfigError> {
        containerd::add(&self.paths, containerd, HULL_TOML)
    }
    fn remove(&self) -> Outcome {
        containerd::remove(&self.paths).expect("remove")
    }
    /// Nothing of hull's left: no drop-in, an empty state directory.
    fn assert_clean(&self) {
        assert_eq!(self.drop_in(), None, "drop-in left");
        let state = self.file(&self.paths.state);
        let left: Vec<_> = std::fs::read_dir(&state)
            .map(|d| d.filter_map(Result::ok).map(|e| e.file_name()).collect())
            .unwrap_or_default();
        assert!(
            left.is_empty(),
            "state left in {}: {left:?}",
            state.display()
        );
    }
}

fn fixture(name: &str) -> String {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("src/node/testdata")
        .join(name);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn toml(text: &str) -> toml::Table {
    text.parse()
        .unwrap_or_else(|e| panic!("not TOML: {e}\n{text}"))
}

/// `plugins.<cri>.containerd.runtimes` of a parsed file.
fn runtimes<'a>(t: &'a toml::Table, cri: &str) -> &'a toml::Table {
    t["plugins"][cri]["containerd"]["runtimes"]
        .as_table()
        .expect("runtimes table")
}

/// The hull runtime as containerd would read it, from the file or its drop-in.
fn assert_hull_runtime(runtimes: &toml::Table) {
    let hull = &runtimes["hull"];
    assert_eq!(hull["runtime_type"].as_str(), Some("io.containerd.hull.v2"));
    assert_eq!(hull["options"]["ConfigPath"].as_str(), Some(HULL_TOML));
}

/// Add (the file must hold the runtime as containerd reads it, the other settings untouched),
/// add again (nothing changes), remove (the file byte for byte as it was).
fn round_trip(config: &str, containerd: &str) -> Mode {
    let node = Node::new(Some(config));
    let out = node.add(containerd).expect("add");
    assert!(out.changed);
    let mode = out.mode.expect("mode");
    let added = node.config().expect("config");
    let parsed = toml(&added);
    let before = toml(config);
    match mode {
        Mode::Edit => {
            let cri = "io.containerd.grpc.v1.cri";
            assert_hull_runtime(runtimes(&parsed, cri));
            // Everything else as it was: the file minus hull's runtime is the original.
            let mut without = parsed.clone();
            without["plugins"][cri]["containerd"]["runtimes"]
                .as_table_mut()
                .expect("runtimes")
                .remove("hull");
            assert_eq!(without, before);
            assert!(added.starts_with(config), "the original is not kept as is");
            assert_eq!(node.drop_in(), None);
        }
        Mode::Import => {
            let imports: Vec<_> = parsed["imports"]
                .as_array()
                .expect("imports")
                .iter()
                .filter_map(toml::Value::as_str)
                .collect();
            assert_eq!(
                imports.last(),
                Some(&"/etc/containerd/conf.d/hull.toml"),
                "{imports:?}"
            );
            let drop_in = toml(&node.drop_in().expect("drop-in written"));
            assert_eq!(
                drop_in.get("version").and_then(toml::Value::as_integer),
                Some(3)
            );
            assert_hull_runtime(runtimes(&drop_in, "io.containerd.cri.v1.runtime"));
        }
    }
    let again = node.add(containerd).expect("add again");
    assert!(!again.changed, "a second add changed the file");
    assert_eq!(node.config().as_deref(), Some(added.as_str()));

    let out = node.remove();
    assert!(out.changed);
    assert!(out.notes.is_empty(), "{:?}", out.notes);
    assert_eq!(
        node.config().as_deref(),
        Some(config),
        "not restored byte for byte"
    );
    node.assert_clean();
    mode
}

#[test]
fn containerd_1_6_default_config_gets_the_tables_and_back() {
    let c = fixture("containerd-1.6.20-default.toml");
    assert_eq!(round_trip(&c, "1.6.20~ds1"), Mode::Edit);
}

#[test]
fn containerd_1_7_default_config_gets_the_tables_and_back() {
    let c = fixture("containerd-1.7.24-default.toml");
    assert_eq!(round_trip(&c, "1.7.24~ds1"), Mode::Edit);
}

#[test]
fn containerd_2_1_default_config_imports_the_drop_in_and_back() {
    let c = fixture("containerd-2.1.9-default.toml");
    assert_eq!(round_trip(&c, "v2.1.9"), Mode::Import);
}

#[test]
fn node_files_with_other_runtimes_keep_them() {
    let v2 = fixture("node-v2-other-runtimes.toml");
    assert_eq!(round_trip(&v2, "1.7.24"), Mode::Edit);
    // containerd 2.x reads a version 2 file: still edited, not imported.
    assert_eq!(round_trip(&v2, "2.1.9"), Mode::Edit);
    let v3 = fixture("node-v3-other-runtimes.toml");
    assert_eq!(round_trip(&v3, "2.1.9"), Mode::Import);
}

#[test]
fn a_missing_file_is_created_for_the_containerd_at_hand_and_removed() {
    for (containerd, version, mode) in [("1.6.20", 2, Mode::Edit), ("2.1.9", 3, Mode::Import)] {
        let node = Node::new(None);
        let out = node.add(containerd).expect("add");
        assert_eq!(out.mode, Some(mode));
        let t = toml(&node.config().expect("created"));
        assert_eq!(t["version"].as_integer(), Some(version));
        let out = node.remove();
        assert!(out.changed);
        assert_eq!(node.config(), None, "the file hull created is left");
        node.assert_clean();
    }
}

#[test]
fn a_comments_only_file_keeps_its_comments() {
    let c = "# managed by hand\n";
    let node = Node::new(Some(c));
    node.add("1.6.20").expect("add");
    let added = node.config().expect("config");
    assert!(
        added.starts_with("version = 2\n# managed by hand\n"),
        "{added}"
    );
    node.remove();
    assert_eq!(node.config().as_deref(), Some(c));
}

#[test]
fn an_upgrade_rewrites_hulls_part_and_remove_still_restores() {
    let c = fixture("node-v2-other-runtimes.toml");
    let node = Node::new(Some(&c));
    node.add("1.7.24").expect("add");
    let out = containerd::add(&node.paths, "1.7.24", "/opt/hull/v2/hull.toml").expect("upgrade");
    assert!(out.changed);
    let t = toml(&node.config().expect("config"));
    let hull = &runtimes(&t, "io.containerd.grpc.v1.cri")["hull"];
    assert_eq!(
        hull["options"]["ConfigPath"].as_str(),
        Some("/opt/hull/v2/hull.toml")
    );
    assert_eq!(
        node.config().expect("config").matches("BEGIN hull").count(),
        1
    );
    node.remove();
    assert_eq!(node.config().as_deref(), Some(c.as_str()));
}

#[test]
fn edits_made_after_the_install_survive_the_remove() {
    for (fixture_name, containerd) in [
        ("node-v2-other-runtimes.toml", "1.7.24"),
        ("node-v3-other-runtimes.toml", "2.1.9"),
    ] {
        let c = fixture(fixture_name);
        let node = Node::new(Some(&c));
        node.add(containerd).expect("add");
        let edited = format!(
            "{}[plugins.\"io.containerd.monitor.v1.cgroups\"]\n  no_prometheus = true\n",
            node.config().expect("config")
        );
        std::fs::write(node.file(&node.paths.config), &edited).expect("edit");
        let out = node.remove();
        assert!(out.changed);
        assert_eq!(out.notes.len(), 1, "{:?}", out.notes);
        let left = node.config().expect("config");
        assert!(
            left.contains("no_prometheus = true"),
            "the operator's edit is lost"
        );
        assert!(!left.contains("hull"), "hull's part is left:\n{left}");
        let t = toml(&left);
        assert!(t["plugins"]
            .get("io.containerd.monitor.v1.cgroups")
            .is_some());
        node.assert_clean();
    }
}

#[test]
fn remove_without_an_install_changes_nothing() {
    let c = fixture("containerd-1.6.20-default.toml");
    let node = Node::new(Some(&c));
    let out = node.remove();
    assert!(!out.changed);
    assert_eq!(out.mode, None);
    assert_eq!(node.config().as_deref(), Some(c.as_str()));
}

#[test]
fn what_hull_cannot_edit_is_refused_and_left_alone() {
    type Expected = fn(&ConfigError) -> bool;
    let cases: [(&str, &str, Expected); 5] = [
        // Settings without `version`: version 1.
        (
            "[plugins.cri]\n  sandbox_image = \"pause\"\n",
            "1.6.20",
            |e| matches!(e, ConfigError::VersionOne(_)),
        ),
        ("version = 3\n", "1.7.24", |e| {
            matches!(e, ConfigError::TooNew { .. })
        }),
        ("version = 4\n", "2.1.9", |e| {
            matches!(e, ConfigError::UnknownVersion { .. })
        }),
        ("version = 2\n[plugins", "1.6.20", |e| {
            matches!(e, ConfigError::Parse { .. })
        }),
        (
            "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.hull]\n  \
             runtime_type = \"io.containerd.mine.v1\"\n",
            "1.6.20",
            |e| matches!(e, ConfigError::ForeignRuntime(_)),
        ),
    ];
    for (config, containerd, expected) in cases {
        let node = Node::new(Some(config));
        let err = node.add(containerd).expect_err(config);
        assert!(expected(&err), "{config:?}: {err}");
        assert_eq!(
            node.config().as_deref(),
            Some(config),
            "refused but changed"
        );
        node.assert_clean();
    }
    let node = Node::new(None);
    for bad in [
        "relative/hull.toml",
        "/etc/hull/\"x.toml",
        "/etc/hull/x\n.toml",
    ] {
        let err = containerd::add(&node.paths, "1.6.20", bad).expect_err(bad);
        assert!(matches!(err, ConfigError::BadHullConfig(_)), "{err}");
    }
}

#[test]
fn containerd_versions_parse() {
    assert_eq!(containerd::containerd_major("1.6.20~ds1"), Some(1));
    assert_eq!(containerd::containerd_major("v2.1.9"), Some(2));
    assert_eq!(containerd::containerd_major("junk"), None);
}

#[test]
fn a_node_without_kvm_cgroup2_or_tun_fails_each_check_with_its_reason() {
    let root = tempfile::tempdir().expect("tempdir");
    let checks = super::check::run(root.path());
    let names: Vec<_> = checks.iter().map(|c| c.name).collect();
    assert_eq!(names, ["kvm", "cgroup2", "tun"]);
    for c in &checks {
        assert!(!c.ok, "{}: {}", c.name, c.detail);
    }
    assert!(checks[0].detail.contains("dev/kvm"), "{}", checks[0].detail);
    assert!(
        checks[2].detail.contains("modprobe tun"),
        "{}",
        checks[2].detail
    );
}
