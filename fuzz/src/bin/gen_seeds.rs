//! Writes the seed corpora, `corpus/<target>/<name>`, from banger's own
//! types and writers: frames from `banger_proto::frame::encode` of real
//! messages, bundles from `banger_imagebuild::write_bundle`, install
//! metadata from `InstallMeta::to_toml`, the shipped kernel catalog, DNS
//! queries and tar layers from the libraries banger reads them with, and
//! `ss -H -tulnp` outputs as guests print them.
//! Every seed that should parse is checked to parse with the function its
//! target fuzzes, so a seed corpus never silently rots.
//!
//! `gen-seeds CORPUS_DIR` (run.sh seeds). Existing files of the same name
//! are overwritten; nothing else is touched.

// Built with the targets' coverage flags (run.sh), so its code calls
// libFuzzer's coverage hooks: linking libfuzzer-sys provides them.
use libfuzzer_sys as _;

use std::io::Write as _;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use banger_proto::ErrorCode;
use banger_proto::RpcError;
use banger_proto::frame;
use banger_proto::image::ImageRequest;
use banger_proto::install::{
    InstallJail, InstallMeta, InstallNetwork, InstallPaths, InstallVmm, Owner,
};
use banger_proto::net::{BridgeSpec, FirewallSpec, TapSpec};
use banger_proto::privops::{
    BuildDebianImage, DeleteTap, ImageOp, KillVm, NetOp, PRIV_PROTOCOL_VERSION, PrivOp,
    PrivOutcome, PrivReply, PrivRequest, ProbeKvm, ProbeOp, StopVm, VmOp, VmmStatus,
};
use banger_proto::rpc::{
    ClientHello, DaemonInfo, DaemonMode, Progress, Request, Response, ServerHello, ServerMsg,
};
use banger_proto::vm::{CreateVm, VmRequest};
use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query};
use hickory_proto::rr::{DNSClass, Name, RecordType};

const VM: &str = "0123456789abcdef0123456789abcdef";

fn main() {
    let out = PathBuf::from(
        std::env::args()
            .nth(1)
            .expect("usage: gen-seeds CORPUS_DIR"),
    );
    frames(&out.join("frame"));
    config(&out.join("config"));
    install_meta(&out.join("install_meta"));
    catalog(&out.join("catalog"));
    dns(&out.join("dns"));
    bundle(&out.join("bundle"));
    oci_layer(&out.join("oci_layer"));
    ss(&out.join("ss"));
}

fn put(dir: &Path, name: &str, bytes: &[u8]) {
    std::fs::create_dir_all(dir).expect("making a corpus directory");
    std::fs::write(dir.join(name), bytes).expect("writing a seed");
}

/// The side byte `fuzz_targets/frame.rs` reads first, then the frames.
fn stream<T: serde::Serialize>(side: u8, msgs: &[T]) -> Vec<u8> {
    let mut out = vec![side];
    for m in msgs {
        out.extend(frame::encode(m).expect("encoding a seed frame"));
    }
    out
}

fn frames(dir: &Path) {
    let hello = frame::encode(&ClientHello::current()).unwrap();
    let requests = [
        ("ping", Request::Ping),
        ("doctor", Request::Doctor),
        ("host_status", Request::HostStatus),
        ("vm_list", Request::Vm(VmRequest::List)),
        (
            "vm_stop",
            Request::Vm(VmRequest::Stop {
                name: "dev".into(),
                timeout_secs: Some(30),
                save: true,
            }),
        ),
        (
            "vm_logs",
            Request::Vm(VmRequest::Logs {
                name: "dev".into(),
                lines: 100,
            }),
        ),
        ("image_list", Request::Image(ImageRequest::List)),
        (
            "image_promote",
            Request::Image(ImageRequest::Promote {
                vm: "dev".into(),
                name: "web".into(),
            }),
        ),
    ];
    for (name, r) in requests {
        let mut s = vec![0u8];
        s.extend(&hello);
        s.extend(frame::encode(&r).unwrap());
        put(dir, &format!("rpc-{name}"), &s);
    }
    // vm create as the CLI sends it.
    let create = Request::Vm(VmRequest::Create(CreateVm {
        name: "dev".into(),
        image: Some("debian".into()),
        vcpus: Some(2),
        memory_mib: Some(1024),
        disk_bytes: Some(8 << 30),
        nat: Some(true),
        vmm: None,
        start: true,
        wait: true,
        workspace: Some("/home/u/src/proj".into()),
        insecure: false,
        from: None,
    }));
    let mut s = vec![0u8];
    s.extend(&hello);
    s.extend(frame::encode(&create).unwrap());
    put(dir, "rpc-vm_create", &s);

    let ops: Vec<(&str, PrivOp)> = vec![
        ("probe_kvm", PrivOp::Probe(ProbeOp::ProbeKvm(ProbeKvm))),
        (
            "ensure_bridge",
            PrivOp::Net(NetOp::EnsureBridge(BridgeSpec {
                name: "banger0".into(),
                address: Ipv4Addr::new(172, 30, 0, 1),
                prefix_len: 24,
            })),
        ),
        (
            "ensure_tap",
            PrivOp::Net(NetOp::EnsureTap(TapSpec {
                name: "bangertap0".into(),
                bridge: "banger0".into(),
                owner_uid: 1000,
            })),
        ),
        (
            "delete_tap",
            PrivOp::Net(NetOp::DeleteTap(DeleteTap {
                name: "bangertap0".into(),
            })),
        ),
        (
            "sync_firewall",
            PrivOp::Net(NetOp::SyncFirewall(FirewallSpec {
                bridge: "banger0".into(),
                guests: Vec::new(),
                allow_inter_vm: false,
            })),
        ),
        (
            "stop_vm",
            PrivOp::Vm(VmOp::StopVm(StopVm {
                vm_id: VM.into(),
                timeout_secs: 30,
            })),
        ),
        (
            "kill_vm",
            PrivOp::Vm(VmOp::KillVm(KillVm { vm_id: VM.into() })),
        ),
        (
            "vmm_status",
            PrivOp::Vm(VmOp::VmmStatus(VmmStatus { vm_id: VM.into() })),
        ),
        (
            "build_debian_image",
            PrivOp::Image(ImageOp::BuildDebianImage(BuildDebianImage {
                suite: "bookworm".into(),
            })),
        ),
    ];
    for (name, op) in ops {
        let msgs = [
            PrivRequest::Hello {
                protocol: PRIV_PROTOCOL_VERSION,
            },
            PrivRequest::Op(op),
        ];
        put(dir, &format!("priv-{name}"), &stream(1, &msgs));
    }
    // Every op the wire test pins, in one stream.
    let wire = serde_json::json!([
        {"op": "probe_device", "args": {"device": "tun"}},
        {"op": "open_dns_sockets", "args": {"address": "10.0.0.1"}},
        {"op": "apply_resolver", "args": {"bridge": "banger0", "dns": "10.0.0.1"}},
        {"op": "net_status"},
        {"op": "teardown"},
        {"op": "create_vm_disks", "args": {"vm_id": VM, "image_id": VM, "work_disk_bytes": 1u64 << 30}},
        {"op": "write_guest_files", "args": {"vm_id": VM, "files": [
            {"path": "/etc/hostname", "mode": 0o644, "uid": 0, "gid": 0, "content": "dev\n"}]}},
        {"op": "grow_work_disk", "args": {"vm_id": VM, "bytes": 2u64 << 30}},
        {"op": "launch_vm", "args": {"vm_id": VM, "image_id": VM, "kernel_id": VM,
            "vmm": "firecracker", "vcpus": 2, "memory_mib": 1024, "tap": "bangertap0",
            "mac": "02:ba:0a:00:00:02", "force_kvm": true}},
        {"op": "wait_vm_ready", "args": {"vm_id": VM, "timeout_ms": 5000}},
        {"op": "snapshot_vm", "args": {"vm_id": VM, "snapshot_id": VM, "resume": true}}
    ]);
    let ops: Vec<PrivOp> = serde_json::from_value(wire).expect("the pinned wire forms parse");
    let msgs: Vec<PrivRequest> = std::iter::once(PrivRequest::Hello {
        protocol: PRIV_PROTOCOL_VERSION,
    })
    .chain(ops.into_iter().map(PrivRequest::Op))
    .collect();
    put(dir, "priv-every-op", &stream(1, &msgs));

    let server = [
        ServerMsg::Hello(ServerHello {
            protocol: banger_proto::rpc::PROTOCOL_VERSION,
            daemon_version: "0.1.0".into(),
            mode: DaemonMode::System,
        }),
        ServerMsg::Progress(Progress {
            stage: "download".into(),
            message: "layer 1/2".into(),
            done: 10,
            total: Some(20),
        }),
        ServerMsg::Done(Response::Pong(DaemonInfo {
            daemon_version: "0.1.0".into(),
            protocol: banger_proto::rpc::PROTOCOL_VERSION,
            mode: DaemonMode::Dev,
            pid: 42,
            uid: 1000,
            state_dir: "/var/lib/banger".into(),
            socket: "/run/banger/bangerd.sock".into(),
        })),
        ServerMsg::Error(RpcError::new(ErrorCode::NotFound, "no VM named dev")),
    ];
    put(dir, "cli-replies", &stream(2, &server));
    let replies = [
        PrivReply::Hello {
            protocol: PRIV_PROTOCOL_VERSION,
            helper_version: "0.1.0".into(),
        },
        PrivReply::Ok(PrivOutcome::Done),
        PrivReply::Error(RpcError::new(ErrorCode::PermissionDenied, "not the owner")),
    ];
    put(dir, "daemon-helper-replies", &stream(3, &replies));
}

fn config(dir: &Path) {
    let full = r#"[network]
bridge = "banger0"
subnet = "172.30.0.0/24"
tap_pool = 4
nat_default = true
allow_inter_vm = false
dns_upstreams = ["192.0.2.53", "192.0.2.54:5353"]
[vm]
default_vmm = "firecracker"
default_vcpus = 2
default_memory_mib = 1024
default_disk = "8G"
boot_timeout_secs = 240
[vmm]
firecracker_bin = "firecracker"
qemu_bin = "/usr/bin/qemu-system-x86_64"
[pool]
size = 1
max_memory = "2G"
max_load_percent = 100
[pool.images]
debian = 2
[diagnostics]
assume_kvm_usable = false
[[file_sync]]
host = "~/.config/nvim"
guest = "~/.config/nvim"
[[file_sync]]
host = ".gitconfig"
guest = ".gitconfig"
"#;
    let seeds = [
        ("full.toml", full),
        ("empty.toml", ""),
        (
            "vm.toml",
            "[vm]\ndefault_vmm = \"qemu\"\ndefault_vcpus = 64\ndefault_disk = \"512M\"\n",
        ),
        ("bad-subnet.toml", "[network]\nsubnet = \"10.0.0.0/8\"\n"),
        ("bad-key.toml", "[vm]\ndefault_vcpus = 2\nnot_a_key = 1\n"),
    ];
    for (name, text) in seeds {
        put(dir, name, text.as_bytes());
    }
    bangerd::config::Config::parse(full, Path::new("/seed")).expect("the full config seed parses");
}

fn install_meta(dir: &Path) {
    let meta = InstallMeta {
        owner: Owner {
            name: "dev".into(),
            uid: 1000,
            gid: 1000,
        },
        version: "0.1.0".into(),
        installed_at: "2026-11-26T20:00:00Z".into(),
        paths: InstallPaths {
            bin_dir: "/usr/local/bin".into(),
            state_dir: "/var/lib/banger".into(),
            runtime_dir: "/run/banger".into(),
            root_socket: "/run/banger-root/root.sock".into(),
            root_state_dir: "/var/lib/banger-root".into(),
            state_dev: None,
        },
        vmm: InstallVmm {
            qemu_bin: Some("/usr/bin/qemu-system-x86_64".into()),
            firecracker_bin: Some("/usr/local/bin/firecracker".into()),
        },
        network: InstallNetwork {
            bridge: "banger7".into(),
            subnet: "10.99.0.0/24".parse().unwrap(),
        },
        jail: InstallJail::default(),
    };
    let text = meta.to_toml();
    InstallMeta::parse(&text, Path::new("/seed")).expect("the install seed parses");
    put(dir, "install.toml", text.as_bytes());
    // Metadata as an older banger wrote it: no [vmm], [network] or
    // [jail] (defaults), and the state directory's device it once recorded.
    let mut old = meta.clone();
    old.vmm = InstallVmm::default();
    let text = old.to_toml();
    let old_text = text
        .split("[network]")
        .next()
        .expect("split yields one piece")
        .replace(
            "root_state_dir = \"/var/lib/banger-root\"\n",
            "root_state_dir = \"/var/lib/banger-root\"\nstate_dev = 2049\n",
        );
    let back =
        InstallMeta::parse(&old_text, Path::new("/seed")).expect("the old install seed parses");
    assert_eq!(back.paths.state_dev, Some(2049));
    put(dir, "install-old.toml", old_text.as_bytes());
    put(dir, "jail-uids", b"1990000000:1024");
}

fn catalog(dir: &Path) {
    put(
        dir,
        "builtin.toml",
        banger_imagebuild::catalog::BUILTIN.as_bytes(),
    );
    let own = format!(
        "version = 1\n\n[[kernel]]\nname = \"mine\"\narch = \"x86_64\"\nkind = \"bzimage\"\n\
         url = \"https://example.invalid/bzImage\"\nsha256 = \"{0}\"\ndescription = \"a test\"\n\
         initrd = {{ url = \"http://example.invalid/initrd\", sha256 = \"{0}\" }}\n",
        "ab".repeat(32)
    );
    banger_imagebuild::Catalog::parse(&own, "seed").expect("the catalog seed parses");
    put(dir, "override.toml", own.as_bytes());
}

fn query(id: u16, name: &str, t: RecordType, class: DNSClass, edns: bool, op: OpCode) -> Vec<u8> {
    let mut m = Message::new(id, MessageType::Query, op);
    let mut q = Query::query(Name::from_ascii(name).unwrap(), t);
    q.set_query_class(class);
    m.add_query(q);
    m.metadata.recursion_desired = true;
    if edns {
        let mut e = Edns::new();
        e.set_max_payload(1232);
        m.set_edns(e);
    }
    m.to_vec().unwrap()
}

fn dns(dir: &Path) {
    use RecordType as T;
    let q = |id, name: &str, t| query(id, name, t, DNSClass::IN, false, OpCode::Query);
    put(dir, "a-alpha", &q(1, "alpha.vm.", T::A));
    put(dir, "aaaa-alpha", &q(2, "alpha.vm.", T::AAAA));
    put(dir, "a-unknown", &q(3, "nope.vm.", T::A));
    put(dir, "soa-zone", &q(4, "vm.", T::SOA));
    put(dir, "ns-zone", &q(5, "vm.", T::NS));
    put(dir, "ptr-web", &q(6, "3.0.30.172.in-addr.arpa.", T::PTR));
    put(dir, "ptr-apex", &q(7, "0.30.172.in-addr.arpa.", T::SOA));
    put(dir, "any-db", &q(8, "DB.VM.", T::ANY));
    put(dir, "outside", &q(9, "example.com.", T::A));
    put(dir, "axfr", &q(10, "vm.", T::AXFR));
    put(
        dir,
        "edns",
        &query(11, "web-1.vm.", T::A, DNSClass::IN, true, OpCode::Query),
    );
    put(
        dir,
        "chaos-class",
        &query(12, "alpha.vm.", T::TXT, DNSClass::CH, false, OpCode::Query),
    );
    put(
        dir,
        "notify",
        &query(13, "vm.", T::SOA, DNSClass::IN, false, OpCode::Notify),
    );
}

fn bundle(dir: &Path) {
    let tmp = tempfile::tempdir().unwrap();
    let write = |name: &str, body: &[u8]| {
        let p = tmp.path().join(name);
        std::fs::write(&p, body).unwrap();
        p
    };
    let rootfs = write("rootfs", b"a tiny root filesystem\n");
    let kernel = write("kernel", b"\x7fELF a kernel");
    let initrd = write("initrd", &[0u8; 600]);
    let full = banger_imagebuild::bundle::BundleFiles {
        name: Some("web"),
        rootfs: &rootfs,
        kernel: Some(&kernel),
        initrd: Some(&initrd),
    };
    let bare = banger_imagebuild::bundle::BundleFiles {
        name: None,
        rootfs: &rootfs,
        kernel: None,
        initrd: None,
    };
    for (name, files, level) in [
        ("full.tar", &full, None),
        ("full.tar.zst", &full, Some(1)),
        ("rootfs-only.tar", &bare, None),
    ] {
        let mut bytes = Vec::new();
        banger_imagebuild::write_bundle(&mut bytes, files, level).expect("writing a seed bundle");
        let out = tmp.path().join(format!("check-{name}"));
        std::fs::create_dir(&out).unwrap();
        banger_imagebuild::read_bundle(bytes.as_slice(), None, &out, &mut |_| {})
            .expect("a seed bundle reads back");
        put(dir, name, &bytes);
    }
}

/// (path, type, mode, body or link target)
type Member<'a> = (&'a str, tar::EntryType, u32, &'a [u8]);

fn tar_of(members: &[Member], pax: &[(&str, &[u8])]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    if !pax.is_empty() {
        b.append_pax_extensions(pax.iter().copied()).unwrap();
    }
    for (path, ty, mode, body) in members {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(*ty);
        h.set_mode(*mode);
        h.set_uid(0);
        h.set_gid(0);
        let data: &[u8] = if matches!(ty, tar::EntryType::Symlink | tar::EntryType::Link) {
            h.set_link_name(std::str::from_utf8(body).unwrap()).unwrap();
            &[]
        } else {
            body
        };
        if matches!(ty, tar::EntryType::Char | tar::EntryType::Block) {
            h.set_device_major(1).unwrap();
            h.set_device_minor(3).unwrap();
        }
        h.set_size(data.len() as u64);
        b.append_data(&mut h, path, data).unwrap();
    }
    b.into_inner().unwrap()
}

fn gzip(b: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(b).unwrap();
    e.finish().unwrap()
}

fn oci_layer(dir: &Path) {
    use tar::EntryType as E;
    let base = tar_of(
        &[
            ("./", E::Directory, 0o755, b""),
            ("bin/", E::Directory, 0o755, b""),
            ("bin/sh", E::Regular, 0o755, b"#!/bin/true\n"),
            ("sbin/init", E::Symlink, 0o777, b"../bin/sh"),
            (
                "etc/passwd",
                E::Regular,
                0o644,
                b"root:x:0:0::/root:/bin/sh\n",
            ),
            ("etc/shadow", E::Link, 0, b"etc/passwd"),
            ("dev/null", E::Char, 0o666, b""),
            ("run/fifo", E::Fifo, 0o600, b""),
            ("usr/sbin/sshd", E::Regular, 0o4755, b"sshd"),
        ],
        &[],
    );
    let upper = tar_of(
        &[
            ("etc/.wh.shadow", E::Regular, 0o644, b""),
            ("bin/.wh..wh..opq", E::Regular, 0o644, b""),
            ("bin/busybox", E::Regular, 0o755, b"busybox"),
            ("lib", E::Symlink, 0o777, b"/usr/lib"),
        ],
        &[],
    );
    let xattrs = tar_of(
        &[("usr/bin/ping", E::Regular, 0o755, b"ping")],
        &[
            ("SCHILY.xattr.security.capability", b"\x01\x00\x00\x02"),
            ("SCHILY.xattr.system.posix_acl_access", b"x"),
            ("uid", b"1000"),
        ],
    );
    let sep: &[u8] = b"\n--banger-fuzz-layer--\n";
    put(dir, "base.tar", &base);
    put(dir, "base.tar.gz", &gzip(&base));
    put(
        dir,
        "base.tar.zst",
        &zstd::encode_all(base.as_slice(), 1).unwrap(),
    );
    put(dir, "xattrs.tar", &xattrs);
    put(
        dir,
        "two-layers",
        &[base.as_slice(), sep, upper.as_slice()].concat(),
    );
    put(
        dir,
        "three-layers-gz",
        &[
            gzip(&base).as_slice(),
            sep,
            gzip(&upper).as_slice(),
            sep,
            xattrs.as_slice(),
        ]
        .concat(),
    );
}

/// What `sudo -n ss -H -tulnp` prints in a guest (iproute2's column
/// layout; the daemon runs it over ssh), after the VM name line
/// `fuzz_targets/ss.rs` reads first: (seed, VM name, output, a port the
/// parse must find with its process).
const SS_SEEDS: &[(&str, Option<&str>, &str, (u16, Option<&str>))] = &[
    (
        "debian-bookworm",
        Some("dev"),
        "\
udp   UNCONN 0      0              127.0.0.54:53         0.0.0.0:*    users:((\"systemd-resolve\",pid=312,fd=20))
udp   UNCONN 0      0           127.0.0.53%lo:53         0.0.0.0:*    users:((\"systemd-resolve\",pid=312,fd=18))
udp   UNCONN 0      0        172.30.0.2%eth0:68          0.0.0.0:*    users:((\"systemd-network\",pid=290,fd=22))
udp   UNCONN 0      0               127.0.0.1:323        0.0.0.0:*    users:((\"chronyd\",pid=401,fd=5))
udp   UNCONN 0      0                   [::1]:323           [::]:*    users:((\"chronyd\",pid=401,fd=6))
udp   UNCONN 0      0   [fe80::ba:aff:fe00:2]%eth0:546      [::]:*    users:((\"systemd-network\",pid=290,fd=24))
tcp   LISTEN 0      4096           127.0.0.54:53         0.0.0.0:*    users:((\"systemd-resolve\",pid=312,fd=21))
tcp   LISTEN 0      128               0.0.0.0:22         0.0.0.0:*    users:((\"sshd\",pid=501,fd=3))
tcp   LISTEN 0      4096        127.0.0.53%lo:53         0.0.0.0:*    users:((\"systemd-resolve\",pid=312,fd=19))
tcp   LISTEN 0      128                  [::]:22            [::]:*    users:((\"sshd\",pid=501,fd=4))
",
        (22, Some("sshd")),
    ),
    (
        "web-services",
        Some("web-1"),
        "\
tcp   LISTEN 0      511                     *:80               *:*    users:((\"nginx\",pid=620,fd=6),(\"nginx\",pid=619,fd=6))
tcp   LISTEN 0      244             127.0.0.1:5432       0.0.0.0:*    users:((\"postgres\",pid=700,fd=5))
tcp   LISTEN 0      511             127.0.0.1:6379       0.0.0.0:*    users:((\"redis-server\",pid=712,fd=6))
tcp   LISTEN 0      4096   [::ffff:127.0.0.1]:8080             *:*    users:((\"java\",pid=801,fd=112))
tcp   LISTEN 0      5                 0.0.0.0:8000       0.0.0.0:*    users:((\"python3\",pid=9,fd=3))
tcp   LISTEN 0      4096                    *:3000             *:*    users:((\"node\",pid=950,fd=20))
tcp   LISTEN 0      128               0.0.0.0:22         0.0.0.0:*    users:((\"sshd\",pid=501,fd=3))
udp   UNCONN 0      0                 0.0.0.0:5353       0.0.0.0:*    users:((\"avahi-daemon\",pid=330,fd=12))
udp   UNCONN 0      0                    [::]:5353          [::]:*    users:((\"avahi-daemon\",pid=330,fd=13))
",
        (80, Some("nginx")),
    ),
    (
        // As `ss -Hltnu` prints it (no -p, or no sudo): no process column.
        "no-process",
        Some("db"),
        "\
tcp   LISTEN 0      128               0.0.0.0:22         0.0.0.0:*
tcp   LISTEN 0      128                  [::]:22            [::]:*
tcp   LISTEN 0      80              127.0.0.1:3306       0.0.0.0:*
udp   UNCONN 0      0           127.0.0.53%lo:53         0.0.0.0:*
",
        (3306, None),
    ),
    (
        // Alpine (iproute2-ss; OpenRC, no systemd-resolved), and a process
        // name with a space in it (`tmux: server`).
        "alpine",
        Some("alpine-3"),
        "\
tcp   LISTEN 0      128               0.0.0.0:22         0.0.0.0:*    users:((\"sshd\",pid=2210,fd=3))
tcp   LISTEN 0      128                     *:22               *:*    users:((\"sshd\",pid=2210,fd=4))
udp   UNCONN 0      0         0.0.0.0%eth0:68            0.0.0.0:*    users:((\"udhcpc\",pid=1980,fd=4))
tcp   LISTEN 0      1          127.0.0.1:40001           0.0.0.0:*    users:((\"tmux: server\",pid=3001,fd=7))
",
        (68, Some("udhcpc")),
    ),
    (
        // No name line: the target reads it all as output, VM `dev`.
        "no-name-line",
        None,
        "tcp   LISTEN 0      128               0.0.0.0:22         0.0.0.0:*    users:((\"sshd\",pid=1,fd=3))\n",
        (22, Some("sshd")),
    ),
    ("empty", Some("dev"), "", (0, None)),
];

fn ss(dir: &Path) {
    for (seed, name, out, (port, process)) in SS_SEEDS {
        let ports = bangerd::vm::parse_ss(name.unwrap_or("dev"), out);
        if *port != 0 {
            assert!(
                ports
                    .iter()
                    .any(|p| p.port == *port && p.process.as_deref() == *process),
                "seed {seed}: no port {port} ({process:?}) in {ports:?}"
            );
        }
        let bytes = match name {
            Some(n) => format!("{n}\n{out}"),
            None => out.to_string(),
        };
        put(dir, seed, bytes.as_bytes());
    }
}
