//! The runtime options containerd passes on `start` (an `Any` on stdin) and the `hull.toml`
//! they lead to (DESIGN §3): `ConfigPath`, then `$HULL_CONFIG`, then the fall-backs.
//!
//! The Any's wire type stops here: the rest of the shim sees only a path and a [`HullConfig`].

use std::path::{Path, PathBuf};

use containerd_shim::protos::protobuf::well_known_types::any::Any;
use containerd_shim::protos::protobuf::Message;
use hull_proto::runtimeoptions::Options;

use crate::config::{ConfigError, HullConfig};
use crate::config_path::{self, ConfigPathError, ConfigSources, INSTALLED_DEFAULT, SYSTEM_CONFIG};
use crate::typeurl;

#[derive(Debug, thiserror::Error)]
pub enum OptionsError {
    #[error("runtime options: cannot decode {type_url}: {source}")]
    Decode {
        type_url: String,
        source: protobuf::Error,
    },
    #[error(transparent)]
    Path(#[from] ConfigPathError),
    #[error(transparent)]
    Config(#[from] ConfigError),
}

/// `ConfigPath` from the runtime options containerd wrote on stdin, if any. Other option
/// types (e.g. runc's, when a runtime entry is misconfigured) are ignored: they carry no path.
pub(crate) fn config_path_option(stdin: &[u8]) -> Result<Option<PathBuf>, OptionsError> {
    if stdin.is_empty() {
        return Ok(None);
    }
    // containerd 1.6 writes a bare Any; anything else on stdin is not runtime options.
    let Ok(any) = Any::parse_from_bytes(stdin) else {
        return Ok(None);
    };
    if !typeurl::is::<Options>(typeurl::RUNTIME_OPTIONS, &any.type_url) {
        return Ok(None);
    }
    let opts = Options::parse_from_bytes(&any.value).map_err(|source| OptionsError::Decode {
        type_url: any.type_url.clone(),
        source,
    })?;
    Ok(Some(opts.config_path)
        .filter(|p| !p.is_empty())
        .map(PathBuf::from))
}

/// Resolves and loads `hull.toml` given the runtime option and `$HULL_CONFIG`.
pub(crate) fn load_config(
    option: Option<&Path>,
    env: Option<&Path>,
) -> Result<(PathBuf, HullConfig), OptionsError> {
    let fallbacks: [&Path; 2] = [Path::new(SYSTEM_CONFIG), Path::new(INSTALLED_DEFAULT)];
    let path = config_path::resolve(&ConfigSources {
        runtime_option: option,
        env,
        fallbacks: &fallbacks,
    })?;
    let cfg = HullConfig::load(&path)?;
    Ok((path, cfg))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn any_of(opts: &Options, type_url: &str) -> Vec<u8> {
        let any = Any {
            type_url: type_url.into(),
            value: opts.write_to_bytes().expect("encode"),
            ..Default::default()
        };
        any.write_to_bytes().expect("encode any")
    }

    #[test]
    fn config_path_from_containerd_runtime_options() {
        let opts = Options {
            config_path: "/etc/hull/test.toml".into(),
            ..Default::default()
        };
        // What containerd 1.6.20 wrote for `ctr run --runtime-config-path` (50 bytes).
        let bytes = any_of(&opts, "runtimeoptions.v1.Options");
        assert_eq!(
            config_path_option(&bytes).expect("decode"),
            Some(PathBuf::from("/etc/hull/test.toml"))
        );
        let bytes = any_of(&opts, "type.googleapis.com/runtimeoptions.v1.Options");
        assert!(config_path_option(&bytes).expect("decode").is_some());
        // Other option types, nothing, or garbage: no path, no error.
        assert_eq!(
            config_path_option(&any_of(&opts, "containerd.runc.v1.Options")).expect("ok"),
            None
        );
        assert_eq!(config_path_option(b"").expect("ok"), None);
        assert_eq!(config_path_option(&[0xff, 0xff, 0xff]).expect("ok"), None);
        let empty = any_of(&Options::default(), "runtimeoptions.v1.Options");
        assert_eq!(config_path_option(&empty).expect("ok"), None);
    }
}
