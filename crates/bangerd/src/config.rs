//! The owner's configuration file, `~/.config/banger/config.toml`
//! (`$XDG_CONFIG_HOME/banger/config.toml` when that is set), or the file
//! given with `--config`.
//!
//! A missing default file means built-in defaults; a missing explicit file is
//! an error. Unknown keys are errors. Every error names the file and the key,
//! and for bad values what would be accepted.
//!
//! ```toml
//! [network]
//! bridge = "banger0"        # "banger" + [a-z0-9-], at most 15 characters
//! subnet = "172.30.0.0/24"  # private IPv4 network, /16 to /29
//! tap_pool = 4              # pre-created taps, 0..=64
//! nat_default = true
//! allow_inter_vm = false    # may guests reach each other across the bridge
//! dns_upstreams = ["192.0.2.53", "192.0.2.54:5353"]  # default: /etc/resolv.conf
//! [vm]
//! default_vmm = "firecracker"   # or "qemu"
//! default_vcpus = 2             # 1..=64 (Firecracker VMs: 1..=32)
//! default_memory_mib = 1024     # 128..=1048576 (and at most the host's)
//! default_disk = "8G"           # K/M/G/T suffixes (powers of 1024)
//! boot_timeout_secs = 240       # 5..=3600: how long a booting guest gets to report ready
//! [vmm]                         # dev mode only; system mode uses the install's binaries
//! firecracker_bin = "firecracker"       # bare name (looked up on PATH) or absolute path
//! qemu_bin = "qemu-system-x86_64"
//! [pool]                        # the warm pool: restored-and-paused clones `vm create` takes
//! size = 0                      # clones kept per image, 0..=16 (0: no pool)
//! max_memory = "2G"             # memory of all pooled clones together (K/M/G/T)
//! max_load_percent = 100        # refill only while the 1-min load average is below this % of the CPUs
//! [pool.images]                 # per image, overriding `size`
//! debian = 2
//! [diagnostics]                 # overrides for testing and diagnosis, never for normal use
//! assume_kvm_usable = false     # ignore the executor's KVM verdict: treat KVM as usable
//! [[file_sync]]                 # owner files copied into guests on create and prepare
//! host = "~/.config/nvim"       # beneath the owner's home; private keys refused
//! guest = "~/.config/nvim"      # beneath the guest user's home
//! ```

use std::ffi::OsString;
use std::net::{Ipv4Addr, SocketAddr};
use std::ops::{Range, RangeInclusive};
use std::path::{Path, PathBuf};

use banger_proto::limits;
use serde::Deserialize;
use toml::Spanned;
use toml::de::{DeTable, DeValue};

use crate::store::Vmm;
pub use banger_proto::cidr::{CidrError, Ipv4Cidr};

/// The resolved owner configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub network: NetworkConfig,
    pub vm: VmConfig,
    pub vmm: VmmConfig,
    pub diagnostics: DiagnosticsConfig,
    pub pool: PoolConfig,
    /// Owner files copied into guests (`[[file_sync]]`), in file order.
    pub file_sync: Vec<FileSync>,
}

/// One `[[file_sync]]` entry: paths relative to the owner's home on the
/// host and to the guest user's home in the guest, both checked to stay
/// beneath their home (the host side again at open time, see
/// `workspace::files`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileSync {
    /// Relative to the owner's home, no `..`, not empty.
    pub host: PathBuf,
    /// Relative to the guest user's home, no `..`, not empty.
    pub guest: PathBuf,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkConfig {
    /// Name of the host bridge banger owns.
    pub bridge: String,
    /// The guest network; the bridge takes its first host address.
    pub subnet: Ipv4Cidr,
    /// How many taps to keep pre-created.
    pub tap_pool: u32,
    /// Whether new VMs get outbound NAT unless told otherwise.
    pub nat_default: bool,
    /// Whether guests may reach each other across the bridge.
    pub allow_inter_vm: bool,
    /// Where the `.vm` DNS server forwards other names; `None` means the
    /// host's resolvers from `/etc/resolv.conf`.
    pub dns_upstreams: Option<Vec<SocketAddr>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmConfig {
    pub default_vmm: Vmm,
    pub default_vcpus: u32,
    pub default_memory_mib: u32,
    pub default_disk_bytes: u64,
    /// How long a booting guest gets to report ready before the start fails.
    pub boot_timeout_secs: u32,
}

/// The VMM binaries in effect. Dev mode: the owner's `[vmm]`. System mode:
/// the install metadata's (startup replaces these with
/// [`VmmConfig::from_install`]), because the root helper launches those.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmmConfig {
    /// A bare program name (looked up on `PATH` when spawned) or an absolute
    /// path; `None` when the install recorded no Firecracker.
    pub firecracker_bin: Option<PathBuf>,
    /// Same rules as `firecracker_bin`.
    pub qemu_bin: Option<PathBuf>,
}

impl VmmConfig {
    /// System mode: exactly the binaries `banger system install` recorded.
    pub fn from_install(v: &banger_proto::install::InstallVmm) -> VmmConfig {
        VmmConfig {
            firecracker_bin: v.firecracker_bin.clone(),
            qemu_bin: v.qemu_bin.clone(),
        }
    }
}

/// `[pool]`: the warm pool (`vm::pool`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolConfig {
    /// Clones kept per image with no entry in `images`.
    pub size: u32,
    /// Per image name, overriding `size`.
    pub images: std::collections::BTreeMap<String, u32>,
    /// The memory of every pooled clone together, in MiB: a refill that
    /// would pass it waits.
    pub max_memory_mib: u64,
    /// A refill starts only while the 1-minute load average is below this
    /// percentage of the host's CPUs.
    pub max_load_percent: u32,
}

impl PoolConfig {
    /// How many clones of image `name` the pool keeps.
    pub fn size_for(&self, name: &str) -> u32 {
        self.images.get(name).copied().unwrap_or(self.size)
    }
}

impl Default for PoolConfig {
    fn default() -> Self {
        PoolConfig {
            size: 0,
            images: std::collections::BTreeMap::new(),
            max_memory_mib: 2048,
            max_load_percent: 100,
        }
    }
}

/// `[diagnostics]`: overrides for tests and diagnosis.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DiagnosticsConfig {
    /// Treat KVM as usable for stock guests whatever the doctor's test
    /// guest found (the doctor still reports its own verdict). For testing
    /// a VMM against hosts whose KVM the probe rejects.
    pub assume_kvm_usable: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            network: NetworkConfig {
                bridge: banger_proto::net::DEFAULT_BRIDGE.into(),
                subnet: banger_proto::net::default_subnet(),
                tap_pool: 4,
                nat_default: true,
                allow_inter_vm: false,
                dns_upstreams: None,
            },
            vm: VmConfig {
                default_vmm: Vmm::Firecracker,
                default_vcpus: 2,
                default_memory_mib: 1024,
                default_disk_bytes: 8 << 30,
                boot_timeout_secs: 240,
            },
            vmm: VmmConfig {
                firecracker_bin: Some("firecracker".into()),
                qemu_bin: Some("qemu-system-x86_64".into()),
            },
            diagnostics: DiagnosticsConfig::default(),
            pool: PoolConfig::default(),
            file_sync: Vec::new(),
        }
    }
}

/// Where the configuration came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigSource {
    /// The file given with `--config`.
    Explicit(PathBuf),
    /// The user's default config file.
    Default(PathBuf),
    /// Built-in defaults: no file at `looked_for`, or no home directory to
    /// look in.
    BuiltIn { looked_for: Option<PathBuf> },
}

impl ConfigSource {
    /// The file that was read, if any.
    pub fn file(&self) -> Option<&Path> {
        match self {
            ConfigSource::Explicit(p) | ConfigSource::Default(p) => Some(p),
            ConfigSource::BuiltIn { .. } => None,
        }
    }
}

/// The environment the default config path is derived from; injectable so
/// tests never read the process environment.
pub trait EnvLike {
    fn var_os(&self, key: &str) -> Option<OsString>;
}

/// The real process environment.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcessEnv;

impl EnvLike for ProcessEnv {
    fn var_os(&self, key: &str) -> Option<OsString> {
        std::env::var_os(key)
    }
}

/// A fixed environment, for tests and callers that resolve it themselves.
#[derive(Debug, Clone, Default)]
pub struct FixedEnv {
    pub home: Option<OsString>,
    pub xdg_config_home: Option<OsString>,
}

impl EnvLike for FixedEnv {
    fn var_os(&self, key: &str) -> Option<OsString> {
        match key {
            "HOME" => self.home.clone(),
            "XDG_CONFIG_HOME" => self.xdg_config_home.clone(),
            _ => None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config file {path} does not exist")]
    Missing { path: PathBuf },
    #[error("reading config {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid TOML, has an unknown key, or a value of the
    /// wrong type. `detail` is the TOML parser's message.
    #[error("config {path}: {}{detail}", location(*line, key.as_deref(), ": "))]
    Parse {
        path: PathBuf,
        key: Option<String>,
        line: Option<usize>,
        detail: String,
    },
    /// A well-typed value outside what banger accepts.
    #[error("config {path}: {}{value} is invalid: must be {accepted}", location(*line, Some(key), " = "))]
    Invalid {
        path: PathBuf,
        key: &'static str,
        line: Option<usize>,
        value: String,
        accepted: String,
    },
}

/// `line 3, `vm.default_vcpus`` followed by `sep`, or as much of it as is
/// known.
fn location(line: Option<usize>, key: Option<&str>, sep: &str) -> String {
    match (line, key) {
        (Some(l), Some(k)) => format!("line {l}, `{k}`{sep}"),
        (None, Some(k)) => format!("`{k}`{sep}"),
        (Some(l), None) => format!("line {l}: "),
        (None, None) => String::new(),
    }
}

impl Config {
    /// Load the configuration: `explicit` if given (it must exist), else the
    /// default file under the user's config home (absent means defaults).
    pub fn load(
        explicit: Option<&Path>,
        env: &dyn EnvLike,
    ) -> Result<(Config, ConfigSource), ConfigError> {
        let (path, found) = match (explicit, default_path(env)) {
            (Some(p), _) => (p.to_path_buf(), ConfigSource::Explicit(p.to_path_buf())),
            (None, Some(p)) => (p.clone(), ConfigSource::Default(p)),
            (None, None) => {
                let source = ConfigSource::BuiltIn { looked_for: None };
                return Ok((Config::default(), source));
            }
        };
        match std::fs::read_to_string(&path) {
            Ok(text) => Ok((Config::parse(&text, &path)?, found)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && explicit.is_some() => {
                Err(ConfigError::Missing { path })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let source = ConfigSource::BuiltIn {
                    looked_for: Some(path),
                };
                Ok((Config::default(), source))
            }
            Err(source) => Err(ConfigError::Read { path, source }),
        }
    }

    /// Parse and validate config text; `path` is only used in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| {
            let pos = e.span().map(|s| s.start);
            ConfigError::Parse {
                path: path.to_path_buf(),
                key: pos.and_then(|p| key_at(text, p)),
                line: pos.map(|p| line_of(text, p)),
                // The raw integer fields are i64 so that range errors are
                // ours; do not make users read Rust type names.
                detail: e
                    .message()
                    .trim_end()
                    .replace("expected i64", "expected an integer"),
            }
        })?;
        Validator { text, path }.resolve(raw)
    }
}

/// `$XDG_CONFIG_HOME/banger/config.toml`, else
/// `$HOME/.config/banger/config.toml`. Per the XDG spec, a relative or empty
/// `XDG_CONFIG_HOME` is ignored. `None` when there is no usable home.
pub fn default_path(env: &dyn EnvLike) -> Option<PathBuf> {
    let absolute = |v: Option<OsString>| v.map(PathBuf::from).filter(|p| p.is_absolute());
    let config_home = absolute(env.var_os("XDG_CONFIG_HOME"))
        .or_else(|| absolute(env.var_os("HOME")).map(|h| h.join(".config")))?;
    Some(config_home.join("banger").join("config.toml"))
}

/// Parse a size such as `8G`, `512M`, `4096` (bytes). Suffixes K, M, G, T
/// (either case) are powers of 1024. `None` for anything else or overflow.
pub fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let (digits, shift) = match s.char_indices().last()? {
        (i, 'k' | 'K') => (&s[..i], 10),
        (i, 'm' | 'M') => (&s[..i], 20),
        (i, 'g' | 'G') => (&s[..i], 30),
        (i, 't' | 'T') => (&s[..i], 40),
        _ => (s, 0),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse::<u64>().ok()?.checked_mul(1 << shift)
}

// ---- raw file format ------------------------------------------------------

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    network: RawNetwork,
    #[serde(default)]
    vm: RawVm,
    #[serde(default)]
    vmm: RawVmm,
    #[serde(default)]
    diagnostics: RawDiagnostics,
    #[serde(default)]
    pool: RawPool,
    #[serde(default)]
    file_sync: Vec<RawFileSync>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFileSync {
    host: Spanned<String>,
    guest: Spanned<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNetwork {
    bridge: Option<Spanned<String>>,
    subnet: Option<Spanned<String>>,
    tap_pool: Option<Spanned<i64>>,
    nat_default: Option<bool>,
    allow_inter_vm: Option<bool>,
    dns_upstreams: Option<Vec<Spanned<String>>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawVm {
    default_vmm: Option<Spanned<String>>,
    default_vcpus: Option<Spanned<i64>>,
    default_memory_mib: Option<Spanned<i64>>,
    default_disk: Option<Spanned<String>>,
    boot_timeout_secs: Option<Spanned<i64>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPool {
    size: Option<Spanned<i64>>,
    max_memory: Option<Spanned<String>>,
    max_load_percent: Option<Spanned<i64>>,
    #[serde(default)]
    images: std::collections::BTreeMap<String, Spanned<i64>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDiagnostics {
    assume_kvm_usable: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawVmm {
    firecracker_bin: Option<Spanned<String>>,
    qemu_bin: Option<Spanned<String>>,
}

// The defaults' bounds are a VM's (`banger_proto::limits`); a default
// beyond a VMM's own vCPU limit is refused at create, naming the VMM.
const VCPUS: RangeInclusive<i64> = limits::MIN_VCPUS as i64..=limits::MAX_VCPUS as i64;
const MEMORY_MIB: RangeInclusive<i64> =
    limits::MIN_MEMORY_MIB as i64..=limits::MAX_MEMORY_MIB as i64;
const TAP_POOL: RangeInclusive<i64> = 0..=64;
const BOOT_TIMEOUT_SECS: RangeInclusive<i64> = 5..=3600;
const POOL_SIZE: RangeInclusive<i64> = 0..=16;
const POOL_LOAD_PERCENT: RangeInclusive<i64> = 1..=10_000;
const DISK_MIN: u64 = limits::MIN_DISK_BYTES;
const DISK_MAX: u64 = limits::MAX_DISK_BYTES;

struct Validator<'a> {
    text: &'a str,
    path: &'a Path,
}

impl Validator<'_> {
    fn resolve(&self, raw: RawConfig) -> Result<Config, ConfigError> {
        let mut c = Config::default();
        if let Some(v) = raw.network.bridge {
            c.network.bridge = self.check(v, "network.bridge", BRIDGE_RULE, |s| {
                banger_proto::net::is_bridge_name(s)
                    .then(|| s.to_owned())
                    .ok_or(None)
            })?;
        }
        if let Some(v) = raw.network.subnet {
            c.network.subnet = self.check(v, "network.subnet", SUBNET_RULE, |s| match s
                .parse::<Ipv4Cidr>()
            {
                Ok(c) if banger_proto::net::subnet_problem(c).is_none() => Ok(c),
                Ok(_) | Err(CidrError::Syntax(_)) => Err(None),
                Err(e @ CidrError::HostBits { .. }) => Err(Some(e.to_string())),
            })?;
        }
        if let Some(v) = raw.network.tap_pool {
            c.network.tap_pool = self.int(v, "network.tap_pool", TAP_POOL)?;
        }
        if let Some(v) = raw.network.nat_default {
            c.network.nat_default = v;
        }
        if let Some(v) = raw.network.allow_inter_vm {
            c.network.allow_inter_vm = v;
        }
        if let Some(list) = raw.network.dns_upstreams {
            let mut ups = Vec::with_capacity(list.len());
            for v in list {
                ups.push(self.check(v, "network.dns_upstreams", UPSTREAM_RULE, |s| {
                    parse_upstream(s).ok_or(None)
                })?);
            }
            c.network.dns_upstreams = Some(ups);
        }
        if let Some(v) = raw.vm.default_vmm {
            c.vm.default_vmm = self.check(v, "vm.default_vmm", "firecracker or qemu", |s| {
                s.parse::<Vmm>().map_err(|_| None)
            })?;
        }
        if let Some(v) = raw.vm.default_vcpus {
            c.vm.default_vcpus = self.int(v, "vm.default_vcpus", VCPUS)?;
        }
        if let Some(v) = raw.vm.default_memory_mib {
            c.vm.default_memory_mib = self.int(v, "vm.default_memory_mib", MEMORY_MIB)?;
        }
        if let Some(v) = raw.vm.default_disk {
            c.vm.default_disk_bytes = self.check(v, "vm.default_disk", DISK_RULE, |s| {
                parse_size(s)
                    .filter(|b| (DISK_MIN..=DISK_MAX).contains(b))
                    .ok_or(None)
            })?;
        }
        if let Some(v) = raw.vm.boot_timeout_secs {
            c.vm.boot_timeout_secs = self.int(v, "vm.boot_timeout_secs", BOOT_TIMEOUT_SECS)?;
        }
        if let Some(v) = raw.vmm.firecracker_bin {
            c.vmm.firecracker_bin =
                Some(self.check(v, "vmm.firecracker_bin", PROGRAM_RULE, program)?);
        }
        if let Some(v) = raw.vmm.qemu_bin {
            c.vmm.qemu_bin = Some(self.check(v, "vmm.qemu_bin", PROGRAM_RULE, program)?);
        }
        if let Some(v) = raw.pool.size {
            c.pool.size = self.int(v, "pool.size", POOL_SIZE)?;
        }
        for (image, v) in raw.pool.images {
            let n = self.int(v, "pool.images", POOL_SIZE)?;
            c.pool.images.insert(image, n);
        }
        if let Some(v) = raw.pool.max_memory {
            c.pool.max_memory_mib = self.check(v, "pool.max_memory", POOL_MEMORY_RULE, |s| {
                parse_size(s)
                    .filter(|b| *b >= 1 << 20)
                    .map(|b| b >> 20)
                    .ok_or(None)
            })?;
        }
        if let Some(v) = raw.pool.max_load_percent {
            c.pool.max_load_percent = self.int(v, "pool.max_load_percent", POOL_LOAD_PERCENT)?;
        }
        if let Some(v) = raw.diagnostics.assume_kvm_usable {
            c.diagnostics.assume_kvm_usable = v;
        }
        for e in raw.file_sync {
            let host = self.check(e.host, "file_sync.host", FILE_SYNC_RULE, home_relative)?;
            let guest = self.check(e.guest, "file_sync.guest", FILE_SYNC_RULE, home_relative)?;
            c.file_sync.push(FileSync { host, guest });
        }
        Ok(c)
    }

    /// Convert a string value with `f`; an error (with an optional hint
    /// appended to `accepted`) is reported as invalid.
    fn check<T>(
        &self,
        value: Spanned<String>,
        key: &'static str,
        accepted: &str,
        f: impl FnOnce(&str) -> Result<T, Option<String>>,
    ) -> Result<T, ConfigError> {
        f(value.get_ref()).map_err(|hint| {
            let accepted = match hint {
                Some(h) => format!("{accepted} ({h})"),
                None => accepted.to_owned(),
            };
            self.invalid(
                key,
                value.span(),
                format!("{:?}", value.get_ref()),
                &accepted,
            )
        })
    }

    fn int(
        &self,
        value: Spanned<i64>,
        key: &'static str,
        range: RangeInclusive<i64>,
    ) -> Result<u32, ConfigError> {
        let n = *value.get_ref();
        range
            .contains(&n)
            .then(|| u32::try_from(n).ok())
            .flatten()
            .ok_or_else(|| {
                let accepted = format!("an integer in {}..={}", range.start(), range.end());
                self.invalid(key, value.span(), n.to_string(), &accepted)
            })
    }

    fn invalid(
        &self,
        key: &'static str,
        span: Range<usize>,
        value: String,
        accepted: &str,
    ) -> ConfigError {
        ConfigError::Invalid {
            path: self.path.to_path_buf(),
            key,
            line: Some(line_of(self.text, span.start)),
            value,
            accepted: accepted.to_owned(),
        }
    }
}

const BRIDGE_RULE: &str = "\"banger\" followed by lowercase letters, digits or '-', at most 15 \
                           characters, not \"bangertap...\"";
const SUBNET_RULE: &str = "a private IPv4 network (in 10.0.0.0/8, 172.16.0.0/12 or \
                           192.168.0.0/16) in CIDR form with a /16 to /29 prefix and no host \
                           bits set, e.g. \"172.30.0.0/24\"";
const DISK_RULE: &str = "a size from 64M to 16T with a K, M, G or T suffix, e.g. \"8G\"";
const POOL_MEMORY_RULE: &str = "a size of at least 1M with a K, M, G or T suffix, e.g. \"2G\"";
const UPSTREAM_RULE: &str =
    "an IPv4 address, optionally with a port, e.g. \"192.0.2.53\" or \"192.0.2.53:5353\"";
const FILE_SYNC_RULE: &str = "a path beneath the home directory: \"~/REL\" or \"REL\", \
                               without '..' components";
const PROGRAM_RULE: &str = "a program name without '/' (looked up on PATH) or an absolute path";

/// `~/REL` or `REL` → `REL`: normal components only, at least one.
fn home_relative(s: &str) -> Result<PathBuf, Option<String>> {
    use std::path::Component;
    let rel = s.strip_prefix("~/").unwrap_or(s);
    let p = Path::new(rel);
    if rel.is_empty() || s.starts_with('~') && !s.starts_with("~/") {
        return Err(None);
    }
    if !p.components().all(|c| matches!(c, Component::Normal(_))) {
        return Err(Some("it leaves the home directory".into()));
    }
    Ok(p.components().collect())
}

/// `ADDR` or `ADDR:PORT` (port defaults to 53).
fn parse_upstream(s: &str) -> Option<SocketAddr> {
    if let Ok(ip) = s.parse::<Ipv4Addr>() {
        return Some(SocketAddr::new(ip.into(), 53));
    }
    s.parse::<SocketAddr>()
        .ok()
        .filter(|a| a.is_ipv4() && a.port() != 0)
}

fn program(s: &str) -> Result<PathBuf, Option<String>> {
    let ok = if s.contains('/') {
        Path::new(s).is_absolute()
    } else {
        !s.is_empty() && s != "." && s != ".."
    };
    (ok && !s.chars().any(char::is_control))
        .then(|| PathBuf::from(s))
        .ok_or(None)
}

/// 1-based line of byte offset `pos`.
fn line_of(text: &str, pos: usize) -> usize {
    text.as_bytes()[..pos.min(text.len())]
        .iter()
        .filter(|b| **b == b'\n')
        .count()
        + 1
}

/// The dotted key whose key or value covers byte offset `pos`, innermost
/// first. `None` if the text does not parse as TOML.
fn key_at(text: &str, pos: usize) -> Option<String> {
    let doc = DeTable::parse(text).ok()?;
    let mut path = Vec::new();
    find_in_table(doc.get_ref(), pos, &mut path).then(|| path.join("."))
}

fn find_in_table(table: &DeTable<'_>, pos: usize, path: &mut Vec<String>) -> bool {
    for (k, v) in table.iter() {
        path.push(k.get_ref().to_string());
        if find_in_value(v, pos, path) || k.span().contains(&pos) || v.span().contains(&pos) {
            return true;
        }
        path.pop();
    }
    false
}

fn find_in_value(value: &Spanned<DeValue<'_>>, pos: usize, path: &mut Vec<String>) -> bool {
    match value.get_ref() {
        DeValue::Table(t) => find_in_table(t, pos, path),
        DeValue::Array(items) => items.iter().any(|item| find_in_value(item, pos, path)),
        _ => false,
    }
}

#[cfg(test)]
mod tests;
