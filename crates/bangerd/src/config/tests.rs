//! Parsing, validation and file discovery of the owner config.

use super::*;

const FILE: &str = "/home/u/.config/banger/config.toml";

fn parse_err(text: &str) -> String {
    let err = Config::parse(text, Path::new(FILE)).unwrap_err();
    banger_proto::error::chain(&err).join(": ")
}

fn env(home: Option<&str>, xdg: Option<&str>) -> FixedEnv {
    FixedEnv {
        home: home.map(Into::into),
        xdg_config_home: xdg.map(Into::into),
    }
}

#[test]
fn full_file_parses() {
    let text = r#"
[network]
bridge = "banger-1"
subnet = "10.20.0.0/16"
tap_pool = 0
nat_default = false
[vm]
default_vmm = "qemu"
default_vcpus = 64
default_memory_mib = 128
default_disk = "512M"
boot_timeout_secs = 20
[vmm]
firecracker_bin = "/opt/fc/firecracker"
qemu_bin = "qemu-kvm"
[diagnostics]
assume_kvm_usable = true
"#;
    let c = Config::parse(text, Path::new(FILE)).unwrap();
    assert_eq!(c.network.bridge, "banger-1");
    assert_eq!(c.network.subnet.to_string(), "10.20.0.0/16");
    assert_eq!(c.network.tap_pool, 0);
    assert!(!c.network.nat_default);
    assert_eq!(c.vm.default_vmm, Vmm::Qemu);
    assert_eq!(c.vm.default_vcpus, 64);
    assert_eq!(c.vm.default_memory_mib, 128);
    assert_eq!(c.vm.default_disk_bytes, 512 << 20);
    assert_eq!(c.vm.boot_timeout_secs, 20);
    assert_eq!(
        c.vmm.firecracker_bin.as_deref(),
        Some(Path::new("/opt/fc/firecracker"))
    );
    assert_eq!(c.vmm.qemu_bin.as_deref(), Some(Path::new("qemu-kvm")));
    assert!(c.diagnostics.assume_kvm_usable);
    assert!(!Config::default().diagnostics.assume_kvm_usable);
}

#[test]
fn file_sync_entries_stay_beneath_home() {
    let text = r#"
[[file_sync]]
host = "~/.config/nvim"
guest = ".config/nvim"
[[file_sync]]
host = "~/.gitconfig"
guest = "~/.gitconfig"
"#;
    let c = Config::parse(text, Path::new(FILE)).unwrap();
    assert_eq!(
        c.file_sync,
        vec![
            FileSync {
                host: ".config/nvim".into(),
                guest: ".config/nvim".into()
            },
            FileSync {
                host: ".gitconfig".into(),
                guest: ".gitconfig".into()
            },
        ]
    );
    for (host, guest) in [
        ("~/../etc/passwd", "x"),
        ("/etc/passwd", "x"),
        ("~root/.bashrc", "x"),
        ("~/", "x"),
        ("~/a", "../b"),
        ("~/a", "/etc/b"),
    ] {
        let text = format!("[[file_sync]]\nhost = {host:?}\nguest = {guest:?}\n");
        let err = parse_err(&text);
        assert!(err.contains("file_sync."), "{host} {guest}: {err}");
        assert!(err.contains("line 2") || err.contains("line 3"), "{err}");
    }
    let err = parse_err("[[file_sync]]\nhost = \"~/a\"\n");
    assert!(err.contains("guest"), "{err}");
}

#[test]
fn missing_default_file_means_defaults() {
    let home = tempfile::tempdir().unwrap();
    let env = env(home.path().to_str(), None);
    let (config, source) = Config::load(None, &env).unwrap();
    assert_eq!(config, Config::default());
    assert_eq!(Config::parse("", Path::new(FILE)).unwrap(), config);
    assert_eq!(
        source,
        ConfigSource::BuiltIn {
            looked_for: Some(home.path().join(".config/banger/config.toml"))
        }
    );
    let (_, source) = Config::load(None, &FixedEnv::default()).unwrap();
    assert_eq!(source, ConfigSource::BuiltIn { looked_for: None });
}

#[test]
fn default_file_is_read() {
    let home = tempfile::tempdir().unwrap();
    let path = home.path().join(".config/banger/config.toml");
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, "[vm]\ndefault_vcpus = 4\n").unwrap();
    let (config, source) = Config::load(None, &env(home.path().to_str(), None)).unwrap();
    assert_eq!(config.vm.default_vcpus, 4);
    assert_eq!(source, ConfigSource::Default(path));
}

#[test]
fn missing_explicit_file_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nope.toml");
    let err = Config::load(Some(&path), &FixedEnv::default()).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("config file {} does not exist", path.display())
    );
}

#[test]
fn explicit_file_wins_over_default() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    std::fs::write(&path, "[network]\ntap_pool = 9\n").unwrap();
    let (config, source) =
        Config::load(Some(&path), &env(Some("/nonexistent-home"), None)).unwrap();
    assert_eq!(config.network.tap_pool, 9);
    assert_eq!(source, ConfigSource::Explicit(path));
}

#[test]
fn xdg_config_home_takes_precedence_over_home() {
    let home = "/home/u/.config/banger/config.toml";
    // Relative or empty XDG_CONFIG_HOME is ignored, per the spec.
    let cases = [
        (Some("/xdg"), Some("/xdg/banger/config.toml")),
        (None, Some(home)),
        (Some(""), Some(home)),
        (Some("rel/xdg"), Some(home)),
    ];
    for (xdg, want) in cases {
        let got = default_path(&env(Some("/home/u"), xdg));
        assert_eq!(got.as_deref(), want.map(Path::new), "{xdg:?}");
    }
    assert_eq!(default_path(&env(None, None)), None);
}

#[test]
fn unknown_key_names_key_and_file() {
    let err = parse_err("[network]\nbrdige = \"banger1\"\n");
    assert!(
        err.starts_with(&format!(
            "config {FILE}: line 2, `network.brdige`: unknown field `brdige`, expected one of"
        )),
        "{err}"
    );
    assert!(
        err.contains("unknown field `brdige`, expected one of"),
        "{err}"
    );
    assert!(err.contains("`bridge`"), "{err}");
    assert!(!err.contains('\n'), "{err}");
    let err = parse_err("[vms]\ndefault_vcpus = 2\n");
    assert!(err.starts_with(&format!(
        "config {FILE}: line 1, `vms`: unknown field `vms`"
    )));
}

#[test]
fn wrong_type_names_key_and_file() {
    let err = parse_err("[vm]\n\ndefault_vcpus = \"two\"\n");
    assert_eq!(
        err,
        format!(
            "config {FILE}: line 3, `vm.default_vcpus`: invalid type: string \"two\", \
             expected an integer"
        )
    );
}

#[test]
fn syntax_error_names_line_and_file() {
    let err = parse_err("[vm\n");
    assert!(err.starts_with(&format!("config {FILE}: line 1")), "{err}");
}

/// Each line: table | key = value | what the error must say after the
/// `config FILE: line 2, `table.key` = ` prefix.
const BAD_VALUES: &str = r#"
vm      | default_vcpus = 0             | 0 is invalid: must be an integer in 1..=64
vm      | default_vcpus = 65            | 65 is invalid: must be an integer in 1..=64
vm      | default_memory_mib = 64       | must be an integer in 128..=1048576
network | tap_pool = -1                 | -1 is invalid: must be an integer in 0..=64
vm      | default_vmm = "kvm"           | "kvm" is invalid: must be firecracker or qemu
network | subnet = "10.0.0.0/8"         | must be a private IPv4 network (in 10.0.0.0/8, 172.16.0.0/12 or 192.168.0.0/16) in CIDR form with a /16 to /29
network | subnet = "100.64.0.0/24"      | "100.64.0.0/24" is invalid: must be a private IPv4 network
network | subnet = "10.0.0.1/24"        | (10.0.0.1/24 has host bits set; the network is 10.0.0.0/24)
network | subnet = "::1/64"             | must be a private IPv4 network
network | bridge = "br0"                | "br0" is invalid: must be "banger" followed by
network | bridge = "banger-too-long-1"  | at most 15 characters
network | bridge = "bangerX"            | lowercase letters
vm      | default_disk = "8Q"           | "8Q" is invalid: must be a size from 64M to 16T
vm      | default_disk = "1M"           | must be a size from 64M to 16T
vm      | boot_timeout_secs = 1         | 1 is invalid: must be an integer in 5..=3600
vmm     | qemu_bin = "bin/qemu"         | is invalid: must be a program name without '/'
vmm     | firecracker_bin = ""          | must be a program name
pool    | size = 17                     | 17 is invalid: must be an integer in 0..=16
pool    | max_memory = "512"            | must be a size of at least 1M
pool    | max_load_percent = 0          | 0 is invalid: must be an integer in 1..=10000
"#;

/// `[pool]`: defaults (no pool), a size for every image, per-image sizes
/// that override it, and a per-image size out of range named.
#[test]
fn the_pool_is_configured_per_image() {
    let none = Config::default();
    assert_eq!(none.pool.size_for("debian"), 0);
    assert_eq!(none.pool.max_memory_mib, 2048);
    let text = "[pool]\nsize = 1\nmax_memory = \"3G\"\nmax_load_percent = 150\n\
                [pool.images]\ndebian = 2\nalpine = 0\n";
    let c = Config::parse(text, Path::new(FILE)).unwrap();
    assert_eq!(c.pool.size_for("debian"), 2);
    assert_eq!(c.pool.size_for("alpine"), 0);
    assert_eq!(c.pool.size_for("other"), 1);
    assert_eq!(c.pool.max_memory_mib, 3072);
    assert_eq!(c.pool.max_load_percent, 150);
    let err = parse_err("[pool.images]\ndebian = 99\n");
    assert!(
        err.contains("line 2, `pool.images` = 99 is invalid"),
        "{err}"
    );
    let err = parse_err("[pool]\nsizes = 1\n");
    assert!(err.contains("sizes"), "{err}");
}

#[test]
fn bad_values_name_key_file_and_accepted_range() {
    for case in BAD_VALUES.lines().filter(|l| !l.is_empty()) {
        let [table, line, want] = [0, 1, 2].map(|i| case.split('|').nth(i).unwrap().trim());
        let err = parse_err(&format!("[{table}]\n{line}"));
        let key = line.split(" =").next().unwrap();
        let head = format!("config {FILE}: line 2, `{table}.{key}` = ");
        assert!(err.starts_with(&head), "{line}: {err}");
        assert!(err.contains(want), "{line}: {err}\n  wanted: {want}");
    }
}

#[test]
fn sizes_parse() {
    assert_eq!(parse_size("8G"), Some(8 << 30));
    assert_eq!(parse_size("8g"), Some(8 << 30));
    assert_eq!(parse_size("1024k"), Some(1 << 20));
    assert_eq!(parse_size("2T"), Some(2 << 40));
    assert_eq!(parse_size("4096"), Some(4096));
    for bad in ["", "G", "-1G", "1.5G", "8GB", "99999999999T", " 8 G"] {
        assert_eq!(parse_size(bad), None, "{bad}");
    }
}

#[test]
fn cidrs_parse() {
    let c: Ipv4Cidr = "172.30.0.0/24".parse().unwrap();
    assert_eq!(c.netmask(), Ipv4Addr::new(255, 255, 255, 0));
    assert!(c.contains(Ipv4Addr::new(172, 30, 0, 77)));
    assert!(!c.contains(Ipv4Addr::new(172, 30, 1, 1)));
    assert_eq!(
        "172.30.0.1/24".parse::<Ipv4Cidr>().unwrap_err().to_string(),
        "172.30.0.1/24 has host bits set; the network is 172.30.0.0/24"
    );
    for bad in ["172.30.0.0", "172.30.0.0/33", "172.30.0.0/+8", "x/24"] {
        assert!(bad.parse::<Ipv4Cidr>().is_err(), "{bad}");
    }
    assert_eq!(
        "0.0.0.0/0".parse::<Ipv4Cidr>().unwrap().netmask(),
        Ipv4Addr::UNSPECIFIED
    );
}
