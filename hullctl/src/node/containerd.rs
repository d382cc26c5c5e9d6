//! Adds the hull runtime to a node's containerd configuration, and takes it out again.
//!
//! Two ways in, chosen by the file's config `version` (deploy/containerd says why):
//! - version 2 (containerd 1.6 and 1.7; 2.x reads it too): the runtime's tables of
//!   `deploy/containerd/hull.toml` are appended to the file between two marker lines. Not
//!   through `imports`: 1.6 and 1.7 replace a plugin's whole table with an imported file's, so
//!   the node's own CRI settings would be lost;
//! - version 3 (containerd 2.x): `deploy/containerd/hull-v3.toml` is written as a drop-in file
//!   and its path added to the file's `imports` (2.x merges imports table by table).
//!
//! A file without `version` but with settings is version 1, which hull does not edit. A missing
//! or empty file gets the version of the containerd that reads it.
//!
//! Undo is byte for byte: the state directory keeps the file as it was before and as hull left
//! it; while the file is still what hull left, removing restores what was there (or removes
//! the file hull created). A file edited by someone since keeps their edits: only hull's block
//! or import entry is taken out. Adding again is idempotent, and after an upgrade rewrites
//! hull's part from the original, so the runtime's tables are always the current ones.

use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// The runtime tables of each config version; their one home is deploy/containerd, which an
/// operator installing by hand copies from.
const RUNTIME_V2: &str = include_str!("../../../deploy/containerd/hull.toml");
const RUNTIME_V3: &str = include_str!("../../../deploy/containerd/hull-v3.toml");
/// The hull.toml path the deploy files name, replaced by the installation's.
const DEPLOY_HULL_TOML: &str = "/etc/hull/hull.toml";
/// The lines around hull's block in a version 2 file.
const BEGIN: &str =
    "# BEGIN hull runtime: added by `hullctl node containerd-add`, removed by containerd-remove";
const END: &str = "# END hull runtime";
/// The runtime's name (the CRI handler, RuntimeClass `handler: hull`).
const HANDLER: &str = "hull";
const CRI_V2: &str = "io.containerd.grpc.v1.cri";
const CRI_V3: &str = "io.containerd.cri.v1.runtime";

/// Errors of the containerd configuration edit.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConfigError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not valid TOML: {message}")]
    Parse { path: PathBuf, message: String },
    #[error(
        "{0} has settings but no `version`: config version 1, which hull does not edit \
         (`containerd config migrate` writes the current version)"
    )]
    VersionOne(PathBuf),
    #[error("{path}: config version {version} is not one hull knows (2 or 3)")]
    UnknownVersion { path: PathBuf, version: i64 },
    #[error("{path} is config version 3, which containerd {containerd} cannot read")]
    TooNew { path: PathBuf, containerd: String },
    #[error(
        "{0} already defines a runtime named `hull` outside hull's own block: remove it first \
         (hull never overwrites an operator's table)"
    )]
    ForeignRuntime(PathBuf),
    #[error("{0}: `imports` is not an array of strings")]
    BadImports(PathBuf),
    #[error("the hull.toml path {0:?} must be absolute, without quotes, backslashes or newlines")]
    BadHullConfig(String),
    #[error("the state file {path}: {message}")]
    State { path: PathBuf, message: String },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> ConfigError + '_ {
    move |source| ConfigError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Where things are. `root` prefixes every file access (a DaemonSet sees the node's `/` at
/// `/host`); the paths themselves are the node's, as containerd reads them.
#[derive(Debug, Clone)]
pub(crate) struct Paths {
    pub(crate) root: PathBuf,
    /// containerd's main file, e.g. /etc/containerd/config.toml.
    pub(crate) config: PathBuf,
    /// The drop-in a version 3 file imports.
    pub(crate) drop_in: PathBuf,
    /// Directory of the undo state.
    pub(crate) state: PathBuf,
}

impl Paths {
    fn on_node(&self, p: &Path) -> PathBuf {
        self.root.join(p.strip_prefix("/").unwrap_or(p))
    }
    fn state_file(&self, name: &str) -> PathBuf {
        self.on_node(&self.state.join(name))
    }
}

/// How hull got into the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Mode {
    /// Version 2: hull's block appended.
    Edit,
    /// Version 3: a drop-in in `imports`.
    Import,
}

/// What the state directory records of an installation. The config file's path is not in
/// it: every command is given it (a record written with one still reads: serde skips the
/// field).
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Record {
    mode: Mode,
    drop_in: PathBuf,
    /// The file did not exist before hull wrote it.
    created: bool,
}

const RECORD: &str = "containerd-config.json";
const ORIGINAL: &str = "containerd-config.orig";
const INSTALLED: &str = "containerd-config.installed";

/// What an add or a remove did.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Outcome {
    pub(crate) mode: Option<Mode>,
    /// Whether containerd's configuration changed (containerd must restart to see it).
    pub(crate) changed: bool,
    /// Said to the operator, e.g. that their later edits were kept.
    pub(crate) notes: Vec<String>,
}

fn read_opt(path: &Path) -> Result<Option<String>, ConfigError> {
    match fs::read_to_string(path) {
        Ok(s) => Ok(Some(s)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_err(path)(e)),
    }
}

/// Writes `data` to `path` through a temporary file and a rename, so containerd never reads
/// half a file; keeps the mode of the file it replaces (0644 for a new one).
fn write_atomic(path: &Path, data: &str) -> Result<(), ConfigError> {
    let dir = path.parent().unwrap_or(Path::new("/"));
    fs::create_dir_all(dir).map_err(io_err(dir))?;
    let mode = fs::metadata(path).map_or(0o644, |m| m.permissions().mode() & 0o7777);
    let mut tmp = tempfile::Builder::new()
        .prefix(".hull-")
        .tempfile_in(dir)
        .map_err(io_err(dir))?;
    tmp.write_all(data.as_bytes()).map_err(io_err(path))?;
    tmp.as_file()
        .set_permissions(fs::Permissions::from_mode(mode))
        .map_err(io_err(path))?;
    tmp.as_file().sync_all().map_err(io_err(path))?;
    tmp.persist(path).map_err(|e| io_err(path)(e.error))?;
    Ok(())
}

fn remove_opt(path: &Path) -> Result<(), ConfigError> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_err(path)(e)),
    }
}

fn parse(path: &Path, text: &str) -> Result<toml_edit::DocumentMut, ConfigError> {
    text.parse()
        .map_err(|e: toml_edit::TomlError| ConfigError::Parse {
            path: path.to_owned(),
            message: e.message().to_owned(),
        })
}

/// The config version of `doc`, or `None` for a file with nothing in it.
fn version(path: &Path, doc: &toml_edit::DocumentMut) -> Result<Option<i64>, ConfigError> {
    match doc.get("version").and_then(toml_edit::Item::as_integer) {
        Some(v @ (2 | 3)) => Ok(Some(v)),
        Some(version) => Err(ConfigError::UnknownVersion {
            path: path.to_owned(),
            version,
        }),
        None if doc.is_empty() => Ok(None),
        None => Err(ConfigError::VersionOne(path.to_owned())),
    }
}

/// The major version of a containerd version string (`1.6.20~ds1`, `v2.1.9`).
pub(crate) fn containerd_major(version: &str) -> Option<u32> {
    version
        .trim_start_matches('v')
        .split('.')
        .next()?
        .parse()
        .ok()
}

/// A deploy file's runtime tables with `hull_config` as ConfigPath and without its `version`.
fn runtime_tables(deploy: &str, hull_config: &str) -> String {
    deploy
        .lines()
        .filter(|l| !l.starts_with("version = "))
        .map(|l| l.replace(DEPLOY_HULL_TOML, hull_config))
        .collect::<Vec<_>>()
        .join("\n")
        + "\n"
}

/// `text` without hull's block (and the blank line put before it); `None` when it has none.
fn strip_block(text: &str) -> Option<String> {
    let begin = text.find(BEGIN)?;
    let end = begin + text[begin..].find(END)? + END.len();
    let end = end + usize::from(text[end..].starts_with('\n'));
    let begin = if text[..begin].ends_with("\n\n") {
        begin - 1
    } else {
        begin
    };
    Some(format!("{}{}", &text[..begin], &text[end..]))
}

fn has_runtime(doc: &toml_edit::DocumentMut, cri: &str) -> bool {
    doc.get("plugins")
        .and_then(|p| p.get(cri))
        .and_then(|c| c.get("containerd"))
        .and_then(|c| c.get("runtimes"))
        .and_then(|r| r.get(HANDLER))
        .is_some()
}

fn imports_mut<'a>(
    path: &Path,
    doc: &'a mut toml_edit::DocumentMut,
) -> Result<&'a mut toml_edit::Array, ConfigError> {
    let item = doc
        .entry("imports")
        .or_insert(toml_edit::value(toml_edit::Array::new()));
    let arr = item
        .as_array_mut()
        .ok_or_else(|| ConfigError::BadImports(path.to_owned()))?;
    if arr.iter().any(|v| v.as_str().is_none()) {
        return Err(ConfigError::BadImports(path.to_owned()));
    }
    Ok(arr)
}

/// `text` with `drop_in` out of its `imports` (the key stays, maybe empty); `None` when it was
/// not there.
fn strip_import(path: &Path, text: &str, drop_in: &str) -> Result<Option<String>, ConfigError> {
    let mut doc = parse(path, text)?;
    if doc.get("imports").is_none() {
        return Ok(None);
    }
    let arr = imports_mut(path, &mut doc)?;
    let before = arr.len();
    arr.retain(|v| v.as_str() != Some(drop_in));
    Ok((arr.len() != before).then(|| doc.to_string()))
}

/// `base` (a file without hull) with hull added: the new file's text, the drop-in's if any.
fn render(
    path: &Path,
    base: &str,
    containerd: &str,
    hull_config: &str,
    drop_in: &Path,
) -> Result<(Mode, String, Option<String>), ConfigError> {
    let doc = parse(path, base)?;
    let major = containerd_major(containerd).unwrap_or(1);
    let version = version(path, &doc)?.unwrap_or(if major >= 2 { 3 } else { 2 });
    if version == 3 && major < 2 {
        return Err(ConfigError::TooNew {
            path: path.to_owned(),
            containerd: containerd.to_owned(),
        });
    }
    if has_runtime(&doc, CRI_V2) || has_runtime(&doc, CRI_V3) {
        return Err(ConfigError::ForeignRuntime(path.to_owned()));
    }
    // A new file, or one of comments only, gets its version first.
    let mut text = if doc.is_empty() {
        format!("version = {version}\n{base}")
    } else {
        base.to_owned()
    };
    if version == 2 {
        if !text.is_empty() && !text.ends_with('\n') {
            text.push('\n');
        }
        if !text.is_empty() {
            text.push('\n');
        }
        text.push_str(BEGIN);
        text.push('\n');
        text.push_str(&runtime_tables(RUNTIME_V2, hull_config));
        text.push_str(END);
        text.push('\n');
        // A file that spells the CRI plugin's tables as inline tables or dotted keys cannot
        // take more tables after them.
        parse(path, &text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: format!("hull's tables cannot be appended to it: {e}"),
        })?;
        return Ok((Mode::Edit, text, None));
    }
    let mut doc = parse(path, &text)?;
    let drop_in = drop_in.to_string_lossy();
    let arr = imports_mut(path, &mut doc)?;
    if !arr.iter().any(|v| v.as_str() == Some(&drop_in)) {
        arr.push(drop_in.as_ref());
    }
    Ok((
        Mode::Import,
        doc.to_string(),
        // A whole file, `version = 3` included: containerd reads each import as a file of its own.
        Some(RUNTIME_V3.replace(DEPLOY_HULL_TOML, hull_config)),
    ))
}

fn check_hull_config(hull_config: &str) -> Result<(), ConfigError> {
    let bad = !hull_config.starts_with('/')
        || hull_config
            .chars()
            .any(|c| matches!(c, '"' | '\'' | '\\') || c.is_control());
    if bad {
        return Err(ConfigError::BadHullConfig(hull_config.to_owned()));
    }
    Ok(())
}

fn read_record(paths: &Paths) -> Result<Option<Record>, ConfigError> {
    let path = paths.state_file(RECORD);
    let Some(text) = read_opt(&path)? else {
        return Ok(None);
    };
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|e| ConfigError::State {
            path,
            message: e.to_string(),
        })
}

/// The file as it would be without hull (`None`: no file), what the last installation
/// recorded, and what to tell the operator.
struct Baseline {
    text: Option<String>,
    record: Option<Record>,
    notes: Vec<String>,
}

/// The file without hull: the original while the file is still what hull left, else the
/// file with hull's part taken out.
fn without_hull(paths: &Paths, current: Option<&str>) -> Result<Baseline, ConfigError> {
    let config = paths.on_node(&paths.config);
    let record = read_record(paths)?;
    let mut notes = Vec::new();
    if let Some(rec) = &record {
        let installed = read_opt(&paths.state_file(INSTALLED))?;
        if current.is_some() && installed.as_deref() == current {
            let original = if rec.created {
                None
            } else {
                read_opt(&paths.state_file(ORIGINAL))?
            };
            return Ok(Baseline {
                text: original,
                record,
                notes,
            });
        }
        notes.push(format!(
            "{} changed since hull edited it: keeping those changes, taking out only hull's part",
            paths.config.display()
        ));
    }
    let Some(current) = current else {
        return Ok(Baseline {
            text: None,
            record,
            notes,
        });
    };
    let drop_in = record
        .as_ref()
        .map_or(paths.drop_in.clone(), |r| r.drop_in.clone());
    let mut text = strip_block(current).unwrap_or_else(|| current.to_owned());
    if let Some(t) = strip_import(&config, &text, &drop_in.to_string_lossy())? {
        text = t;
    }
    Ok(Baseline {
        text: Some(text),
        record,
        notes,
    })
}

/// Adds the hull runtime (`hullctl node containerd-add`).
pub(crate) fn add(
    paths: &Paths,
    containerd: &str,
    hull_config: &str,
) -> Result<Outcome, ConfigError> {
    check_hull_config(hull_config)?;
    let config = paths.on_node(&paths.config);
    let current = read_opt(&config)?;
    let Baseline {
        text: base,
        record: earlier,
        notes,
    } = without_hull(paths, current.as_deref())?;
    let (mode, text, drop_in) = render(
        &paths.config,
        base.as_deref().unwrap_or(""),
        containerd,
        hull_config,
        &paths.drop_in,
    )?;
    let drop_in_path = paths.on_node(&paths.drop_in);
    let drop_in_same = drop_in.is_none() || read_opt(&drop_in_path)? == drop_in;
    let changed = current.as_deref() != Some(&text) || !drop_in_same;
    // The state first: a crash after it but before the config write leaves a record whose
    // `installed` does not match, which the next add or remove handles as an edited file.
    fs::create_dir_all(paths.on_node(&paths.state)).map_err(io_err(&paths.state))?;
    match &base {
        Some(b) => write_atomic(&paths.state_file(ORIGINAL), b)?,
        None => remove_opt(&paths.state_file(ORIGINAL))?,
    }
    write_atomic(&paths.state_file(INSTALLED), &text)?;
    let record = Record {
        mode,
        drop_in: paths.drop_in.clone(),
        created: base.is_none(),
    };
    let json = serde_json::to_string_pretty(&record).unwrap_or_default();
    write_atomic(&paths.state_file(RECORD), &json)?;
    if let Some(d) = &drop_in {
        write_atomic(&drop_in_path, d)?;
    }
    // An earlier installation's drop-in elsewhere (another --drop-in, or version 3 then 2).
    if let Some(old) = earlier
        .filter(|r| r.mode == Mode::Import && (drop_in.is_none() || r.drop_in != paths.drop_in))
    {
        remove_opt(&paths.on_node(&old.drop_in))?;
    }
    if changed {
        write_atomic(&config, &text)?;
    }
    Ok(Outcome {
        mode: Some(mode),
        changed,
        notes,
    })
}

/// Takes the hull runtime out again (`hullctl node containerd-remove`).
pub(crate) fn remove(paths: &Paths) -> Result<Outcome, ConfigError> {
    let config = paths.on_node(&paths.config);
    let current = read_opt(&config)?;
    let Baseline {
        text: base,
        record,
        notes,
    } = without_hull(paths, current.as_deref())?;
    let changed = base != current;
    if changed {
        match &base {
            Some(b) => write_atomic(&config, b)?,
            None => remove_opt(&config)?,
        }
    }
    // Only a drop-in hull wrote: without a record, a file at that path may be anybody's.
    if let Some(r) = record.as_ref().filter(|r| r.mode == Mode::Import) {
        remove_opt(&paths.on_node(&r.drop_in))?;
    }
    for f in [RECORD, ORIGINAL, INSTALLED] {
        remove_opt(&paths.state_file(f))?;
    }
    Ok(Outcome {
        mode: record.map(|r| r.mode),
        changed,
        notes,
    })
}

#[cfg(test)]
mod record_tests {
    use super::*;

    #[test]
    fn a_record_written_with_the_config_path_still_reads() {
        let old = r#"{"mode": "import", "config": "/etc/containerd/config.toml",
                      "drop_in": "/etc/containerd/conf.d/hull.toml", "created": false}"#;
        let r: Record = serde_json::from_str(old).expect("old record");
        assert_eq!(r.mode, Mode::Import);
        assert_eq!(r.drop_in, PathBuf::from("/etc/containerd/conf.d/hull.toml"));
        assert!(!r.created);
    }
}
