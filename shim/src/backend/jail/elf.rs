//! The jail holds no shared libraries (nor `/lib64/ld-linux-x86-64.so.2`): hull-vmm must be
//! statically linked. A dynamically linked one would fail inside the jail with a bare ENOENT
//! from execve, so the shim refuses it up front, naming the fix.

use std::os::unix::fs::FileExt;
use std::path::Path;

use super::JailError;

/// `PT_INTERP`: the program header naming the dynamic loader.
const PT_INTERP: u32 = 3;
/// The ELF64 header's size, and where the program header table's fields sit in it.
const EHDR_LEN: usize = 64;

/// Ok if `path` is an x86_64-style ELF64 little-endian executable without an interpreter.
pub(crate) fn check_static(path: &Path) -> Result<(), JailError> {
    let f = std::fs::File::open(path).map_err(JailError::io("open", path))?;
    let mut ehdr = [0u8; EHDR_LEN];
    f.read_exact_at(&mut ehdr, 0)
        .map_err(JailError::io("read the ELF header of", path))?;
    let not_elf = |why: &str| JailError::NotStatic {
        path: path.to_path_buf(),
        why: why.to_owned(),
    };
    if &ehdr[..4] != b"\x7fELF" || ehdr[4] != 2 || ehdr[5] != 1 {
        return Err(not_elf("it is not a 64-bit little-endian ELF file"));
    }
    let u16_at = |o: usize| u16::from_le_bytes([ehdr[o], ehdr[o + 1]]);
    let phoff = u64::from_le_bytes(ehdr[0x20..0x28].try_into().unwrap_or([0; 8]));
    let phentsize = u64::from(u16_at(0x36));
    let phnum = u64::from(u16_at(0x38));
    if phentsize < 4 {
        return Err(not_elf("its program header table is malformed"));
    }
    for i in 0..phnum {
        let mut p_type = [0u8; 4];
        f.read_exact_at(&mut p_type, phoff + i * phentsize)
            .map_err(JailError::io("read the program headers of", path))?;
        if u32::from_le_bytes(p_type) == PT_INTERP {
            return Err(not_elf(
                "it is dynamically linked (it has an ELF interpreter)",
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dynamic_binary_is_refused_naming_the_fix_and_a_static_one_passes() {
        // The test binary itself is dynamically linked (the default Rust target).
        let me = std::env::current_exe().expect("current exe");
        let e = check_static(&me).unwrap_err().to_string();
        assert!(e.contains("dynamically linked"), "{e}");
        assert!(
            e.contains("crt-static") && e.contains("scripts/build-release"),
            "{e}"
        );
        // Debian's busybox-static (install-deps installs it for the test image).
        check_static(Path::new("/bin/busybox")).expect("busybox-static is static");
        let t = tempfile::NamedTempFile::new().expect("tmp");
        std::fs::write(t.path(), b"#!/bin/sh\n").expect("write");
        assert!(check_static(t.path()).is_err(), "a script is not ELF");
    }
}
