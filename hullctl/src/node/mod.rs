//! `hullctl node …`: what the node-side installer (deploy/kubernetes) does to a node, one
//! step per command so that a script can order them and a test can check each: `check` (can
//! this node run hull pods?), `containerd-add` and `containerd-remove` (the runtime in
//! containerd's configuration, undone byte for byte).

mod check;
pub(crate) mod containerd;

use std::path::PathBuf;

use clap::Subcommand;

#[derive(Debug, Subcommand)]
pub(crate) enum NodeCmd {
    /// Can this node run hull pods: /dev/kvm usable by an unprivileged hull-vmm for a Linux
    /// guest, cgroup v2, TUN. Prints one line per check; exits 1 if one fails.
    Check {
        /// Where the node's `/` is (a DaemonSet's host mount).
        #[arg(long, default_value = "/")]
        root: PathBuf,
    },
    /// Add the hull runtime to containerd's configuration (idempotent); prints `changed=`
    /// (restart containerd when true) and `mode=` (edit: version 2 tables appended; import:
    /// a version 3 drop-in in `imports`).
    ContainerdAdd {
        #[command(flatten)]
        at: ConfigAt,
        /// The hull.toml the runtime's ConfigPath names, as the node sees it.
        #[arg(long, default_value = "/etc/hull/hull.toml")]
        hull_config: String,
        /// The version of the node's containerd (`containerd --version`), which picks the
        /// config version of a new file and refuses version 3 for 1.x.
        #[arg(long)]
        containerd_version: String,
    },
    /// Take the hull runtime out of containerd's configuration: the file as it was before
    /// `containerd-add` if nobody changed it since, else only hull's part removed.
    ContainerdRemove {
        #[command(flatten)]
        at: ConfigAt,
    },
}

/// Where containerd's configuration and hull's undo state are, as the node sees them.
#[derive(Debug, clap::Args)]
pub(crate) struct ConfigAt {
    /// Where the node's `/` is (a DaemonSet's host mount); the other paths are the node's.
    #[arg(long, default_value = "/")]
    root: PathBuf,
    #[arg(long, default_value = "/etc/containerd/config.toml")]
    config: PathBuf,
    /// The drop-in a version 3 file imports.
    #[arg(long, default_value = "/etc/containerd/conf.d/hull.toml")]
    drop_in: PathBuf,
    /// Directory of the undo state.
    #[arg(long, default_value = "/var/lib/hull/installer")]
    state: PathBuf,
}

impl ConfigAt {
    fn paths(&self) -> containerd::Paths {
        containerd::Paths {
            root: self.root.clone(),
            config: self.config.clone(),
            drop_in: self.drop_in.clone(),
            state: self.state.clone(),
        }
    }
}

fn report(o: &containerd::Outcome) {
    for n in &o.notes {
        eprintln!("hullctl: {n}");
    }
    let mode = match o.mode {
        Some(containerd::Mode::Edit) => "edit",
        Some(containerd::Mode::Import) => "import",
        None => "none",
    };
    println!("changed={}\nmode={mode}", o.changed);
}

/// Runs a `hullctl node` command; returns the exit code.
pub(crate) fn run(cmd: &NodeCmd) -> anyhow::Result<i32> {
    match cmd {
        NodeCmd::Check { root } => {
            let checks = check::run(root);
            for c in &checks {
                let verdict = if c.ok { "ok" } else { "FAIL" };
                println!("{verdict} {}: {}", c.name, c.detail);
            }
            Ok(if checks.iter().all(|c| c.ok) { 0 } else { 1 })
        }
        NodeCmd::ContainerdAdd {
            at,
            hull_config,
            containerd_version,
        } => {
            report(&containerd::add(
                &at.paths(),
                containerd_version,
                hull_config,
            )?);
            Ok(0)
        }
        NodeCmd::ContainerdRemove { at } => {
            report(&containerd::remove(&at.paths())?);
            Ok(0)
        }
    }
}

#[cfg(test)]
mod tests;
