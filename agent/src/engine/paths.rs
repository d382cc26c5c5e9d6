//! Path checks shared by the engine, storages and file copy: lexical normalisation that
//! refuses `..`, and a symlink-aware join that never leaves its root.

use std::path::{Component, Path, PathBuf};

use super::error::{EngineError, Result};

/// Normalises an absolute path lexically: drops `.` and repeated slashes and refuses `..`, so
/// the result is a plain sequence of names under "/".
pub(crate) fn clean_absolute(path: &Path, what: &str) -> Result<PathBuf> {
    if !path.is_absolute() {
        return Err(EngineError::InvalidArgument(format!(
            "{what} {path:?} must be an absolute path"
        )));
    }
    let mut out = PathBuf::from("/");
    for c in path.components() {
        match c {
            Component::RootDir | Component::CurDir => {}
            Component::Normal(n) => out.push(n),
            Component::ParentDir => {
                return Err(EngineError::InvalidArgument(format!(
                    "{what} {path:?} contains '..'"
                )))
            }
            Component::Prefix(_) => {
                return Err(EngineError::InvalidArgument(format!(
                    "{what} {path:?} is not a Linux path"
                )))
            }
        }
    }
    Ok(out)
}

/// Joins `unsafe_path` (read as relative to `root`) onto `root`, resolving symlinks found
/// inside `root` as if `root` were "/", so the result never escapes `root` (the scheme of
/// filepath-securejoin). Components that do not exist are appended as they are.
pub(crate) fn secure_join(root: &Path, unsafe_path: &Path) -> std::io::Result<PathBuf> {
    let mut pending: Vec<std::ffi::OsString> = unsafe_path
        .components()
        .rev()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.to_owned()),
            Component::ParentDir => Some("..".into()),
            _ => None,
        })
        .collect();
    let mut resolved: Vec<std::ffi::OsString> = Vec::new();
    let mut links = 0;
    while let Some(name) = pending.pop() {
        if name == ".." {
            resolved.pop();
            continue;
        }
        let mut candidate = root.to_path_buf();
        candidate.extend(resolved.iter());
        candidate.push(&name);
        match std::fs::symlink_metadata(&candidate) {
            Ok(m) if m.file_type().is_symlink() => {
                links += 1;
                if links > 255 {
                    return Err(std::io::Error::from_raw_os_error(libc::ELOOP));
                }
                let target = std::fs::read_link(&candidate)?;
                if target.is_absolute() {
                    resolved.clear();
                }
                for c in target.components().rev() {
                    match c {
                        Component::Normal(n) => pending.push(n.to_owned()),
                        Component::ParentDir => pending.push("..".into()),
                        _ => {}
                    }
                }
            }
            _ => resolved.push(name),
        }
    }
    let mut out = root.to_path_buf();
    out.extend(resolved.iter());
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_refuses_relative_and_dotdot() {
        assert_eq!(
            clean_absolute(Path::new("/a/./b//c"), "p").unwrap(),
            PathBuf::from("/a/b/c")
        );
        assert!(clean_absolute(Path::new("a/b"), "p").is_err());
        assert!(clean_absolute(Path::new("/a/../../etc"), "p").is_err());
    }

    #[test]
    fn secure_join_stays_inside_root() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("usr/lib")).unwrap();
        std::os::unix::fs::symlink("/etc", root.join("abs")).unwrap();
        std::os::unix::fs::symlink("../../../../..", root.join("usr/up")).unwrap();
        std::os::unix::fs::symlink("lib", root.join("usr/rel")).unwrap();
        assert_eq!(
            secure_join(root, Path::new("/abs/passwd")).unwrap(),
            root.join("etc/passwd")
        );
        assert_eq!(
            secure_join(root, Path::new("usr/up/etc")).unwrap(),
            root.join("etc")
        );
        assert_eq!(
            secure_join(root, Path::new("../../x")).unwrap(),
            root.join("x")
        );
        assert_eq!(
            secure_join(root, Path::new("/usr/rel/x")).unwrap(),
            root.join("usr/lib/x")
        );
        std::os::unix::fs::symlink("loop", root.join("loop")).unwrap();
        assert!(secure_join(root, Path::new("/loop/x")).is_err());
    }
}
