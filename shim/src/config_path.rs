//! Which `hull.toml` a shim reads (DESIGN §3): the runtime options' `ConfigPath`, then
//! `$HULL_CONFIG`, then `/etc/hull/hull.toml`, then the installed default.
//!
//! An explicitly named file that is missing is an error, not a reason to fall through: an
//! operator who points at a file and gets another one's settings has a silent misconfiguration.

use std::path::{Path, PathBuf};

/// The system-wide configuration file.
pub(crate) const SYSTEM_CONFIG: &str = "/etc/hull/hull.toml";
/// The default shipped by `make install`.
pub(crate) const INSTALLED_DEFAULT: &str = "/usr/local/share/hull/hull.toml";

/// A configuration file that was named but cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigPathError {
    #[error("hull config {path} (from {origin}) does not exist")]
    Missing { path: PathBuf, origin: &'static str },
    #[error("no hull config: none of {SYSTEM_CONFIG} or {INSTALLED_DEFAULT} exists")]
    NoneFound,
}

/// Inputs of the search, so that tests need not touch the real environment.
#[derive(Debug, Clone, Default)]
pub(crate) struct ConfigSources<'a> {
    /// `ConfigPath` from containerd's runtime options.
    pub(crate) runtime_option: Option<&'a Path>,
    /// The value of `$HULL_CONFIG`.
    pub(crate) env: Option<&'a Path>,
    /// The fall-backs, in order; [`SYSTEM_CONFIG`] then [`INSTALLED_DEFAULT`] in production.
    pub(crate) fallbacks: &'a [&'a Path],
}

/// Picks the configuration file to read.
pub(crate) fn resolve(sources: &ConfigSources<'_>) -> Result<PathBuf, ConfigPathError> {
    let named = [
        (sources.runtime_option, "runtime option ConfigPath"),
        (sources.env, "$HULL_CONFIG"),
    ];
    for (path, origin) in named {
        if let Some(path) = path.filter(|p| !p.as_os_str().is_empty()) {
            return if path.is_file() {
                Ok(path.to_path_buf())
            } else {
                Err(ConfigPathError::Missing {
                    path: path.to_path_buf(),
                    origin,
                })
            };
        }
    }
    sources
        .fallbacks
        .iter()
        .find(|p| p.is_file())
        .map(|p| p.to_path_buf())
        .ok_or(ConfigPathError::NoneFound)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn explicit_sources_win_in_order_then_fallbacks() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = |name: &str| {
            let p = dir.path().join(name);
            std::fs::write(&p, "").expect("write");
            p
        };
        let (opt, env, sys, dflt) = (file("opt"), file("env"), file("sys"), file("default"));
        let absent = dir.path().join("absent");
        let fallbacks: [&Path; 2] = [&sys, &dflt];

        let mut s = ConfigSources {
            runtime_option: Some(&opt),
            env: Some(&env),
            fallbacks: &fallbacks,
        };
        assert_eq!(resolve(&s), Ok(opt.clone()));
        s.runtime_option = None;
        assert_eq!(resolve(&s), Ok(env.clone()));
        s.env = Some(Path::new("")); // an empty variable is as good as unset
        assert_eq!(resolve(&s), Ok(sys.clone()));
        let only_default: [&Path; 2] = [&absent, &dflt];
        s.fallbacks = &only_default;
        assert_eq!(resolve(&s), Ok(dflt.clone()));
        let nothing: [&Path; 1] = [&absent];
        s.fallbacks = &nothing;
        assert_eq!(resolve(&s), Err(ConfigPathError::NoneFound));
    }

    #[test]
    fn a_named_missing_file_is_an_error_not_a_fallthrough() {
        let dir = tempfile::tempdir().expect("tempdir");
        let sys = dir.path().join("sys");
        std::fs::write(&sys, "").expect("write");
        let missing = dir.path().join("missing.toml");
        let fallbacks: [&Path; 1] = [&sys];
        let s = ConfigSources {
            runtime_option: None,
            env: Some(&missing),
            fallbacks: &fallbacks,
        };
        let err = resolve(&s).expect_err("missing named file");
        assert_eq!(
            err,
            ConfigPathError::Missing {
                path: missing,
                origin: "$HULL_CONFIG"
            }
        );
        assert!(err.to_string().contains("$HULL_CONFIG"));
    }
}
