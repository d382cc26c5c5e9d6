//! Wire types of the shim <-> agent API. Filled in by the proto work.
