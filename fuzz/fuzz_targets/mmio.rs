//! The virtio-mmio transport under arbitrary register sequences from a guest driver: reads
//! and writes of any width at any offset (config space included), status changes in any
//! order, queue setup with rings anywhere, and notifications that make the device (rng,
//! blk or vsock) serve whatever guest memory holds by then.
#![no_main]

use std::sync::{Arc, Mutex};

use arbitrary::Arbitrary;
use hull_fuzz::guest::{self, Addr};
use hull_vmm::devices::virtio::{IrqTrigger, VirtioDevice};
use hull_vmm::fuzzing::{
    Block, BusDevice, MmioTransport, Muxer, Rng, Vsock, STATUS_DRIVER, STATUS_DRIVER_OK,
    STATUS_FEATURES_OK,
};
use libfuzzer_sys::fuzz_target;
use vm_memory::{Bytes, GuestAddress};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

const MAGIC: u32 = 0x7472_6976;

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Kind {
    Rng,
    Blk,
    Vsock,
}

#[derive(Arbitrary, Debug)]
enum Op {
    Write {
        offset: u16,
        width: u8,
        value: u64,
    },
    Read {
        offset: u16,
        width: u8,
    },
    /// The guest writes its memory (rings, requests).
    Mem {
        addr: Addr,
        bytes: Vec<u8>,
    },
    /// A Linux driver's setup up to DRIVER_OK, with these rings for every queue.
    Setup {
        desc: Addr,
        avail: Addr,
        used: Addr,
        size: u16,
    },
    /// The driver notified a queue: the device serves it.
    Notify,
}

#[derive(Arbitrary, Debug)]
struct Input {
    kind: Kind,
    ops: Vec<Op>,
}

enum Dev {
    Rng(Arc<Mutex<Rng>>),
    /// The disk image and the socket directory live as long as the device.
    Blk(
        Arc<Mutex<Block>>,
        #[allow(dead_code)] tempfile::NamedTempFile,
    ),
    Vsock(Arc<Mutex<Vsock>>, #[allow(dead_code)] tempfile::TempDir),
}

impl Dev {
    fn new(kind: Kind) -> Self {
        match kind {
            Kind::Rng => Dev::Rng(Arc::new(Mutex::new(Rng::new().expect("rng")))),
            Kind::Blk => {
                let disk = tempfile::NamedTempFile::new().expect("disk");
                disk.as_file().set_len(64 * 1024).expect("size");
                let b = Block::new(disk.path(), false).expect("blk");
                Dev::Blk(Arc::new(Mutex::new(b)), disk)
            }
            Kind::Vsock => {
                let dir = tempfile::tempdir().expect("tempdir");
                let mux = Muxer::new(3, &dir.path().join("v")).expect("muxer");
                Dev::Vsock(
                    Arc::new(Mutex::new(Vsock::new(3, mux).expect("vsock"))),
                    dir,
                )
            }
        }
    }

    fn dyn_dev(&self) -> Arc<Mutex<dyn VirtioDevice>> {
        match self {
            Dev::Rng(d) => d.clone(),
            Dev::Blk(d, _) => d.clone(),
            Dev::Vsock(d, _) => d.clone(),
        }
    }

    fn serve(&self) {
        match self {
            Dev::Rng(d) => {
                d.lock().expect("lock").process_queue();
            }
            Dev::Blk(d, _) => {
                d.lock().expect("lock").process_queue();
            }
            Dev::Vsock(d, _) => {
                let mut d = d.lock().expect("lock");
                d.process_tx();
                d.process_rx();
            }
        }
    }
}

fn write(t: &mut MmioTransport, offset: u64, v: u32) {
    t.write(offset, &v.to_le_bytes());
}

fn read(t: &mut MmioTransport, offset: u64) -> u32 {
    let mut b = [0u8; 4];
    t.read(offset, &mut b);
    u32::from_le_bytes(b)
}

fn setup(t: &mut MmioTransport, queues: u32, rings: [u64; 3], size: u16) {
    write(t, 0x70, STATUS_DRIVER);
    for sel in 0..2 {
        write(t, 0x14, sel);
        let f = read(t, 0x10);
        write(t, 0x24, sel);
        write(t, 0x20, f);
    }
    write(t, 0x70, STATUS_DRIVER | STATUS_FEATURES_OK);
    for q in 0..queues {
        write(t, 0x30, q);
        write(t, 0x38, u32::from(size));
        for (reg, addr) in [0x80, 0x90, 0xa0].into_iter().zip(rings) {
            write(t, reg, u32::try_from(addr & 0xffff_ffff).expect("masked"));
            write(t, reg + 4, u32::try_from(addr >> 32).expect("high half"));
        }
        write(t, 0x44, 1);
    }
    write(
        t,
        0x70,
        STATUS_DRIVER | STATUS_FEATURES_OK | STATUS_DRIVER_OK,
    );
}

fuzz_target!(|input: Input| {
    let mem = guest::memory();
    let dev = Dev::new(input.kind);
    let queues = u32::try_from(dev.dyn_dev().lock().expect("lock").queues().len()).expect("few");
    let irq = Arc::new(IrqTrigger::new(
        EventFd::new(EFD_NONBLOCK).expect("eventfd"),
    ));
    let mut t = MmioTransport::new(dev.dyn_dev(), mem.clone(), irq);
    for op in input.ops.iter().take(64) {
        match op {
            Op::Write {
                offset,
                width,
                value,
            } => {
                let w = 1usize << (width % 4);
                t.write(u64::from(offset % 0x200), &value.to_le_bytes()[..w]);
            }
            Op::Read { offset, width } => {
                let mut b = vec![0u8; 1usize << (width % 4)];
                t.read(u64::from(offset % 0x200), &mut b);
            }
            Op::Mem { addr, bytes } => {
                let _ = mem.write_slice(bytes, GuestAddress(addr.resolve()));
            }
            Op::Setup {
                desc,
                avail,
                used,
                size,
            } => {
                setup(
                    &mut t,
                    queues,
                    [desc.resolve(), avail.resolve(), used.resolve()],
                    *size,
                );
            }
            Op::Notify => dev.serve(),
        }
        assert_eq!(read(&mut t, 0), MAGIC, "the magic value never changes");
    }
});
