//! The bundle's OCI spec, rewritten for the agent. In host-agent mode the agent sees the host
//! filesystem, so the rootfs stays the bundle's; what the agent places itself (cgroups) or
//! must never run (host hooks) is dropped. The VM rewrite (plan §3) extends this.

use std::path::Path;

use serde_json::Value;

use crate::errors::ShimError;

/// Reads `<bundle>/config.json` and returns the JSON the agent gets.
pub fn for_host_agent(bundle: &Path, rootfs: &Path) -> Result<Vec<u8>, ShimError> {
    let path = bundle.join("config.json");
    let text = std::fs::read(&path).map_err(|source| ShimError::Io {
        context: format!("read {}", path.display()),
        source,
    })?;
    let mut spec: Value = serde_json::from_slice(&text)
        .map_err(|e| ShimError::InvalidArgument(format!("{}: {e}", path.display())))?;
    rewrite(&mut spec, rootfs)?;
    serde_json::to_vec(&spec).map_err(|e| ShimError::InvalidArgument(e.to_string()))
}

fn rewrite(spec: &mut Value, rootfs: &Path) -> Result<(), ShimError> {
    let obj = spec
        .as_object_mut()
        .ok_or_else(|| ShimError::InvalidArgument("OCI spec is not a JSON object".into()))?;
    // containerd writes a relative "rootfs"; the agent runs elsewhere.
    let root = obj
        .entry("root")
        .or_insert_with(|| Value::Object(Default::default()));
    root["path"] = Value::String(rootfs.display().to_string());
    // Hooks are host binaries: a guest agent must never run them.
    obj.remove("hooks");
    if let Some(linux) = obj.get_mut("linux").and_then(Value::as_object_mut) {
        // The agent places container cgroups under its own parent.
        linux.remove("cgroupsPath");
        // Host mode only: a hybrid (v1) host's cgroup v2 tree has no cpu/memory controllers
        // to enforce limits with, and host-mode pods are test fixtures. A VM enforces them.
        linux.remove("resources");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn rootfs_is_absolute_and_host_only_parts_are_dropped() {
        let mut s = json!({
            "root": {"path": "rootfs", "readonly": false},
            "hooks": {"createRuntime": [{"path": "/bin/true"}]},
            "linux": {"cgroupsPath": "/default/c1", "resources": {"cpu": {"shares": 2}}, "namespaces": [{"type": "pid"}]}
        });
        rewrite(&mut s, Path::new("/b/rootfs")).expect("rewrite");
        assert_eq!(s["root"], json!({"path": "/b/rootfs", "readonly": false}));
        assert!(s.get("hooks").is_none());
        assert_eq!(s["linux"], json!({"namespaces": [{"type": "pid"}]}));
        assert!(rewrite(&mut json!([1]), Path::new("/r")).is_err());
    }
}
