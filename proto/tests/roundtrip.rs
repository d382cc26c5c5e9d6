//! Encode/decode round trips of every message of the agent API, with every field set to a
//! non-default value (checked by reflection, so a field added later without a test fails here),
//! and a coverage check that every message of every `.proto` file has a sample.

use std::collections::{BTreeSet, HashMap};
use std::fmt::Debug;

use hull_proto::common::{storage, Storage};
use hull_proto::containers::*;
use hull_proto::events::*;
use hull_proto::files::*;
use hull_proto::guest::*;
use hull_proto::health::*;
use hull_proto::network::*;
use hull_proto::processes::*;
use hull_proto::protobuf::reflect::{FileDescriptor, MessageDescriptor, ReflectValueRef};
use hull_proto::protobuf::{EnumOrUnknown, MessageDyn, MessageField, MessageFull};
use hull_proto::sandbox::*;
use hull_proto::stats::*;

/// Runs the round trip on each sample and remembers which message types it has seen.
#[derive(Debug, Default)]
struct Checker {
    seen: BTreeSet<String>,
}

impl Checker {
    fn check<M: MessageFull + PartialEq + Debug>(&mut self, msg: M) {
        let name = M::descriptor().full_name().to_owned();
        assert_all_fields_set(&msg, &name);
        assert_round_trip(&msg);
        self.seen.insert(name);
    }
}

/// Encodes and decodes `msg` and fails unless it comes back equal. Alone, for samples whose
/// point is a field left at its default.
fn assert_round_trip<M: MessageFull + PartialEq + Debug>(msg: &M) {
    let bytes = msg.write_to_bytes().expect("encode");
    let decoded = M::parse_from_bytes(&bytes).expect("decode");
    assert_eq!(
        msg,
        &decoded,
        "{} changed in a round trip",
        M::descriptor().full_name()
    );
}

/// Fails unless every field of `msg` (recursively) holds a non-default value. Of a oneof, one
/// member must be set.
fn assert_all_fields_set(msg: &dyn MessageDyn, path: &str) {
    let desc = msg.descriptor_dyn();
    for oneof in desc.oneofs() {
        assert!(
            oneof.fields().any(|f| f.has_field(msg)),
            "{path}: oneof {} is unset",
            oneof.name()
        );
    }
    for field in desc.fields() {
        let field_path = format!("{path}.{}", field.name());
        if field.containing_oneof().is_some() {
            if let Some(ReflectValueRef::Message(m)) = field.get_singular(msg) {
                assert_all_fields_set(&*m, &field_path);
            }
            continue;
        }
        assert!(
            field.has_field(msg),
            "{field_path} is not set to a non-default value"
        );
        if field.is_map() {
            continue;
        }
        if field.is_repeated() {
            for value in field.get_repeated(msg) {
                if let ReflectValueRef::Message(m) = value {
                    assert_all_fields_set(&*m, &field_path);
                }
            }
        } else if let Some(ReflectValueRef::Message(m)) = field.get_singular(msg) {
            assert_all_fields_set(&*m, &field_path);
        }
    }
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

fn map(items: &[(&str, &str)]) -> HashMap<String, String> {
    items
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn storage() -> Storage {
    Storage {
        driver: EnumOrUnknown::new(storage::Driver::BLOCK),
        source: "vdb-serial-1".into(),
        fstype: "ext4".into(),
        options: strings(&["nosuid", "nodev"]),
        mount_point: "/run/hull/storage/vol1".into(),
        read_only: true,
        driver_options: map(&[("fs_group", "2000")]),
        ..Default::default()
    }
}

fn health(c: &mut Checker) {
    c.check(CheckRequest::new());
    c.check(CheckResponse {
        status: check_response::ServingStatus::SERVING.into(),
        ..Default::default()
    });
    c.check(VersionRequest::new());
    c.check(VersionResponse {
        agent_version: "0.1.0".into(),
        protocol_version: hull_proto::PROTOCOL_VERSION,
        kernel_release: "6.12.0-hull".into(),
        ..Default::default()
    });
}

fn sandbox(c: &mut Checker) {
    c.check(storage());
    for driver in [
        storage::Driver::VIRTIOFS,
        storage::Driver::TMPFS,
        storage::Driver::BIND,
        storage::Driver::EPHEMERAL,
    ] {
        c.check(Storage {
            driver: driver.into(),
            ..storage()
        });
    }
    let dns = DnsConfig {
        servers: strings(&["10.96.0.10", "fd00::10"]),
        searches: strings(&["default.svc.cluster.local", "svc.cluster.local"]),
        options: strings(&["ndots:5"]),
        ..Default::default()
    };
    c.check(dns.clone());
    c.check(CreateSandboxRequest {
        sandbox_id: "5f1c0a".into(),
        hostname: "web-0".into(),
        dns: MessageField::some(dns),
        resolv_conf: b"nameserver 10.96.0.10\n".to_vec(),
        hosts: b"127.0.0.1 localhost\n10.88.0.5 web-0\n".to_vec(),
        storages: vec![storage(), storage()],
        sysctls: map(&[("net.ipv4.ip_unprivileged_port_start", "0")]),
        ..Default::default()
    });
    c.check(CreateSandboxResponse::new());
    c.check(DestroySandboxRequest {
        sandbox_id: "5f1c0a".into(),
        ..Default::default()
    });
    c.check(DestroySandboxResponse::new());
}

fn container_stats() -> ContainerStats {
    ContainerStats {
        timestamp_ns: 1_700_000_000_123_456_789,
        cpu: MessageField::some(CpuStats {
            usage_usec: 1_000_001,
            user_usec: 600_000,
            system_usec: 400_001,
            nr_periods: 120,
            nr_throttled: 7,
            throttled_usec: 35_000,
            ..Default::default()
        }),
        memory: MessageField::some(MemoryStats {
            usage_bytes: 64 << 20,
            limit_bytes: 256 << 20,
            working_set_bytes: 48 << 20,
            anon_bytes: 40 << 20,
            file_bytes: 20 << 20,
            swap_usage_bytes: 1 << 20,
            swap_limit_bytes: 128 << 20,
            oom_events: 2,
            oom_kill_events: 1,
            pgfault: 123_456,
            pgmajfault: 78,
            inactive_file_bytes: 16 << 20,
            ..Default::default()
        }),
        pids: MessageField::some(PidsStats {
            current: 12,
            limit: 1024,
            ..Default::default()
        }),
        io: vec![IoDeviceStats {
            major: 254,
            minor: 16,
            rbytes: 4096 * 100,
            wbytes: 4096 * 50,
            rios: 100,
            wios: 50,
            ..Default::default()
        }],
        network: vec![NetworkInterfaceStats {
            name: "eth0".into(),
            rx_bytes: 123_456,
            rx_packets: 321,
            rx_errors: 1,
            rx_dropped: 2,
            tx_bytes: 654_321,
            tx_packets: 432,
            tx_errors: 3,
            tx_dropped: 4,
            ..Default::default()
        }],
        ..Default::default()
    }
}

fn stats(c: &mut Checker) {
    let s = container_stats();
    c.check(s.cpu.clone().unwrap());
    c.check(s.memory.clone().unwrap());
    c.check(s.pids.clone().unwrap());
    c.check(s.io[0].clone());
    c.check(s.network[0].clone());
    c.check(s);
}

fn containers(c: &mut Checker) {
    let id = || "ctr-1".to_owned();
    c.check(CreateContainerRequest {
        container_id: id(),
        exec_id: id(),
        oci_spec_json: br#"{"ociVersion":"1.2.0","process":{"args":["sh"]}}"#.to_vec(),
        storages: vec![storage()],
        terminal: true,
        stdin: true,
        ..Default::default()
    });
    c.check(CreateContainerResponse {
        pid: 42,
        ..Default::default()
    });
    c.check(StartContainerRequest {
        container_id: id(),
        ..Default::default()
    });
    c.check(StartContainerResponse::new());
    c.check(RemoveContainerRequest {
        container_id: id(),
        timeout_ms: 10_000,
        ..Default::default()
    });
    c.check(RemoveContainerResponse::new());
    c.check(UpdateContainerRequest {
        container_id: id(),
        resources_json: br#"{"memory":{"limit":268435456}}"#.to_vec(),
        ..Default::default()
    });
    c.check(UpdateContainerResponse::new());
    c.check(StatsContainerRequest {
        container_id: id(),
        ..Default::default()
    });
    c.check(StatsContainerResponse {
        stats: MessageField::some(container_stats()),
        ..Default::default()
    });
    c.check(PauseContainerRequest {
        container_id: id(),
        ..Default::default()
    });
    c.check(PauseContainerResponse::new());
    c.check(ResumeContainerRequest {
        container_id: id(),
        ..Default::default()
    });
    c.check(ResumeContainerResponse::new());
    c.check(ListPidsRequest {
        container_id: id(),
        ..Default::default()
    });
    let process = |pid: u32, exec_id: &str| ProcessPid {
        pid,
        exec_id: exec_id.to_owned(),
        ..Default::default()
    };
    c.check(process(17, "exec-7"));
    // The init and children the agent did not start have an empty exec id: a default field,
    // so it is checked inside the response, not as a sample of its own.
    let pids = ListPidsResponse {
        pids: vec![1, 17, 4_194_304],
        processes: vec![
            process(1, ""),
            process(17, "exec-7"),
            process(4_194_304, ""),
        ],
        ..Default::default()
    };
    assert_round_trip(&pids);
    c.check(ListPidsResponse {
        pids: vec![17, 4_194_304],
        processes: vec![process(17, "exec-7"), process(4_194_304, "exec-8")],
        ..Default::default()
    });
}

fn processes(c: &mut Checker) {
    let cid = || "ctr-1".to_owned();
    let eid = || "exec-7".to_owned();
    c.check(ExecProcessRequest {
        container_id: cid(),
        exec_id: eid(),
        process_json: br#"{"args":["ls","-l"],"cwd":"/"}"#.to_vec(),
        terminal: true,
        stdin: true,
        ..Default::default()
    });
    c.check(ExecProcessResponse {
        pid: 77,
        ..Default::default()
    });
    c.check(SignalProcessRequest {
        container_id: cid(),
        exec_id: eid(),
        signal: 15,
        all: true,
        ..Default::default()
    });
    c.check(SignalProcessResponse::new());
    c.check(WaitProcessRequest {
        container_id: cid(),
        exec_id: eid(),
        ..Default::default()
    });
    // The checker wants every field set, so `exited` carries core_dumped and oom_killed too,
    // which the agent only sets with a signal.
    let exited = ExitStatus {
        termination: Some(exit_status::Termination::Code(3)),
        status: 3,
        core_dumped: true,
        exited_at_ns: 1_700_000_000_000_000_001,
        oom_killed: true,
        ..Default::default()
    };
    let killed = ExitStatus {
        termination: Some(exit_status::Termination::Signal(9)),
        status: 128 + 9,
        ..exited.clone()
    };
    c.check(exited.clone());
    c.check(killed.clone());
    assert_ne!(exited, killed, "code and signal must be told apart");
    let plain_kill = ExitStatus {
        oom_killed: false,
        ..killed.clone()
    };
    assert_round_trip(&plain_kill);
    assert_ne!(
        plain_kill, killed,
        "an OOM kill and a plain kill must be told apart"
    );
    for exit in [exited, killed] {
        c.check(WaitProcessResponse {
            exit: MessageField::some(exit),
            ..Default::default()
        });
    }
    c.check(WriteStdinRequest {
        container_id: cid(),
        exec_id: eid(),
        data: b"echo hi\n".to_vec(),
        ..Default::default()
    });
    c.check(WriteStdinResponse {
        bytes_written: 8,
        ..Default::default()
    });
    c.check(CloseStdinRequest {
        container_id: cid(),
        exec_id: eid(),
        ..Default::default()
    });
    c.check(CloseStdinResponse::new());
    c.check(ReadStreamRequest {
        container_id: cid(),
        exec_id: eid(),
        max_len: 65_536,
        ..Default::default()
    });
    c.check(ReadStreamResponse {
        data: b"hi\n".to_vec(),
        eof: true,
        ..Default::default()
    });
    c.check(TtyWinResizeRequest {
        container_id: cid(),
        exec_id: eid(),
        rows: 50,
        cols: 132,
        ..Default::default()
    });
    c.check(TtyWinResizeResponse::new());
}

fn network(c: &mut Checker) {
    let v4 = IpAddress {
        family: IpFamily::IP_FAMILY_V4.into(),
        address: "10.88.0.5".into(),
        prefix_len: 16,
        ..Default::default()
    };
    let v6 = IpAddress {
        family: IpFamily::IP_FAMILY_V6.into(),
        address: "fd00::5".into(),
        prefix_len: 64,
        ..Default::default()
    };
    c.check(v4.clone());
    let iface = Interface {
        name: "eth0".into(),
        hw_addr: "02:42:ac:11:00:02".into(),
        mtu: 1500,
        addresses: vec![v4.clone(), v6],
        ..Default::default()
    };
    c.check(iface.clone());
    let route = Route {
        dest: "10.96.0.0/12".into(),
        gateway: "10.88.0.1".into(),
        device: "eth0".into(),
        source: "10.88.0.5".into(),
        scope: route::Scope::LINK.into(),
        family: IpFamily::IP_FAMILY_V4.into(),
        ..Default::default()
    };
    c.check(route.clone());
    let neighbor = Neighbor {
        ip: MessageField::some(v4),
        hw_addr: "02:42:ac:11:00:01".into(),
        device: "eth0".into(),
        state: neighbor::State::NOARP.into(),
        ..Default::default()
    };
    c.check(neighbor.clone());
    c.check(UpdateInterfacesRequest {
        interfaces: vec![iface.clone()],
        ..Default::default()
    });
    c.check(UpdateInterfacesResponse {
        interfaces: vec![iface.clone()],
        ..Default::default()
    });
    c.check(UpdateRoutesRequest {
        routes: vec![route.clone()],
        ..Default::default()
    });
    c.check(UpdateRoutesResponse {
        routes: vec![route.clone()],
        ..Default::default()
    });
    c.check(AddNeighborsRequest {
        neighbors: vec![neighbor],
        ..Default::default()
    });
    c.check(AddNeighborsResponse::new());
    c.check(ListInterfacesRequest::new());
    c.check(ListInterfacesResponse {
        interfaces: vec![iface],
        ..Default::default()
    });
    c.check(ListRoutesRequest {
        family: IpFamily::IP_FAMILY_V6.into(),
        ..Default::default()
    });
    c.check(ListRoutesResponse {
        routes: vec![route],
        ..Default::default()
    });
    c.check(WatchListenersRequest {
        generation: 0x8000_0000_0000_0001,
        wait_ms: 30_000,
        ..Default::default()
    });
    c.check(WatchListenersResponse {
        generation: u64::MAX,
        ports: vec![22, 8080, 65535],
        ..Default::default()
    });
}

fn events(c: &mut Checker) {
    c.check(GetOomEventRequest::new());
    c.check(GetOomEventResponse {
        container_id: "ctr-1".into(),
        ..Default::default()
    });
}

fn files(c: &mut Checker) {
    c.check(CopyFileRequest {
        path: "/etc/hostname".into(),
        file_size: 6,
        offset: 3,
        data: b"b-0\n".to_vec(),
        file_mode: 0o644,
        uid: 1000,
        gid: 2000,
        dir_mode: 0o755,
        ..Default::default()
    });
    c.check(CopyFileResponse::new());
}

fn guest(c: &mut Checker) {
    c.check(GuestDetailsRequest::new());
    c.check(GuestDetailsResponse {
        mem_block_size_bytes: 128 << 20,
        kernel_release: "6.12.0-hull".into(),
        agent_version: "0.1.0".into(),
        features: strings(&["cgroup-v2", "virtiofs"]),
        ..Default::default()
    });
    c.check(GetLogsRequest {
        cursor: 100,
        max_lines: 500,
        ..Default::default()
    });
    let line = LogLine {
        seq: 100,
        timestamp_ns: 1_700_000_000_000_000_000,
        level: log_line::Level::WARN.into(),
        target: "hull_agent::container".into(),
        message: "cgroup memory.events unreadable".into(),
        ..Default::default()
    };
    c.check(line.clone());
    c.check(GetLogsResponse {
        lines: vec![line],
        next_cursor: 101,
        dropped: 3,
        ..Default::default()
    });
    c.check(GetKernelLogRequest {
        cursor: 7,
        max_records: 200,
        ..Default::default()
    });
    let record = KernelLogRecord {
        seq: 7,
        timestamp_us: 1_234_567,
        level: 6,
        message: "virtio_blk virtio2: [vda] 4096 512-byte logical blocks".into(),
        ..Default::default()
    };
    c.check(record.clone());
    c.check(GetKernelLogResponse {
        records: vec![record],
        next_cursor: 8,
        dropped: 2,
        ..Default::default()
    });
    c.check(GuestStatsRequest::default());
    let pressure = Pressure {
        resource: "memory".into(),
        some_total_us: 1200,
        full_total_us: 300,
        ..Default::default()
    };
    c.check(pressure.clone());
    let rpc = RpcLatency {
        method: "Containers/CreateContainer".into(),
        count: 3,
        errors: 1,
        sum_seconds: 0.25,
        bucket_counts: vec![1, 3],
        ..Default::default()
    };
    c.check(rpc.clone());
    c.check(GuestStatsResponse {
        mem_total_bytes: 256 << 20,
        mem_free_bytes: 100 << 20,
        mem_available_bytes: 200 << 20,
        pressure: vec![pressure],
        rpc_bucket_bounds_seconds: vec![0.01, 0.1],
        rpc: vec![rpc],
        ..Default::default()
    });
    c.check(SetCpusRequest {
        online: 3,
        ..Default::default()
    });
    c.check(SetCpusResponse {
        online: 3,
        present: 8,
        ..Default::default()
    });
    c.check(AttachDiskRequest {
        mmio_base: 0xd000_3000,
        ..Default::default()
    });
    c.check(AttachDiskResponse {
        device: "/dev/vdb".into(),
        major: 254,
        minor: 16,
        ..Default::default()
    });
    c.check(DetachDiskRequest {
        mmio_base: 0xd000_3000,
        ..Default::default()
    });
    c.check(DetachDiskResponse::default());
}

#[test]
fn health_round_trip() {
    health(&mut Checker::default());
}

#[test]
fn sandbox_round_trip() {
    sandbox(&mut Checker::default());
}

#[test]
fn stats_round_trip() {
    stats(&mut Checker::default());
}

#[test]
fn containers_round_trip() {
    containers(&mut Checker::default());
}

#[test]
fn processes_round_trip() {
    processes(&mut Checker::default());
}

#[test]
fn network_round_trip() {
    network(&mut Checker::default());
}

#[test]
fn events_round_trip() {
    events(&mut Checker::default());
}

#[test]
fn files_round_trip() {
    files(&mut Checker::default());
}

#[test]
fn guest_round_trip() {
    guest(&mut Checker::default());
}

/// Every message type (nested ones included, map entries excluded) of every `.proto` file.
fn all_messages() -> BTreeSet<String> {
    fn walk(msg: MessageDescriptor, out: &mut BTreeSet<String>) {
        if msg.is_map_entry() {
            return;
        }
        for nested in msg.nested_messages() {
            walk(nested, out);
        }
        out.insert(msg.full_name().to_owned());
    }
    let files: [FileDescriptor; 10] = [
        hull_proto::common::file_descriptor().clone(),
        hull_proto::stats::file_descriptor().clone(),
        hull_proto::health::file_descriptor().clone(),
        hull_proto::sandbox::file_descriptor().clone(),
        hull_proto::containers::file_descriptor().clone(),
        hull_proto::processes::file_descriptor().clone(),
        hull_proto::network::file_descriptor().clone(),
        hull_proto::events::file_descriptor().clone(),
        hull_proto::files::file_descriptor().clone(),
        hull_proto::guest::file_descriptor().clone(),
    ];
    let mut out = BTreeSet::new();
    for file in files {
        assert_eq!(file.package(), hull_proto::PACKAGE, "{}", file.name());
        for msg in file.messages() {
            walk(msg, &mut out);
        }
    }
    out
}

#[test]
#[should_panic(expected = "hull.agent.v1.CheckResponse.status is not set")]
fn checker_rejects_a_field_left_at_default() {
    Checker::default().check(CheckResponse::new());
}

#[test]
fn every_message_has_a_round_trip_sample() {
    let mut c = Checker::default();
    for family in [
        health, sandbox, stats, containers, processes, network, events, files, guest,
    ] {
        family(&mut c);
    }
    let missing: Vec<_> = all_messages().difference(&c.seen).cloned().collect();
    assert!(
        missing.is_empty(),
        "messages without a round-trip sample: {missing:?}"
    );
}
