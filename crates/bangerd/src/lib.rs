//! `bangerd`, the owner daemon, as a library so its pieces can be tested.

pub mod config;
pub mod crashpoint;
pub mod daemon;
pub mod dns;
pub mod doctor;
pub mod flows;
pub mod handles;
pub mod identity;
pub mod image;
pub mod layout;
pub mod locks;
pub mod network;
pub mod privileged;
pub mod progress;
pub mod server;
pub mod ssh_masters;
pub mod startup;
pub mod store;
pub mod vm;
pub mod workspace;
