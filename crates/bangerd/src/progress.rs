//! Progress as services report it: an [`Emit`] takes one event at a time
//! (a request's stream, or an operation's record and watchers), so a
//! service reports without knowing which.

use std::sync::Arc;

use banger_proto::rpc::Progress;

/// Where a step reports its progress.
pub type Emit = Arc<dyn Fn(Progress) + Send + Sync>;
