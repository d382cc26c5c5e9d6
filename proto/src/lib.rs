//! Wire types of the shim <-> agent API: protobuf messages and async ttrpc services, carried
//! over vsock port 1024 (DESIGN.md §1).
//!
//! This crate owns the `.proto` files in `protos/` (package `hull.agent.v1`) and nothing else:
//! no logic, no conversions. `build.rs` generates the code with `ttrpc-codegen`'s pure-Rust
//! parser (no `protoc` needed). Each file becomes two modules: `<file>` with the messages and,
//! for a file with a service, `<file>_ttrpc` with the async server trait (`Health`), its
//! registration function (`create_health`) and the async client (`HealthClient`). Every
//! service is a narrow capability, so the agent can implement and test them one by one:
//!
//! | service | what it covers |
//! |---|---|
//! | [`health_ttrpc::Health`] | readiness and versions |
//! | [`sandbox_ttrpc::Sandbox`] | pod identity, DNS, hosts, pod storages |
//! | [`containers_ttrpc::Containers`] | container lifecycle, resources, stats, pids |
//! | [`processes_ttrpc::Processes`] | exec, signals, wait, stdio, tty resize |
//! | [`network_ttrpc::Network`] | interfaces, routes, neighbours |
//! | [`events_ttrpc::Events`] | OOM events (long poll) |
//! | [`files_ttrpc::Files`] | chunked file copy into the guest |
//! | [`guest_ttrpc::Guest`] | guest facts, the agent's log, CPU and disk hot-plug |
//!
//! [`connect_agent`] is the one implementation of the host side of the hybrid vsock
//! handshake (`CONNECT <port>\n` → `OK <n>\n`), shared by the shim and hullctl;
//! [`portfwd`] is the header of the port-forward streams on vsock port 1025 (`PORT <n>\n` →
//! `OK\n`), shared by the agent and the shim; [`debug_shell`] reads `hullctl debug`'s frames
//! (vsock port 1026; their format is `hull_contract::debug_shell`) for the agent and hullctl;
//! [`vmm_api`] is the one client of hull-vmm's API socket (HTTP/1.1 over a Unix socket,
//! vmm/API.md), for the shim (growing a pod's VM) and hullctl.
//!
//! OCI structures (runtime spec, process, resources) travel as JSON bytes and are parsed with
//! `oci-spec` by the agent; they are deliberately not re-modelled in protobuf.
//!
//! # Versioning
//!
//! [`PROTOCOL_VERSION`] is what the agent reports in `Health.Version`. Bump it on every
//! incompatible change: a removed or renumbered field, RPC or enum value, a changed field type,
//! or changed meaning of an existing field. Adding fields, messages, enum values or RPCs that
//! old peers may ignore (or answer with NOT_FOUND / UNIMPLEMENTED) does not bump it. Field
//! numbers are never reused.

pub use protobuf;
pub use ttrpc;

mod connect;
pub mod debug_shell;
mod line;
pub mod portfwd;
pub mod vmm_api;
pub use connect::{connect_agent, connect_stream, ConnectError};

/// Version of the wire protocol defined here; see the crate docs for when it changes.
pub const PROTOCOL_VERSION: u32 = 1;

/// ttrpc service name prefix of every service, e.g. `hull.agent.v1.Health`.
pub const PACKAGE: &str = "hull.agent.v1";

/// Includes one generated file from `OUT_DIR` as a public module. The lints allowed here are
/// the ones generated code trips; they stay off for hand-written code.
macro_rules! generated {
    ($(#[$attr:meta])* $name:ident) => {
        $(#[$attr])*
        #[allow(
            unknown_lints,
            unused_attributes,
            unused_imports,
            unused_mut,
            unused_results,
            dead_code,
            missing_docs,
            missing_debug_implementations,
            trivial_casts,
            non_camel_case_types,
            non_snake_case,
            non_upper_case_globals,
            clippy::all,
            clippy::pedantic,
            clippy::undocumented_unsafe_blocks,
            clippy::multiple_unsafe_ops_per_block,
            clippy::cast_possible_truncation,
            clippy::cast_possible_wrap,
            clippy::cast_sign_loss,
            clippy::cast_lossless
        )]
        #[rustfmt::skip]
        pub mod $name {
            include!(concat!(env!("OUT_DIR"), "/", stringify!($name), ".rs"));
        }
    };
}

generated!(
    /// Types shared by several services: [`common::Storage`].
    common
);
generated!(
    /// Resource usage counters returned by `Containers.StatsContainer`.
    stats
);
generated!(
    /// Messages of the `Health` service.
    health
);
generated!(
    /// The `Health` service: [`health_ttrpc::Health`], [`health_ttrpc::create_health`],
    /// [`health_ttrpc::HealthClient`].
    health_ttrpc
);
generated!(
    /// Messages of the `Sandbox` service.
    sandbox
);
generated!(
    /// The `Sandbox` service: trait, `create_sandbox` and `SandboxClient`.
    sandbox_ttrpc
);
generated!(
    /// Messages of the `Containers` service.
    containers
);
generated!(
    /// The `Containers` service: trait, `create_containers` and `ContainersClient`.
    containers_ttrpc
);
generated!(
    /// Messages of the `Processes` service.
    processes
);
generated!(
    /// The `Processes` service: trait, `create_processes` and `ProcessesClient`.
    processes_ttrpc
);
generated!(
    /// Messages of the `Network` service.
    network
);
generated!(
    /// The `Network` service: trait, `create_network` and `NetworkClient`.
    network_ttrpc
);
generated!(
    /// Messages of the `Events` service.
    events
);
generated!(
    /// The `Events` service: trait, `create_events` and `EventsClient`.
    events_ttrpc
);
generated!(
    /// Messages of the `Files` service.
    files
);
generated!(
    /// The `Files` service: trait, `create_files` and `FilesClient`.
    files_ttrpc
);
generated!(
    /// Messages of the `Guest` service.
    guest
);
generated!(
    /// The `Guest` service: trait, `create_guest` and `GuestClient`.
    guest_ttrpc
);
generated!(
    /// containerd's `runtimeoptions.v1.Options` (not an agent message): the runtime options
    /// a non-runc shim receives on `start`, carrying `ConfigPath`.
    runtimeoptions
);
