//! The agent's ttrpc services, one module per proto service. Each handler only validates,
//! traces and maps errors; the work happens in `do_*` functions testable without ttrpc.

pub mod health;
