//! The i8042 keyboard controller, enough of it for Linux's driver to probe quickly (a
//! controller whose status never shows data makes every probe command wait for its timeout)
//! and for the CPU reset command (0xfe on port 0x64): a guest booted with `reboot=k` leaves
//! through it and the VMM exits with status 0. There is no keyboard behind it.

use std::collections::VecDeque;
use std::sync::Arc;

use vmm_sys_util::eventfd::EventFd;

use crate::device_manager::bus::BusDevice;
use crate::exit::{ExitReason, VmExit};

const OFF_DATA: u64 = 0;
const OFF_CMD: u64 = 4;

const SB_OUT_FULL: u8 = 0x01;
const SB_SYS: u8 = 0x04;
const SB_LAST_WAS_CMD: u8 = 0x08;
const SB_KBD_ENABLED: u8 = 0x10;

const CTR_KBD_INT: u8 = 0x01;
const CTR_SYS: u8 = 0x04;
const CTR_KBD_DISABLE: u8 = 0x10;
const CTR_AUX_DISABLE: u8 = 0x20;
const CTR_XLATE: u8 = 0x40;

const CMD_READ_CTR: u8 = 0x20;
const CMD_WRITE_CTR: u8 = 0x60;
const CMD_AUX_DISABLE: u8 = 0xa7;
const CMD_AUX_ENABLE: u8 = 0xa8;
const CMD_AUX_TEST: u8 = 0xa9;
const CMD_SELF_TEST: u8 = 0xaa;
const CMD_KBD_TEST: u8 = 0xab;
const CMD_KBD_DISABLE: u8 = 0xad;
const CMD_KBD_ENABLE: u8 = 0xae;
const CMD_READ_INPUT: u8 = 0xc0;
const CMD_READ_OUTP: u8 = 0xd0;
const CMD_WRITE_OUTP: u8 = 0xd1;
const CMD_WRITE_KBD_OUT: u8 = 0xd2;
const CMD_WRITE_AUX_OUT: u8 = 0xd3;
const CMD_WRITE_AUX: u8 = 0xd4;
const CMD_RESET_CPU: u8 = 0xfe;

const KBD_ACK: u8 = 0xfa;
const KBD_RESET: u8 = 0xff;
const KBD_IDENTIFY: u8 = 0xf2;
const KBD_ECHO: u8 = 0xee;
const KBD_SELF_TEST_OK: u8 = 0xaa;

const BUF_MAX: usize = 16;

/// The i8042 on the port bus at 0x60..=0x64.
#[derive(Debug)]
pub struct I8042 {
    exit: Arc<VmExit>,
    irq: Option<EventFd>,
    ctr: u8,
    outp: u8,
    status: u8,
    buf: VecDeque<u8>,
    /// A command waiting for its data byte.
    pending: Option<u8>,
}

impl I8042 {
    /// `irq` raises IRQ 1 when the controller has data and keyboard interrupts are on.
    pub fn new(exit: Arc<VmExit>, irq: Option<EventFd>) -> Self {
        I8042 {
            exit,
            irq,
            ctr: CTR_KBD_INT | CTR_SYS | CTR_XLATE,
            outp: 0x01,
            status: SB_SYS | SB_KBD_ENABLED,
            buf: VecDeque::new(),
            pending: None,
        }
    }

    fn push(&mut self, b: u8) {
        if self.buf.len() < BUF_MAX {
            self.buf.push_back(b);
        }
        if self.ctr & CTR_KBD_INT != 0 {
            if let Some(irq) = &self.irq {
                let _ = irq.write(1);
            }
        }
    }

    fn command(&mut self, cmd: u8) {
        match cmd {
            CMD_READ_CTR => self.push(self.ctr),
            CMD_WRITE_CTR | CMD_WRITE_OUTP | CMD_WRITE_KBD_OUT | CMD_WRITE_AUX_OUT
            | CMD_WRITE_AUX => self.pending = Some(cmd),
            CMD_AUX_DISABLE => self.ctr |= CTR_AUX_DISABLE,
            CMD_AUX_ENABLE => self.ctr &= !CTR_AUX_DISABLE,
            CMD_AUX_TEST => self.push(0xff), // no aux port
            CMD_SELF_TEST => self.push(0x55),
            CMD_KBD_TEST => self.push(0x00),
            CMD_KBD_DISABLE => self.ctr |= CTR_KBD_DISABLE,
            CMD_KBD_ENABLE => self.ctr &= !CTR_KBD_DISABLE,
            CMD_READ_INPUT => self.push(0x00),
            CMD_READ_OUTP => self.push(self.outp),
            CMD_RESET_CPU => self.exit.signal(ExitReason::GuestReset),
            _ => {}
        }
    }

    fn data(&mut self, b: u8) {
        match self.pending.take() {
            Some(CMD_WRITE_CTR) => self.ctr = b,
            Some(CMD_WRITE_OUTP) => self.outp = b,
            Some(CMD_WRITE_KBD_OUT) => self.push(b),
            Some(_) => {} // aux: nothing attached
            None => match b {
                // Commands to the (absent) keyboard: answer like a plain one would.
                KBD_RESET => {
                    self.push(KBD_ACK);
                    self.push(KBD_SELF_TEST_OK);
                }
                KBD_IDENTIFY => {
                    self.push(KBD_ACK);
                    self.push(0xab);
                    self.push(0x83);
                }
                KBD_ECHO => self.push(KBD_ECHO),
                _ => self.push(KBD_ACK),
            },
        }
    }
}

impl BusDevice for I8042 {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        let [d] = data else {
            data.fill(0xff);
            return;
        };
        *d = match offset {
            OFF_DATA => self.buf.pop_front().unwrap_or(0),
            OFF_CMD => {
                let full = if self.buf.is_empty() { 0 } else { SB_OUT_FULL };
                self.status | full
            }
            _ => 0xff,
        };
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        let [b] = data else {
            return;
        };
        match offset {
            OFF_CMD => {
                self.status |= SB_LAST_WAS_CMD;
                self.command(*b);
            }
            OFF_DATA => {
                self.status &= !SB_LAST_WAS_CMD;
                self.data(*b);
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rd(d: &mut I8042, off: u64) -> u8 {
        let mut b = [0u8];
        d.read(off, &mut b);
        b[0]
    }

    #[test]
    fn reset_command_signals_guest_reset() {
        let exit = Arc::new(VmExit::new().unwrap());
        let mut d = I8042::new(exit.clone(), None);
        d.write(OFF_CMD, &[CMD_RESET_CPU]);
        assert_eq!(exit.reason(), Some(ExitReason::GuestReset));
        assert_eq!(exit.eventfd().read().unwrap(), 1);
    }

    #[test]
    fn linux_probe_sequence_gets_answers() {
        let exit = Arc::new(VmExit::new().unwrap());
        let irq = EventFd::new(vmm_sys_util::eventfd::EFD_NONBLOCK).unwrap();
        let mut d = I8042::new(exit.clone(), Some(irq.try_clone().unwrap()));
        assert_eq!(rd(&mut d, OFF_CMD) & SB_OUT_FULL, 0);
        d.write(OFF_CMD, &[CMD_READ_CTR]);
        assert_eq!(rd(&mut d, OFF_CMD) & SB_OUT_FULL, SB_OUT_FULL);
        let ctr = rd(&mut d, OFF_DATA);
        assert_eq!(ctr & CTR_KBD_INT, CTR_KBD_INT);
        assert_eq!(rd(&mut d, OFF_CMD) & SB_OUT_FULL, 0);
        assert!(irq.read().is_ok(), "IRQ 1 raised");
        d.write(OFF_CMD, &[CMD_WRITE_CTR]);
        d.write(OFF_DATA, &[0x00]);
        d.write(OFF_CMD, &[CMD_READ_CTR]);
        assert_eq!(rd(&mut d, OFF_DATA), 0);
        d.write(OFF_CMD, &[CMD_SELF_TEST]);
        assert_eq!(rd(&mut d, OFF_DATA), 0x55);
        d.write(OFF_DATA, &[KBD_RESET]);
        assert_eq!(
            (rd(&mut d, OFF_DATA), rd(&mut d, OFF_DATA)),
            (KBD_ACK, KBD_SELF_TEST_OK)
        );
        assert_eq!(exit.reason(), None);
        // Odd widths are ignored.
        d.write(OFF_CMD, &[CMD_RESET_CPU, 0]);
        assert_eq!(exit.reason(), None);
    }
}
