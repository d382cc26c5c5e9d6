//! CopyFile: chunked writes of regular files under the agent's copy root. The path is
//! normalised lexically (no `..`), must lie under the root, and no existing component may be
//! a symlink, so a file can never be written outside its target.

use std::fs::{self, OpenOptions};
use std::io::{Seek, SeekFrom, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::engine::paths::clean_absolute;
use crate::engine::{EngineError, Result};

/// One chunk of a file copy, free of wire types.
#[derive(Debug, Clone, Default)]
pub(crate) struct CopyChunk {
    pub(crate) path: String,
    pub(crate) file_size: u64,
    pub(crate) offset: u64,
    pub(crate) data: Vec<u8>,
    pub(crate) file_mode: u32,
    pub(crate) uid: u32,
    pub(crate) gid: u32,
    pub(crate) dir_mode: u32,
}

fn invalid(msg: String) -> EngineError {
    EngineError::InvalidArgument(msg)
}

/// Writes one chunk under `root`.
pub(crate) fn do_copy_file(root: &Path, c: &CopyChunk) -> Result<()> {
    let path = clean_absolute(Path::new(&c.path), "copy path")?;
    if !path.starts_with(root) || path == root {
        return Err(invalid(format!("copy path {path:?} is outside {root:?}")));
    }
    let end = c
        .offset
        .checked_add(c.data.len() as u64)
        .filter(|&e| e <= c.file_size)
        .ok_or_else(|| {
            invalid(format!(
                "chunk at {} (+{}) beyond file size {}",
                c.offset,
                c.data.len(),
                c.file_size
            ))
        })?;
    // Walk from the root down, creating directories, refusing symlinks.
    let rel = path
        .strip_prefix(root)
        .map_err(|_| invalid("bad path".into()))?;
    let mut cur = PathBuf::from(root);
    let comps: Vec<_> = rel.components().collect();
    for (i, comp) in comps.iter().enumerate() {
        cur.push(comp);
        let last = i + 1 == comps.len();
        match fs::symlink_metadata(&cur) {
            Ok(m) if m.file_type().is_symlink() => {
                return Err(invalid(format!(
                    "{cur:?} is a symlink; refusing to follow it"
                )))
            }
            Ok(m) if last && !m.is_file() => {
                return Err(invalid(format!("{cur:?} exists and is not a regular file")))
            }
            Ok(m) if !last && !m.is_dir() => {
                return Err(invalid(format!("{cur:?} is not a directory")))
            }
            Ok(_) => {}
            Err(_) if !last => {
                fs::create_dir(&cur).map_err(|e| EngineError::io(format!("mkdir {cur:?}"), e))?;
                let mode = if c.dir_mode == 0 {
                    0o755
                } else {
                    c.dir_mode & 0o7777
                };
                let _ = fs::set_permissions(&cur, fs::Permissions::from_mode(mode));
                let _ = nix::unistd::chown(
                    &cur,
                    Some(nix::unistd::Uid::from_raw(c.uid)),
                    Some(nix::unistd::Gid::from_raw(c.gid)),
                );
            }
            Err(_) => {}
        }
    }
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(c.offset == 0)
        .custom_flags(libc::O_NOFOLLOW)
        .mode(c.file_mode & 0o7777)
        .open(&path)
        .map_err(|e| EngineError::io(format!("open {path:?}"), e))?;
    f.seek(SeekFrom::Start(c.offset))
        .and_then(|_| f.write_all(&c.data))
        .map_err(|e| EngineError::io(format!("write {path:?}"), e))?;
    if end == c.file_size {
        f.set_len(c.file_size)
            .map_err(|e| EngineError::io("truncate", e))?;
    }
    let _ = f.set_permissions(fs::Permissions::from_mode(c.file_mode & 0o7777));
    nix::unistd::fchown(
        &f,
        Some(nix::unistd::Uid::from_raw(c.uid)),
        Some(nix::unistd::Gid::from_raw(c.gid)),
    )
    .map_err(|e| EngineError::io("chown", e.into()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_chunks_and_refuses_escapes() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let chunk = |path: String, offset, data: &[u8]| CopyChunk {
            path,
            file_size: 6,
            offset,
            data: data.to_vec(),
            file_mode: 0o640,
            uid: 0,
            gid: 0,
            dir_mode: 0o750,
        };
        let p = format!("{}/a/b/f", root.display());
        do_copy_file(root, &chunk(p.clone(), 0, b"abc")).unwrap();
        do_copy_file(root, &chunk(p.clone(), 3, b"def")).unwrap();
        assert_eq!(fs::read(root.join("a/b/f")).unwrap(), b"abcdef");
        assert!(do_copy_file(root, &chunk(format!("{}/../x", root.display()), 0, b"a")).is_err());
        assert!(do_copy_file(root, &chunk("/etc/passwd".into(), 0, b"a")).is_err());
        std::os::unix::fs::symlink("/etc", root.join("link")).unwrap();
        assert!(do_copy_file(root, &chunk(format!("{}/link/x", root.display()), 0, b"a")).is_err());
        assert!(do_copy_file(root, &chunk(p, 5, b"toolong")).is_err());
    }
}
