//! hull-vmm's command line: clap's definition of the flags whose names and value formats
//! `hull_contract::vmm_args` fixes for every caller, and the [`VmConfig`] they describe.

use std::path::PathBuf;

use clap::Parser;
use hull_contract::vmm_args::flag;
use hull_contract::vsock::GUEST_CID;

use crate::config::{
    ConsoleConfig, DiskConfig, FsConfig, HotplugConfig, NetConfig, VmConfig, VsockConfig,
    DEFAULT_CMDLINE, DEFAULT_MEM_MIB, DEFAULT_VCPUS,
};

#[derive(Debug, Parser)]
#[command(name = "hull-vmm", version, about = "hull's KVM microVM monitor")]
pub struct Args {
    /// Guest kernel: ELF vmlinux (PVH entry preferred) or bzImage.
    #[arg(long = flag::KERNEL)]
    kernel: Option<PathBuf>,
    #[arg(long = flag::INITRD)]
    initrd: Option<PathBuf>,
    #[arg(long = flag::CMDLINE, default_value = DEFAULT_CMDLINE)]
    cmdline: String,
    /// Appended to --cmdline (the shim adds an operator's kernel_params to the default).
    #[arg(long = flag::CMDLINE_APPEND)]
    cmdline_append: Option<String>,
    #[arg(long = flag::VCPUS, default_value_t = DEFAULT_VCPUS)]
    vcpus: u8,
    #[arg(long = flag::MEM_MIB, default_value_t = DEFAULT_MEM_MIB)]
    mem_mib: u32,
    /// vCPUs the VM may grow to while it runs (default: --vcpus).
    #[arg(long = flag::MAX_VCPUS, default_value_t = 0)]
    max_vcpus: u8,
    /// MiB the VM's memory may grow by while it runs, a multiple of 128 (virtio-mem).
    #[arg(long = flag::HOTPLUG_MIB, default_value_t = 0)]
    hotplug_mib: u32,
    /// Empty slots for disks attached while the VM runs (PUT /hotplug/disks/N).
    #[arg(long = flag::DISK_SLOTS, default_value_t = 0)]
    disk_slots: u8,
    /// Hybrid vsock host socket.
    #[arg(long = flag::VSOCK_UDS)]
    vsock_uds: Option<PathBuf>,
    #[arg(long = flag::CID, default_value_t = GUEST_CID)]
    cid: u32,
    /// Raw disk image, PATH[,ro]; repeatable.
    #[arg(long = flag::DISK)]
    disk: Vec<DiskConfig>,
    /// virtio-fs served by a vhost-user back end (virtiofsd) listening on SOCKET; the guest
    /// mounts it by TAG (default "hull"). SOCKET[,tag=TAG]; repeatable.
    #[arg(long = flag::FS)]
    fs: Vec<FsConfig>,
    /// virtio-net NIC on a tap with virtio-net headers: fd=N (an open tap hull-vmm takes
    /// over) or tap=NAME (opened by name, for manual runs), mac=MAC, optional mtu=N
    /// (default 1500). fd=N|tap=NAME,mac=MAC[,mtu=N]; repeatable.
    #[arg(long = flag::NET)]
    net: Vec<NetConfig>,
    /// FILE|fd=N|stdout|off (a file or an open fd keeps the first 1 MiB).
    #[arg(long = flag::CONSOLE, default_value = "stdout")]
    console: ConsoleConfig,
    /// Log when the guest agent reports ready (port 0x3f0).
    #[arg(long = flag::BOOT_TIMER)]
    boot_timer: bool,
    /// No virtio-rng device.
    #[arg(long = flag::NO_RNG)]
    no_rng: bool,
    /// No virtio-balloon: the guest cannot report free memory for the host to release.
    #[arg(long = flag::NO_FREE_PAGE_REPORTING)]
    no_free_page_reporting: bool,
    /// Boot anyway on a software-KVM (kvm_pvm) host.
    #[arg(long = flag::ALLOW_SOFTWARE_KVM)]
    allow_software_kvm: bool,
    /// Test payload: flat real-mode code loaded and entered at 0x1000 instead of a kernel.
    #[arg(long = flag::RAW_PAYLOAD, conflicts_with = "kernel")]
    raw_payload: Option<PathBuf>,
    /// Enter the raw payload in 32-bit flat protected mode.
    #[arg(long = flag::RAW_PAYLOAD_32BIT, requires = "raw_payload")]
    raw_payload_32bit: bool,
    /// Print metrics as JSON on stderr when the VM ends.
    #[arg(long = flag::METRICS_ON_EXIT)]
    pub metrics_on_exit: bool,
    /// API socket (see vmm/API.md). With it, the flags above only pre-configure the VM and
    /// the VM boots on the API's `boot` action.
    #[arg(long = flag::API_SOCK)]
    pub api_sock: Option<PathBuf>,
    /// With --api-sock: boot from the flags at once; the socket then serves the running VM
    /// (metrics, rate limits, pause). The shim starts every pod's VM this way.
    #[arg(long = flag::BOOT, requires = "api_sock")]
    pub boot: bool,
    /// Do not install seccomp filters (debugging only).
    #[arg(long = flag::NO_SECCOMP)]
    pub no_seccomp: bool,
}

impl Args {
    /// The VM the flags describe, or `None` when they name neither a kernel nor a payload
    /// (the API's `configure` must then supply one).
    pub fn vm_config(&self) -> Option<VmConfig> {
        if self.kernel.is_none() && self.raw_payload.is_none() {
            return None;
        }
        Some(VmConfig {
            kernel: self.kernel.clone(),
            initrd: self.initrd.clone(),
            cmdline: match &self.cmdline_append {
                Some(extra) if !extra.trim().is_empty() => {
                    format!("{} {}", self.cmdline, extra.trim())
                }
                _ => self.cmdline.clone(),
            },
            vcpus: self.vcpus,
            mem_mib: self.mem_mib,
            hotplug: HotplugConfig {
                max_vcpus: self.max_vcpus,
                memory_mib: self.hotplug_mib,
                disk_slots: self.disk_slots,
            },
            vsock: self
                .vsock_uds
                .clone()
                .map(|uds| VsockConfig { uds, cid: self.cid }),
            disks: self.disk.clone(),
            fs: self.fs.clone(),
            net: self.net.clone(),
            rng: !self.no_rng,
            free_page_reporting: !self.no_free_page_reporting,
            console: self.console.clone(),
            boot_timer: self.boot_timer,
            allow_software_kvm: self.allow_software_kvm,
            raw_payload: self.raw_payload.clone(),
            raw_payload_32bit: self.raw_payload_32bit,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::ffi::OsString;

    use hull_contract::vmm_args::{
        Bucket, Console, DiskArg, FsArg, IoLimit, NetArg, TapArg, VmmArgs,
    };

    use super::*;
    use crate::config::{BucketConfig, LimitConfig};

    fn bucket(s: &str) -> Bucket {
        s.parse().unwrap()
    }

    /// What the command line carries: the default burst written out.
    fn limit(rate: u64, burst: Option<u64>, one_time_burst: u64) -> BucketConfig {
        BucketConfig {
            rate,
            burst: Some(burst.unwrap_or((rate / 10).max(1))),
            one_time_burst,
        }
    }

    fn parse(a: &VmmArgs) -> Args {
        Args::try_parse_from([OsString::from("hull-vmm")].into_iter().chain(a.to_args()))
            .expect("hull-vmm parses what VmmArgs writes")
    }

    #[test]
    fn every_vmm_args_field_round_trips() {
        let a = VmmArgs {
            kernel: Some("/k/vmlinux".into()),
            initrd: Some("/k/initrd.img".into()),
            cmdline: Some("console=ttyS0 quiet".into()),
            cmdline_append: Some(" foo=1 ".into()),
            vcpus: Some(4),
            mem_mib: Some(768),
            max_vcpus: Some(8),
            hotplug_mib: Some(1024),
            disk_slots: Some(2),
            vsock_uds: Some("/run/pod/vsock.sock".into()),
            cid: Some(7),
            disks: vec![
                DiskArg {
                    path: "/img/a,b.raw".into(),
                    read_only: true,
                    limit: IoLimit::default(),
                },
                DiskArg {
                    path: "/img/c,bytes=1.raw".into(),
                    read_only: false,
                    limit: IoLimit {
                        bytes: Some(bucket("1000000")),
                        ops: Some(bucket("100:10:1000")),
                    },
                },
            ],
            fs: vec![FsArg {
                socket: "/run/pod/a,tag.sock".into(),
                tag: "share".into(),
            }],
            net: vec![
                NetArg::fd(3, "02:00:00:00:00:01", 1450),
                NetArg {
                    tap: TapArg::Name("tap0".into()),
                    mac: "02:00:00:00:00:02".into(),
                    mtu: None,
                    rx: IoLimit {
                        bytes: Some(bucket("12500000:1250000")),
                        ops: None,
                    },
                    tx: IoLimit {
                        bytes: None,
                        ops: Some(bucket("1000")),
                    },
                },
            ],
            console: Console::File("off".into()),
            boot_timer: true,
            no_rng: true,
            no_free_page_reporting: true,
            allow_software_kvm: true,
            metrics_on_exit: true,
            api_sock: Some("/run/pod/api.sock".into()),
            boot: true,
            no_seccomp: true,
        };
        let args = parse(&a);
        assert_eq!(
            args.vm_config(),
            Some(VmConfig {
                kernel: Some("/k/vmlinux".into()),
                initrd: Some("/k/initrd.img".into()),
                cmdline: "console=ttyS0 quiet foo=1".into(),
                vcpus: 4,
                mem_mib: 768,
                hotplug: HotplugConfig {
                    max_vcpus: 8,
                    memory_mib: 1024,
                    disk_slots: 2,
                },
                vsock: Some(VsockConfig {
                    uds: "/run/pod/vsock.sock".into(),
                    cid: 7,
                }),
                disks: vec![
                    DiskConfig {
                        path: "/img/a,b.raw".into(),
                        read_only: true,
                        limit: LimitConfig::default(),
                    },
                    DiskConfig {
                        path: "/img/c,bytes=1.raw".into(),
                        read_only: false,
                        limit: LimitConfig {
                            bytes: Some(limit(1_000_000, None, 0)),
                            ops: Some(limit(100, Some(10), 1000)),
                        },
                    },
                ],
                fs: vec![FsConfig {
                    socket: "/run/pod/a,tag.sock".into(),
                    tag: "share".into(),
                }],
                net: vec![
                    NetConfig {
                        fd: Some(3),
                        tap: None,
                        mac: "02:00:00:00:00:01".into(),
                        mtu: Some(1450),
                        rx: LimitConfig::default(),
                        tx: LimitConfig::default(),
                    },
                    NetConfig {
                        fd: None,
                        tap: Some("tap0".into()),
                        mac: "02:00:00:00:00:02".into(),
                        mtu: None,
                        rx: LimitConfig {
                            bytes: Some(limit(12_500_000, Some(1_250_000), 0)),
                            ops: None,
                        },
                        tx: LimitConfig {
                            bytes: None,
                            ops: Some(limit(1000, Some(100), 0)),
                        },
                    },
                ],
                rng: false,
                free_page_reporting: false,
                console: ConsoleConfig::File("./off".into()),
                boot_timer: true,
                allow_software_kvm: true,
                raw_payload: None,
                raw_payload_32bit: false,
            })
        );
        assert_eq!(args.api_sock, Some(PathBuf::from("/run/pod/api.sock")));
        assert!(args.metrics_on_exit && args.no_seccomp && args.boot);
    }

    #[test]
    fn defaults_are_the_contract_defaults() {
        let args = parse(&VmmArgs::new("/k", 1, 128));
        let c = args.vm_config().expect("a kernel was given");
        assert_eq!(
            c,
            VmConfig {
                kernel: Some("/k".into()),
                ..VmConfig::default()
            }
        );
        let args = parse(&VmmArgs {
            vsock_uds: Some("/v".into()),
            ..VmmArgs::new("/k", 1, 128)
        });
        let vsock = args.vm_config().and_then(|c| c.vsock).expect("vsock");
        assert_eq!(vsock.cid, GUEST_CID);
        assert!(!args.metrics_on_exit && !args.no_seccomp && args.api_sock.is_none());
        assert_eq!(parse(&VmmArgs::default()).vm_config(), None);
    }

    #[test]
    fn every_console_form_round_trips() {
        for (console, want) in [
            (Console::Stdout, ConsoleConfig::Stdout),
            (Console::Off, ConsoleConfig::Off),
            (Console::Fd(5), ConsoleConfig::Fd(5)),
            (
                Console::File("/run/c.log".into()),
                ConsoleConfig::File("/run/c.log".into()),
            ),
            (
                Console::File("stdout".into()),
                ConsoleConfig::File("./stdout".into()),
            ),
            (
                Console::File("fd=5".into()),
                ConsoleConfig::File("./fd=5".into()),
            ),
        ] {
            let a = VmmArgs {
                console: console.clone(),
                ..VmmArgs::new("/k", 1, 128)
            };
            let got = parse(&a).vm_config().expect("a kernel was given").console;
            assert_eq!(got, want, "{console:?}");
        }
    }
}
