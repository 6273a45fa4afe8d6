//! The banger wire contract.
//!
//! Everything that crosses a socket or a privilege boundary is defined here and
//! nowhere else: the public RPC between `banger` and `bangerd`, the closed set of
//! privileged operations served by `bangerd-root`, the frame format both use,
//! and the install metadata that tells the two daemons who the owner is.
//!
//! All message types reject unknown fields: a peer that sends something this
//! version does not understand gets a clear error rather than silent loss.

pub mod cidr;
pub mod doctor;
pub mod error;
pub mod frame;
pub mod guest;
pub mod image;
pub mod install;
pub mod layout;
pub mod limits;
pub mod net;
pub mod privops;
pub mod rpc;
pub mod vm;
pub mod vmops;
pub mod workspace;

pub use error::{ErrorCode, RpcError};

/// Version of the banger binaries this crate was built with.
pub const BANGER_VERSION: &str = env!("CARGO_PKG_VERSION");
