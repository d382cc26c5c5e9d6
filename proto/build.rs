//! Generates the protobuf messages and async ttrpc services of the agent API from `protos/`.
//!
//! The pure-Rust parser of `protobuf-parse` is used, so no `protoc` binary is needed. The
//! generated files carry inner attributes (`#![allow(...)]`, `//!` docs) that `include!` cannot
//! take inside a module, so they are written to a staging directory and copied to `OUT_DIR`
//! without those lines; `src/lib.rs` puts the allows on the wrapping modules instead.

use std::fs;
use std::path::{Path, PathBuf};

use ttrpc_codegen::{Codegen, Customize, ProtobufCustomize};

const PROTO_DIR: &str = "protos";

fn main() {
    let out_dir = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let staging = out_dir.join("staging");
    // A stale staging dir would hide a removed .proto; start clean.
    let _ = fs::remove_dir_all(&staging);
    fs::create_dir_all(&staging).expect("create staging dir");

    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed={PROTO_DIR}");
    let mut inputs = Vec::new();
    for entry in fs::read_dir(PROTO_DIR).expect("read protos/") {
        let path = entry.expect("read protos/ entry").path();
        if path.extension().is_some_and(|e| e == "proto") {
            println!("cargo:rerun-if-changed={}", path.display());
            inputs.push(path);
        }
    }
    inputs.sort();

    Codegen::new()
        .out_dir(&staging)
        .inputs(&inputs)
        .include(PROTO_DIR)
        .rust_protobuf()
        .rust_protobuf_customize(ProtobufCustomize::default().gen_mod_rs(false))
        .customize(Customize {
            async_all: true,
            gen_mod: false,
            ..Default::default()
        })
        .run()
        .expect("ttrpc/protobuf code generation failed");

    for entry in fs::read_dir(&staging).expect("read staging dir") {
        let path = entry.expect("read staging entry").path();
        if path.extension().is_some_and(|e| e == "rs") {
            strip_inner_attributes(&path, &out_dir.join(path.file_name().expect("file name")));
        }
    }
}

/// Copies `src` to `dst` without inner attributes and inner doc comments, which `include!`
/// rejects; everything else is kept byte for byte.
fn strip_inner_attributes(src: &Path, dst: &Path) {
    let text = fs::read_to_string(src).expect("read generated file");
    let mut kept = String::with_capacity(text.len());
    for line in text.lines() {
        let trimmed = line.trim_start();
        if trimmed.starts_with("#![") || trimmed.starts_with("//!") {
            continue;
        }
        kept.push_str(line);
        kept.push('\n');
    }
    // Rewrite only on change so dependants are not rebuilt needlessly.
    if fs::read_to_string(dst).ok().as_deref() != Some(kept.as_str()) {
        fs::write(dst, kept).expect("write generated file");
    }
}
