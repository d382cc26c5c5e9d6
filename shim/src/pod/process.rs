//! One process of a container as containerd sees it: the init process (exec id "") or an
//! exec. It owns its stdio and the watch that Wait, State and Delete read its exit from; the
//! agent owns the process itself.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::SystemTime;

use tokio::sync::watch;

use crate::stdio::{Stdio, StdioPaths};

/// When and how a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Exit {
    pub(crate) status: u32,
    pub(crate) at: SystemTime,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ProcStatus {
    Created,
    Running,
    Paused,
    Stopped,
}

/// A snapshot of one process for State/Connect/Delete.
#[derive(Debug, Clone)]
pub(crate) struct ProcInfo {
    /// The container's id for its init process, else the exec id.
    pub(crate) id: String,
    pub(crate) exec_id: String,
    pub(crate) bundle: PathBuf,
    pub(crate) pid: u32,
    pub(crate) status: ProcStatus,
    pub(crate) stdio: StdioPaths,
    pub(crate) exit: Option<Exit>,
}

pub(super) struct Process {
    pub(crate) pid: u32,
    pub(crate) stdio: StdioPaths,
    /// The init process's is opened at Create, an exec's at its Start.
    pub(crate) io: Option<Arc<Stdio>>,
    /// An exec's OCI Process as JSON until Start sends it to the agent.
    pub(crate) spec: Vec<u8>,
    pub(crate) started: bool,
    pub(crate) exit: watch::Receiver<Option<Exit>>,
    /// Taken by Start, handed to the task that reports the exit.
    pub(crate) exit_tx: Option<watch::Sender<Option<Exit>>>,
}

impl std::fmt::Debug for Process {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Process")
            .field("pid", &self.pid)
            .field("started", &self.started)
            .finish_non_exhaustive()
    }
}

impl Process {
    pub(crate) fn new(pid: u32, stdio: StdioPaths, io: Option<Arc<Stdio>>, spec: Vec<u8>) -> Self {
        let (tx, rx) = watch::channel(None);
        Process {
            pid,
            stdio,
            io,
            spec,
            started: false,
            exit: rx,
            exit_tx: Some(tx),
        }
    }

    pub(crate) fn exit(&self) -> Option<Exit> {
        *self.exit.borrow()
    }

    pub(crate) fn status(&self, container_paused: bool) -> ProcStatus {
        match (self.exit(), self.started) {
            (Some(_), _) => ProcStatus::Stopped,
            (None, true) if container_paused => ProcStatus::Paused,
            (None, true) => ProcStatus::Running,
            (None, false) => ProcStatus::Created,
        }
    }
}

/// A container: its bundle, its init process and its execs.
#[derive(Debug)]
pub(super) struct Container {
    pub(crate) bundle: PathBuf,
    pub(crate) paused: bool,
    pub(crate) init: Process,
    pub(crate) execs: std::collections::HashMap<String, Process>,
}

impl Container {
    pub(crate) fn process(&self, exec_id: &str) -> Option<&Process> {
        if exec_id.is_empty() {
            Some(&self.init)
        } else {
            self.execs.get(exec_id)
        }
    }

    pub(crate) fn process_mut(&mut self, exec_id: &str) -> Option<&mut Process> {
        if exec_id.is_empty() {
            Some(&mut self.init)
        } else {
            self.execs.get_mut(exec_id)
        }
    }

    pub(crate) fn info(&self, id: &str, exec_id: &str) -> Option<ProcInfo> {
        let p = self.process(exec_id)?;
        Some(ProcInfo {
            id: if exec_id.is_empty() { id } else { exec_id }.to_owned(),
            exec_id: exec_id.to_owned(),
            bundle: self.bundle.clone(),
            pid: p.pid,
            status: p.status(self.paused),
            stdio: p.stdio.clone(),
            exit: p.exit(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_follows_start_exit_and_pause() {
        let mut p = Process::new(7, StdioPaths::default(), None, Vec::new());
        assert_eq!(p.status(false), ProcStatus::Created);
        assert_eq!(p.status(true), ProcStatus::Created);
        p.started = true;
        assert_eq!(p.status(false), ProcStatus::Running);
        assert_eq!(p.status(true), ProcStatus::Paused);
        let tx = p.exit_tx.take().expect("sender");
        let exit = Exit {
            status: 137,
            at: SystemTime::now(),
        };
        tx.send(Some(exit)).expect("send");
        assert_eq!(p.status(true), ProcStatus::Stopped);
        assert_eq!(p.exit(), Some(exit));
    }

    #[test]
    fn exec_ids_address_execs_and_empty_the_init() {
        let mut c = Container {
            bundle: "/b".into(),
            paused: false,
            init: Process::new(1, StdioPaths::default(), None, Vec::new()),
            execs: Default::default(),
        };
        c.execs.insert(
            "e1".into(),
            Process::new(2, StdioPaths::default(), None, b"{}".to_vec()),
        );
        assert_eq!(c.info("c", "").expect("init").id, "c");
        let e = c.info("c", "e1").expect("exec");
        assert_eq!((e.id.as_str(), e.exec_id.as_str(), e.pid), ("e1", "e1", 2));
        assert!(c.info("c", "nope").is_none());
        assert!(c.process_mut("e1").is_some());
    }
}
