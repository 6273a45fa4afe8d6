//! The banger wire contract.
//!
//! Everything that crosses a socket or a privilege boundary is defined here and
//! nowhere else: the public RPC between `banger` and `bangerd`, the closed set of
//! privileged operations served by `bangerd-root`, the frame format both use,
//! and the install metadata that tells the two daemons who the owner is.
//!
//! All message types reject unknown fields: a peer that sends something this
//! version does not understand gets a clear error rather than silent loss.

/// A closed set of values that crosses a socket (and may be stored) as one
/// word: serde's spelling, `as_str`, `Display` and `FromStr` are the same
/// text, written once per variant.
macro_rules! word_enum {
    (
        $(#[$meta:meta])*
        $vis:vis enum $name:ident ($what:literal) {
            $($(#[$vmeta:meta])* $variant:ident => $text:literal,)+
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
        $vis enum $name {
            $($(#[$vmeta])* #[serde(rename = $text)] $variant,)+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant,)+];

            /// The value's one spelling (its JSON string too).
            pub const fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)+
                }
            }
        }

        /// The word, padded as the format asks (`{:<9}` in a table).
        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.pad(self.as_str())
            }
        }

        impl std::str::FromStr for $name {
            type Err = String;

            fn from_str(s: &str) -> Result<$name, String> {
                $name::ALL
                    .iter()
                    .copied()
                    .find(|v| v.as_str() == s)
                    .ok_or_else(|| {
                        format!(
                            concat!("unknown ", $what, " {:?}, expected one of {}"),
                            s,
                            [$($text),+].join(", ")
                        )
                    })
            }
        }
    };
}

pub mod cidr;
pub mod doctor;
pub mod error;
pub mod frame;
pub mod guest;
pub mod ids;
pub mod image;
pub mod install;
pub mod layout;
pub mod limits;
pub mod net;
pub mod privops;
pub mod rpc;
pub mod snapshot;
pub mod vm;
pub mod vmops;
pub mod workspace;

pub use error::{ErrorCode, RpcError};

/// Version of the banger binaries this crate was built with.
pub const BANGER_VERSION: &str = env!("CARGO_PKG_VERSION");
