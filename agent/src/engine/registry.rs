//! The table of containers and their processes, owned by one task. Ids are reserved before
//! the slow work of a create or exec and committed or released afterwards, so two concurrent
//! requests for one id cannot both proceed.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};

use tokio::sync::{mpsc, oneshot};

use super::cgroup::Cgroup;
use super::error::{EngineError, Result};
use super::process::Process;
use super::seccomp::Program;
use super::spec::Namespaces;
use super::sync_socket::SyncSocket;

/// A container: its cgroup, init process and what exec needs to join it.
#[derive(Debug)]
pub(crate) struct Container {
    pub(crate) id: String,
    pub(crate) cgroup: Cgroup,
    pub(crate) init: Arc<Process>,
    pub(crate) namespaces: Namespaces,
    pub(crate) seccomp: Vec<Program>,
    /// The sync socket of the init process until Start takes it.
    pub(crate) start_sync: Mutex<Option<SyncSocket>>,
    pub(crate) started: AtomicBool,
    /// Storages mounted for this container, unmounted on remove (in reverse).
    pub(crate) storages: Vec<PathBuf>,
    /// Stops the OOM watcher when dropped.
    pub(crate) oom_stop: Mutex<Option<oneshot::Sender<()>>>,
}

#[derive(Debug, Default)]
struct Entry {
    container: Option<Arc<Container>>,
    /// exec id -> process (None = reserved).
    execs: HashMap<String, Option<Arc<Process>>>,
}

enum Cmd {
    Reserve(String, oneshot::Sender<Result<()>>),
    Commit(Arc<Container>),
    Release(String),
    Get(String, oneshot::Sender<Option<Arc<Container>>>),
    ReserveExec(String, String, oneshot::Sender<Result<()>>),
    CommitExec(String, String, Arc<Process>),
    ReleaseExec(String, String),
    GetProcess(String, String, oneshot::Sender<Result<Arc<Process>>>),
    Execs(String, oneshot::Sender<Result<Vec<Arc<Process>>>>),
    Remove(String),
    List(oneshot::Sender<Vec<Arc<Container>>>),
}

/// Handle to the registry task.
#[derive(Debug, Clone)]
pub(crate) struct Registry {
    tx: mpsc::UnboundedSender<Cmd>,
}

impl std::fmt::Debug for Cmd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("registry command")
    }
}

fn not_found(id: &str) -> EngineError {
    EngineError::NotFound(format!("container {id:?} not found"))
}

#[allow(clippy::map_entry)] // the reply is decided before the insert
async fn run(mut rx: mpsc::UnboundedReceiver<Cmd>) {
    {
        let mut table: HashMap<String, Entry> = HashMap::new();
        while let Some(cmd) = rx.recv().await {
            match cmd {
                Cmd::Reserve(id, reply) => {
                    let r = if table.contains_key(&id) {
                        Err(EngineError::AlreadyExists(format!(
                            "container {id:?} already exists"
                        )))
                    } else {
                        table.insert(id, Entry::default());
                        Ok(())
                    };
                    let _ = reply.send(r);
                }
                Cmd::Commit(c) => {
                    let id = c.id.clone();
                    table.entry(id).or_default().container = Some(c);
                }
                Cmd::Release(id) | Cmd::Remove(id) => {
                    table.remove(&id);
                }
                Cmd::Get(id, reply) => {
                    let _ = reply.send(table.get(&id).and_then(|e| e.container.clone()));
                }
                Cmd::ReserveExec(id, exec, reply) => {
                    let r = match table.get_mut(&id) {
                        Some(Entry {
                            container: Some(c),
                            execs,
                        }) => {
                            if execs.contains_key(&exec) || exec == c.init.exec_id {
                                Err(EngineError::AlreadyExists(format!(
                                    "process {exec:?} already exists in container {id:?}"
                                )))
                            } else {
                                execs.insert(exec, None);
                                Ok(())
                            }
                        }
                        _ => Err(not_found(&id)),
                    };
                    let _ = reply.send(r);
                }
                Cmd::CommitExec(id, exec, p) => {
                    if let Some(e) = table.get_mut(&id) {
                        e.execs.insert(exec, Some(p));
                    }
                }
                Cmd::ReleaseExec(id, exec) => {
                    if let Some(e) = table.get_mut(&id) {
                        e.execs.remove(&exec);
                    }
                }
                Cmd::GetProcess(id, exec, reply) => {
                    let r = match table.get(&id) {
                        Some(Entry {
                            container: Some(c),
                            execs,
                        }) => {
                            if exec.is_empty() || exec == c.init.exec_id {
                                Ok(c.init.clone())
                            } else {
                                execs.get(&exec).cloned().flatten().ok_or_else(|| {
                                    EngineError::NotFound(format!(
                                        "process {exec:?} not found in container {id:?}"
                                    ))
                                })
                            }
                        }
                        _ => Err(not_found(&id)),
                    };
                    let _ = reply.send(r);
                }
                Cmd::Execs(id, reply) => {
                    let r = match table.get(&id) {
                        Some(Entry {
                            container: Some(_),
                            execs,
                        }) => Ok(execs.values().flatten().cloned().collect()),
                        _ => Err(not_found(&id)),
                    };
                    let _ = reply.send(r);
                }
                Cmd::List(reply) => {
                    let _ =
                        reply.send(table.values().filter_map(|e| e.container.clone()).collect());
                }
            }
        }
    }
}

impl Registry {
    pub(crate) fn spawn() -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(rx));
        Registry { tx }
    }

    async fn ask<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Cmd) -> Result<T> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(make(tx))
            .map_err(|_| EngineError::Internal("container registry stopped".into()))?;
        rx.await
            .map_err(|_| EngineError::Internal("container registry stopped".into()))
    }

    fn tell(&self, cmd: Cmd) {
        let _ = self.tx.send(cmd);
    }

    pub(crate) async fn reserve(&self, id: &str) -> Result<()> {
        self.ask(|tx| Cmd::Reserve(id.to_owned(), tx)).await?
    }
    pub(crate) fn commit(&self, c: Arc<Container>) {
        self.tell(Cmd::Commit(c));
    }
    pub(crate) fn release(&self, id: &str) {
        self.tell(Cmd::Release(id.to_owned()));
    }
    pub(crate) async fn get(&self, id: &str) -> Result<Arc<Container>> {
        self.ask(|tx| Cmd::Get(id.to_owned(), tx))
            .await?
            .ok_or_else(|| not_found(id))
    }
    pub(crate) async fn reserve_exec(&self, id: &str, exec: &str) -> Result<()> {
        self.ask(|tx| Cmd::ReserveExec(id.to_owned(), exec.to_owned(), tx))
            .await?
    }
    pub(crate) fn commit_exec(&self, id: &str, exec: &str, p: Arc<Process>) {
        self.tell(Cmd::CommitExec(id.to_owned(), exec.to_owned(), p));
    }
    pub(crate) fn release_exec(&self, id: &str, exec: &str) {
        self.tell(Cmd::ReleaseExec(id.to_owned(), exec.to_owned()));
    }
    pub(crate) async fn process(&self, id: &str, exec: &str) -> Result<Arc<Process>> {
        self.ask(|tx| Cmd::GetProcess(id.to_owned(), exec.to_owned(), tx))
            .await?
    }
    /// The exec processes of container `id` (not its init), exited ones included.
    pub(crate) async fn execs(&self, id: &str) -> Result<Vec<Arc<Process>>> {
        self.ask(|tx| Cmd::Execs(id.to_owned(), tx)).await?
    }
    pub(crate) async fn remove(&self, id: &str) -> Result<()> {
        self.tell(Cmd::Remove(id.to_owned()));
        Ok(())
    }
    pub(crate) async fn list(&self) -> Vec<Arc<Container>> {
        self.ask(Cmd::List).await.unwrap_or_default()
    }
}
