//! `start`: pick the pod shim for this task and print its address, bare, on stdout.
//!
//! containerd 1.6 reads `CombinedOutput`, so nothing may reach stderr on success: no logging
//! here. A container of an existing pod (CRI `container-type=container`) joins that pod's
//! shim; anything else forks a new server through the crate's `spawn`, grouped by sandbox id.

use std::io::{Read, Write};
use std::path::Path;
use std::time::Duration;

use containerd_shim::{Flags, StartOpts};
use serde_json::Value;

use crate::address::socket_path;

use super::{io_err, shim_err, BootstrapError, CONFIG_OPTION_ENV, SANDBOX_FILE, SANDBOX_ID_ENV};

const CONTAINER_TYPE: &str = "io.kubernetes.cri.container-type";
const SANDBOX_ID: &str = "io.kubernetes.cri.sandbox-id";

/// The pod a task belongs to and whether it is the one that starts the pod.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Grouping {
    pub(crate) sandbox_id: String,
    pub(crate) joins: bool,
}

pub(crate) fn grouping(id: &str, spec: &Value) -> Grouping {
    let ann = &spec["annotations"];
    let sid = ann[SANDBOX_ID].as_str().filter(|s| !s.is_empty());
    let is_container = ann[CONTAINER_TYPE].as_str() == Some("container");
    Grouping {
        sandbox_id: sid.unwrap_or(id).to_owned(),
        joins: is_container && sid.is_some_and(|s| s != id),
    }
}

pub(crate) async fn run(flags: Flags) -> Result<(), BootstrapError> {
    let bundle = super::bundle_dir(&flags)?;
    let mut stdin = Vec::new();
    std::io::stdin()
        .read_to_end(&mut stdin)
        .map_err(io_err("read runtime options from stdin"))?;
    let option = crate::options::config_path_option(&stdin)?;
    let env = std::env::var_os("HULL_CONFIG").map(std::path::PathBuf::from);
    // Load now so a bad hull.toml fails `start` with its own message, which ctr prints.
    let (config_path, _cfg) = crate::options::load_config(option.as_deref(), env.as_deref())?;

    let spec_path = bundle.join("config.json");
    let spec: Value = std::fs::read(&spec_path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or(Value::Null);
    let g = grouping(&flags.id, &spec);
    let opts = StartOpts {
        id: flags.id.clone(),
        publish_binary: flags.publish_binary.clone(),
        address: flags.address.clone(),
        ttrpc_address: std::env::var("TTRPC_ADDRESS")
            .map_err(|_| BootstrapError::Env("TTRPC_ADDRESS"))?,
        namespace: flags.namespace.clone(),
        debug: flags.debug,
        ..Default::default()
    };
    let address = if g.joins {
        let address = opts.socket_address(&g.sandbox_id);
        if !answers(&address).await {
            return Err(BootstrapError::NoPodShim {
                sid: g.sandbox_id,
                address,
            });
        }
        address
    } else {
        let config = config_path.display().to_string();
        let vars = vec![
            (CONFIG_OPTION_ENV, config.as_str()),
            (SANDBOX_ID_ENV, g.sandbox_id.as_str()),
        ];
        containerd_shim::spawn(opts, &g.sandbox_id, vars)
            .await
            .map_err(shim_err("spawn the shim server"))?
    };
    write_file(&bundle.join("address"), &address)?;
    write_file(&bundle.join(SANDBOX_FILE), &g.sandbox_id)?;
    let mut out = std::io::stdout().lock();
    out.write_all(address.as_bytes())
        .and_then(|()| out.flush())
        .map_err(io_err("write the address"))
}

fn write_file(path: &Path, text: &str) -> Result<(), BootstrapError> {
    std::fs::write(path, text).map_err(io_err(format!("write {}", path.display())))
}

/// Whether a shim listens at `address` (`unix://PATH`).
pub(crate) async fn answers(address: &str) -> bool {
    let path = socket_path(address);
    tokio::time::timeout(
        Duration::from_secs(2),
        tokio::net::UnixStream::connect(path),
    )
    .await
    .is_ok_and(|r| r.is_ok())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn grouping_by_cri_sandbox_id() {
        let lone = grouping("c1", &json!({}));
        assert_eq!(
            lone,
            Grouping {
                sandbox_id: "c1".into(),
                joins: false
            }
        );
        let sandbox = json!({"annotations": {CONTAINER_TYPE: "sandbox", SANDBOX_ID: "s1"}});
        assert_eq!(
            grouping("s1", &sandbox),
            Grouping {
                sandbox_id: "s1".into(),
                joins: false
            }
        );
        let member = json!({"annotations": {CONTAINER_TYPE: "container", SANDBOX_ID: "s1"}});
        assert_eq!(
            grouping("c2", &member),
            Grouping {
                sandbox_id: "s1".into(),
                joins: true
            }
        );
    }
}
