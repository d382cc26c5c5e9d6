//! `Any` values whose type URL is known at compile time: the task events, the cgroup metrics of
//! `Stats`, and the runtime options containerd writes on `start`.
//!
//! containerd's typeurl registry uses bare full names (`containerd.events.TaskExit`). protobuf's
//! `Any::pack` and `containerd_shim::util::convert_to_any` get that name through reflection,
//! which on first use parses the message's `.proto` file and everything it imports (gogo.proto
//! pulls in descriptor.proto with its comments) and keeps the result for the life of the
//! process: hundreds of KiB of heap, and the reflection code's pages, in every pod's shim.
//! Here the name is the package (a constant, checked against reflection by the tests) joined
//! to the generated message's `NAME`.

use containerd_shim::protos::protobuf::well_known_types::any::Any;
use containerd_shim::protos::protobuf::Message;

/// Package of containerd's task events (`api/events/task.proto`).
pub(crate) const EVENTS: &str = "containerd.events";
/// Package of containerd's cgroup v2 metrics (`cgroups/v2/stats/metrics.proto`).
pub(crate) const CGROUPS_V2: &str = "io.containerd.cgroups.v2";
/// Package of the runtime options hull reads (`proto/protos/runtimeoptions.proto`).
pub(crate) const RUNTIME_OPTIONS: &str = "runtimeoptions.v1";

/// The full name of `M`, a top-level message of `package`.
pub(crate) fn name<M: Message>(package: &str) -> String {
    format!("{package}.{}", M::NAME)
}

/// `msg` in an `Any` typed as `package`'s `M`.
pub(crate) fn pack<M: Message>(package: &str, msg: &M) -> Result<Any, protobuf::Error> {
    Ok(Any {
        type_url: name::<M>(package),
        value: msg.write_to_bytes()?,
        ..Default::default()
    })
}

/// Whether `type_url` names `package`'s `M`: containerd's bare name, or with a host prefix as
/// other encoders write it (`type.googleapis.com/…`).
pub(crate) fn is<M: Message>(package: &str, type_url: &str) -> bool {
    let name = name::<M>(package);
    type_url == name
        || type_url
            .strip_suffix(name.as_str())
            .is_some_and(|host| host.ends_with('/'))
}

#[cfg(test)]
mod tests {
    use containerd_shim::protos::cgroups_v2::metrics::Metrics;
    use containerd_shim::protos::events::task::{
        TaskCreate, TaskDelete, TaskExecAdded, TaskExecStarted, TaskExit, TaskOOM, TaskPaused,
        TaskResumed, TaskStart,
    };
    use containerd_shim::protos::protobuf::MessageFull;
    use hull_proto::runtimeoptions::Options;

    use super::*;

    fn reflected<M: MessageFull>(package: &str) {
        assert_eq!(name::<M>(package), M::descriptor().full_name());
    }

    #[test]
    fn names_match_reflection() {
        reflected::<TaskCreate>(EVENTS);
        reflected::<TaskStart>(EVENTS);
        reflected::<TaskDelete>(EVENTS);
        reflected::<TaskExit>(EVENTS);
        reflected::<TaskOOM>(EVENTS);
        reflected::<TaskExecAdded>(EVENTS);
        reflected::<TaskExecStarted>(EVENTS);
        reflected::<TaskPaused>(EVENTS);
        reflected::<TaskResumed>(EVENTS);
        reflected::<Metrics>(CGROUPS_V2);
        reflected::<Options>(RUNTIME_OPTIONS);
    }

    #[test]
    fn pack_matches_the_crate_and_round_trips() {
        let ev = TaskExit {
            container_id: "c".into(),
            exit_status: 137,
            ..Default::default()
        };
        let any = pack(EVENTS, &ev).unwrap();
        let theirs = containerd_shim::util::convert_to_any(Box::new(ev.clone())).unwrap();
        assert_eq!(any, theirs);
        assert_eq!(TaskExit::parse_from_bytes(&any.value).unwrap(), ev);
    }

    #[test]
    fn is_accepts_bare_and_prefixed_names_only() {
        assert!(is::<Options>(RUNTIME_OPTIONS, "runtimeoptions.v1.Options"));
        assert!(is::<Options>(
            RUNTIME_OPTIONS,
            "type.googleapis.com/runtimeoptions.v1.Options"
        ));
        assert!(!is::<Options>(
            RUNTIME_OPTIONS,
            "xruntimeoptions.v1.Options"
        ));
        assert!(!is::<Options>(
            RUNTIME_OPTIONS,
            "containerd.runc.v1.Options"
        ));
        assert!(!is::<Options>(RUNTIME_OPTIONS, ""));
    }
}
