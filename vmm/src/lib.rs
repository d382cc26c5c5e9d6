//! hull-vmm: one KVM microVM per process (DESIGN §2 vmm/). The only crate that uses
//! `kvm-ioctls`.

pub mod hostcheck;
