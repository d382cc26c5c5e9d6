//! The OCI spec conversion as the fuzz targets (`fuzz/`, built with `--cfg fuzzing`) drive
//! it: the same steps CreateContainer, ExecProcess and UpdateContainer take from JSON to the
//! plan the init helper runs, without launching anything. The engine stays `pub(crate)`.

use crate::engine::plan::InitPlan;
use crate::engine::{devices, spec};

/// CreateContainer's conversion: spec JSON → namespaces → init plan, then the plan through
/// the one-line JSON encoding that carries it to the init helper (launch.rs, init/mod.rs).
/// `Err` is the engine's refusal (INVALID_ARGUMENT and friends), as its message.
pub fn create(spec_json: &[u8], terminal: bool, host_mode: bool) -> Result<(), String> {
    let spec = spec::parse_spec(spec_json).map_err(|e| e.to_string())?;
    let ns = spec::namespaces(&spec).map_err(|e| e.to_string())?;
    let plan = spec::create_plan(&spec, &ns, terminal, host_mode).map_err(|e| e.to_string())?;
    let line = serde_json::to_string(&plan).expect("a plan always encodes");
    assert!(!line.contains('\n'), "the plan must stay one line");
    let back: InitPlan = serde_json::from_str(&line).expect("the init helper decodes the plan");
    assert_eq!(
        serde_json::to_string(&back).expect("encodes"),
        line,
        "the plan survives the trip"
    );
    Ok(())
}

/// ExecProcess's conversion: process JSON → process plan (no seccomp of its container).
pub fn exec(process_json: &[u8]) -> Result<(), String> {
    let p = spec::parse_process(process_json).map_err(|e| e.to_string())?;
    spec::process_plan(&p, Vec::new()).map_err(|e| e.to_string())?;
    Ok(())
}

/// UpdateContainer's conversion of resources, up to the device cgroup program it attaches.
pub fn update(resources_json: &[u8]) -> Result<(), String> {
    let r = spec::parse_resources(resources_json).map_err(|e| e.to_string())?;
    let rules = r.devices().clone().unwrap_or_default();
    devices::program(&rules).map_err(|e| e.to_string())?;
    Ok(())
}
