//! Row types and the closed value sets stored in TEXT columns.
//!
//! These are plain Rust types, deliberately not serde: what crosses a socket
//! is defined in `banger-proto`, and services map between the two. The
//! closed sets that also cross the public RPC (a VM's state, an
//! operation's kind and state, the VMM kind) are proto's own types, stored
//! as their wire words (`store::get_word` reads them back; the schema's
//! CHECKs list their `ALL`).

use std::fmt;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::str::FromStr;

/// Declares a closed set of values stored as TEXT, with the same spellings as
/// the schema's CHECK constraints.
macro_rules! text_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident => $text:literal,)+ }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vmeta])* $variant,)+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant,)+];

            /// The spelling used in the store (and in config files).
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)+
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = UnknownValue;

            fn from_str(s: &str) -> Result<Self, UnknownValue> {
                match s {
                    $($text => Ok($name::$variant),)+
                    _ => Err(UnknownValue {
                        kind: stringify!($name),
                        value: s.to_owned(),
                        accepted: &[$($text,)+],
                    }),
                }
            }
        }
    };
}

/// A string that is not one of a closed set of values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {kind} {value:?}, expected one of {}", accepted.join(", "))]
pub struct UnknownValue {
    pub kind: &'static str,
    pub value: String,
    pub accepted: &'static [&'static str],
}

text_enum! {
    /// Where a kernel came from.
    KernelSource {
        /// `banger kernel import PATH|DEB`.
        Import => "import",
        /// `banger kernel pull NAME`.
        Pull => "pull",
        /// Shipped inside an image bundle.
        Bundle => "bundle",
    }
}

text_enum! {
    /// Where an image came from.
    ImageSource {
        /// `banger image register` of a local rootfs.
        Register => "register",
        /// Pulled from an OCI registry and flattened.
        Oci => "oci",
        /// Pulled as a banger image bundle.
        Bundle => "bundle",
        /// Built locally (`banger image build`).
        Build => "build",
        /// Promoted from a VM's disk.
        Promote => "promote",
    }
}

/// Lifecycle state of a VM as recorded in the store. The store only
/// enforces compare-and-set; which transitions are legal is decided by the
/// VM service.
pub use banger_proto::vm::VmState;

/// The hypervisor backend of a VM: the seam's one VMM kind.
pub use banger_proto::vmops::VmmKind as Vmm;

/// What an asynchronous operation does, and its state.
pub use banger_proto::vm::{OpKind, OpState as OperationState};

/// A kernel to record. `id` and `created_at` are assigned by the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewKernel {
    pub name: String,
    /// Guest architecture, e.g. `x86_64`.
    pub arch: String,
    pub kernel_path: PathBuf,
    pub initrd_path: Option<PathBuf>,
    /// Lowercase hex SHA-256 of the kernel image.
    pub sha256: String,
    pub source: KernelSource,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelRow {
    pub id: String,
    pub name: String,
    pub arch: String,
    pub kernel_path: PathBuf,
    pub initrd_path: Option<PathBuf>,
    pub sha256: String,
    pub source: KernelSource,
    /// Unix seconds.
    pub created_at: i64,
}

/// An image to record. `id` and `created_at` are assigned by the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewImage {
    pub name: String,
    pub rootfs_path: PathBuf,
    pub kernel_id: String,
    pub size_bytes: u64,
    pub source: ImageSource,
    /// Where the source lives (OCI reference, bundle URL, VM name, ...).
    pub source_ref: Option<String>,
    /// The managed work-disk seed, once built.
    pub work_seed_path: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRow {
    pub id: String,
    pub name: String,
    pub rootfs_path: PathBuf,
    pub kernel_id: String,
    pub size_bytes: u64,
    pub source: ImageSource,
    pub source_ref: Option<String>,
    pub work_seed_path: Option<PathBuf>,
    /// Unix seconds.
    pub created_at: i64,
}

/// A VM to record. It starts in [`VmState::Created`]; `id` and timestamps
/// are assigned by the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewVm {
    pub name: String,
    pub image_id: String,
    pub vmm: Vmm,
    pub vcpus: u32,
    pub memory_mib: u32,
    pub disk_bytes: u64,
    pub nat: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmRow {
    pub id: String,
    pub name: String,
    pub image_id: String,
    pub state: VmState,
    /// Why the VM is in its state (set on failures and forced stops).
    pub state_reason: Option<String>,
    pub vmm: Vmm,
    pub vcpus: u32,
    pub memory_mib: u32,
    pub disk_bytes: u64,
    pub nat: bool,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds.
    pub updated_at: i64,
}

/// New resources and NAT setting of a stopped VM (`vm set`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmConfigUpdate {
    pub vcpus: u32,
    pub memory_mib: u32,
    pub disk_bytes: u64,
    pub nat: bool,
}

/// The address half of a lease; the VM half is the VM being created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewLease {
    pub ip: Ipv4Addr,
    /// Lowercase `aa:bb:cc:dd:ee:ff`.
    pub mac: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseRow {
    pub ip: Ipv4Addr,
    pub vm_id: String,
    pub mac: String,
    /// Unix seconds.
    pub leased_at: i64,
}

/// An operation to record; it starts in [`OperationState::Running`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewOperation {
    /// What the operation does.
    pub kind: OpKind,
    pub vm_id: Option<String>,
    pub stage: Option<String>,
    /// Total units of work, when known.
    pub total: Option<u64>,
}

/// How an operation ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OperationOutcome {
    Succeeded,
    Failed {
        /// Stable error code (`banger_proto::ErrorCode::as_str`).
        code: String,
        /// Messages from outermost context to root cause.
        messages: Vec<String>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OperationRow {
    pub id: String,
    pub kind: OpKind,
    /// `None` once the VM is deleted (or for operations without a VM).
    pub vm_id: Option<String>,
    pub state: OperationState,
    pub stage: Option<String>,
    pub done: u64,
    pub total: Option<u64>,
    pub error_code: Option<String>,
    pub error_messages: Option<Vec<String>>,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds.
    pub updated_at: i64,
    /// Unix seconds; set exactly when the state is not `running`.
    pub finished_at: Option<i64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_enums_round_trip_and_reject_unknown() {
        for s in ImageSource::ALL {
            assert_eq!(s.as_str().parse::<ImageSource>().unwrap(), *s);
        }
        let err = "copy".parse::<ImageSource>().unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown ImageSource \"copy\", expected one of register, oci, bundle, build, \
             promote"
        );
        assert_eq!("qemu".parse::<Vmm>().unwrap(), Vmm::Qemu);
    }
}
