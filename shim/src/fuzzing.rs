//! What the fuzz targets (`fuzz/`, built with `--cfg fuzzing`) feed the shim: agent replies
//! as bytes, decoded as the ttrpc client decodes them and turned into what containerd gets,
//! through the same functions the task handlers call. Everything else stays crate-private.

use containerd_shim::protos::cgroups_v2::metrics::Metrics;
use hull_proto::containers::StatsContainerResponse;
use protobuf::Message;

use crate::errors::ShimError;
use crate::{stats, typeurl};

/// A StatsContainer reply → the `io.containerd.cgroups.v2.Metrics` Any of Task.Stats
/// (task.rs), which containerd decodes again. `None`: the bytes are no reply.
pub fn stats_reply(bytes: &[u8]) -> Option<()> {
    let reply = StatsContainerResponse::parse_from_bytes(bytes).ok()?;
    let metrics = stats::to_metrics(&reply.stats.into_option().unwrap_or_default());
    let any = typeurl::pack(typeurl::CGROUPS_V2, &metrics).expect("metrics always encode");
    assert_eq!(any.type_url, "io.containerd.cgroups.v2.Metrics");
    let back = Metrics::parse_from_bytes(&any.value).expect("containerd decodes the metrics");
    assert_eq!(back, metrics, "the metrics survive the trip");
    Some(())
}

/// An error status the agent answered an RPC with → the status containerd gets
/// (errors.rs): the agent's NOT_FOUND, ALREADY_EXISTS, INVALID_ARGUMENT and
/// FAILED_PRECONDITION pass through, its message is kept.
pub fn error_reply(bytes: &[u8]) -> Option<()> {
    let status = ttrpc::proto::Status::parse_from_bytes(bytes).ok()?;
    let (code, message) = (status.code(), status.message.clone());
    let err = ShimError::agent("fuzz")(ttrpc::Error::RpcStatus(status));
    let mapped = err.code();
    let out = ttrpc::Error::from(err);
    let ttrpc::Error::RpcStatus(out) = out else {
        panic!("the shim answers containerd with a status");
    };
    assert_eq!(out.code(), mapped);
    assert_eq!(mapped, code, "the agent's code passes through");
    assert!(
        out.message.ends_with(&message),
        "the agent's message is kept"
    );
    Some(())
}
