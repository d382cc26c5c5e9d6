//! A real async ttrpc exchange over a Unix socket: the generated server glue, the generated
//! client, and the error path (status codes survive the wire).

use std::sync::Arc;

use async_trait::async_trait;
use hull_proto::containers::ListPidsRequest;
use hull_proto::containers_ttrpc::ContainersClient;
use hull_proto::guest::{GetLogsRequest, GuestDetailsRequest};
use hull_proto::guest_ttrpc::{create_guest, Guest, GuestClient};
use hull_proto::health::VersionResponse;
use hull_proto::health::{check_response, CheckRequest, CheckResponse, VersionRequest};
use hull_proto::health_ttrpc::{create_health, Health, HealthClient};
use ttrpc::asynchronous::{Client, Server, TtrpcContext};
use ttrpc::{context, Code};

#[derive(Debug)]
struct TestHealth;

#[async_trait]
impl Health for TestHealth {
    async fn check(&self, _ctx: &TtrpcContext, _req: CheckRequest) -> ttrpc::Result<CheckResponse> {
        Ok(CheckResponse {
            status: check_response::ServingStatus::SERVING.into(),
            ..Default::default()
        })
    }

    async fn version(
        &self,
        _ctx: &TtrpcContext,
        _req: VersionRequest,
    ) -> ttrpc::Result<VersionResponse> {
        Ok(VersionResponse {
            agent_version: "9.8.7".into(),
            protocol_version: hull_proto::PROTOCOL_VERSION,
            kernel_release: "6.12.0-hull".into(),
            ..Default::default()
        })
    }
}

/// Implements only GetLogs (failing on purpose); GuestDetails keeps the generated default.
#[derive(Debug)]
struct TestGuest;

#[async_trait]
impl Guest for TestGuest {
    async fn get_logs(
        &self,
        _ctx: &TtrpcContext,
        req: GetLogsRequest,
    ) -> ttrpc::Result<hull_proto::guest::GetLogsResponse> {
        Err(ttrpc::Error::RpcStatus(ttrpc::get_status(
            Code::FAILED_PRECONDITION,
            format!("cursor {} is in the future", req.cursor),
        )))
    }
}

fn rpc_status(err: ttrpc::Error) -> ttrpc::Status {
    match err {
        ttrpc::Error::RpcStatus(status) => status,
        other => panic!("expected an RPC status, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_over_unix_socket() {
    let dir = tempfile::tempdir().expect("tempdir");
    let addr = format!("unix://{}", dir.path().join("agent.sock").display());

    let mut server = Server::new()
        .bind(&addr)
        .expect("bind")
        .register_service(create_health(Arc::new(TestHealth)))
        .register_service(create_guest(Arc::new(TestGuest)));
    server.start().await.expect("start server");

    let client = Client::connect(&addr).await.expect("connect");
    let health = HealthClient::new(client.clone());

    let check = health
        .check(context::with_timeout(5_000_000_000), &CheckRequest::new())
        .await
        .expect("Check");
    assert_eq!(
        check.status.enum_value(),
        Ok(check_response::ServingStatus::SERVING)
    );

    let version = health
        .version(context::with_timeout(5_000_000_000), &VersionRequest::new())
        .await
        .expect("Version");
    assert_eq!(version.agent_version, "9.8.7");
    assert_eq!(version.protocol_version, hull_proto::PROTOCOL_VERSION);
    assert_eq!(version.kernel_release, "6.12.0-hull");

    let guest = GuestClient::new(client.clone());

    // A registered service whose method the implementation left out: the generated default.
    let status = rpc_status(
        guest
            .guest_details(
                context::with_timeout(5_000_000_000),
                &GuestDetailsRequest::new(),
            )
            .await
            .expect_err("GuestDetails is not implemented"),
    );
    assert_eq!(status.code(), Code::NOT_FOUND, "{status:?}");
    assert!(
        status
            .message()
            .contains("/hull.agent.v1.Guest/GuestDetails"),
        "{status:?}"
    );

    // An error returned by a handler keeps its code and message across the wire.
    let status = rpc_status(
        guest
            .get_logs(
                context::with_timeout(5_000_000_000),
                &GetLogsRequest {
                    cursor: 42,
                    ..Default::default()
                },
            )
            .await
            .expect_err("GetLogs fails on purpose"),
    );
    assert_eq!(status.code(), Code::FAILED_PRECONDITION, "{status:?}");
    assert_eq!(status.message(), "cursor 42 is in the future");

    // A method a registered service does not have (a newer peer's RPC): UNIMPLEMENTED.
    let mut raw = ttrpc::Request::new();
    raw.service = "hull.agent.v1.Health".into();
    raw.method = "NoSuchMethod".into();
    raw.timeout_nano = 5_000_000_000;
    let status = rpc_status(client.request(raw).await.expect_err("unknown method"));
    assert_eq!(status.code(), Code::UNIMPLEMENTED, "{status:?}");

    // A service that was never registered: ttrpc 0.10 answers INVALID_ARGUMENT
    // ("<service> service does not exist"), not UNIMPLEMENTED.
    let containers = ContainersClient::new(client);
    let status = rpc_status(
        containers
            .list_pids(
                context::with_timeout(5_000_000_000),
                &ListPidsRequest::new(),
            )
            .await
            .expect_err("Containers is not registered"),
    );
    assert_eq!(status.code(), Code::INVALID_ARGUMENT, "{status:?}");
    assert!(
        status.message().contains("hull.agent.v1.Containers"),
        "{status:?}"
    );

    server.shutdown().await.expect("shutdown");
}
