//! Link flags of `containerd-shim-hull-v2`, a process that runs once per pod.

fn main() {
    // Pack the binary's relative relocations (DT_RELR: glibc >= 2.36, binutils >= 2.38; Debian
    // 12 has both). The binary stays position-independent (ASLR), but its ~13k relocations
    // take a few KiB instead of ~24 bytes each in `.rela.dyn`, which the loader reads (and so
    // maps) in every shim.
    println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
}
