//! Host primitives used by the privileged-ops executor and the daemons.
//!
//! Everything here talks to the host kernel or runs host tools. Nothing here
//! decides policy (who may ask for what): that is the executor's and the
//! daemons' job.

pub mod devguard;
pub mod jail;
pub mod mounts;
pub mod net;
pub mod peer;
pub mod probe;
pub mod runner;
pub mod socket;
// Test support only: other crates' tests enable it through their
// dev-dependencies, so no shipped binary (the root helper above all)
// contains it.
#[cfg(any(test, feature = "test-support"))]
pub mod watch;
