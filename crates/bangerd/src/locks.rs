//! The per-VM lock table (`vm_locks[id]` of ARCHITECTURE.md, "Locks"):
//! VmService holds a VM's lock for every lifecycle change, WorkspaceService
//! only to read its row. Its own module, so neither service owns the other.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

#[derive(Debug, Default)]
pub struct VmLocks(Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>);

impl VmLocks {
    pub fn get(&self, id: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.0.lock().expect("vm locks poisoned");
        Arc::clone(locks.entry(id.to_string()).or_default())
    }
}
