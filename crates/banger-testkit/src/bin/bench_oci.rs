//! `oci_pull_ext4`: `banger_oci::pull_to_ext4` (registry → verified blobs →
//! flattened tree → `mkfs.ext4 -d` + `debugfs` ownership pass → `e2fsck`)
//! against the chain `skopeo copy` + `umoci unpack` + `mkfs.ext4 -d` on the
//! same image, in the same run.
//!
//! The image is built with umoci from host directories (two layers, one
//! whiteout) and pushed with skopeo to a real `docker-registry` on
//! 127.0.0.1 inside a throwaway network namespace; both sides pull from it.
//! The baseline unpacks as root into a real directory (what banger must not
//! do) and does not verify the result with `e2fsck`, so it is a floor.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use banger_testkit::{NetNs, Proc};

const ADDR: &str = "127.0.0.1:5000";
const ITERS: usize = 3;

/// Host directories copied into the bench image: many small files (docs,
/// Python and Perl libraries), like a real OS image.
const LAYER1: [&str; 2] = ["/usr/lib/python3.11", "/usr/share/perl"];
const LAYER2: [&str; 1] = ["/usr/share/doc"];

fn run(what: &str, cmd: &mut Command) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{what}: {e} (is it installed?)"));
    assert!(
        out.status.success(),
        "{what}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn du(p: &Path) -> u64 {
    let out = Command::new("du").arg("-sb").arg(p).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// Build the OCI layout `<dir>/layout:bench` with umoci.
fn build_image(dir: &Path) -> (u64, usize) {
    let layout = dir.join("layout");
    let bundle = dir.join("bundle");
    let image = format!("{}:bench", layout.display());
    run(
        "umoci init",
        Command::new("umoci")
            .arg("init")
            .arg("--layout")
            .arg(&layout),
    );
    run(
        "umoci new",
        Command::new("umoci").args(["new", "--image", &image]),
    );
    run(
        "umoci unpack",
        Command::new("umoci")
            .args(["unpack", "--image", &image])
            .arg(&bundle),
    );
    let rootfs = bundle.join("rootfs");
    let copy = |srcs: &[&str]| {
        for s in srcs {
            let dest = rootfs.join(s.trim_start_matches('/'));
            std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
            run("cp -a", Command::new("cp").arg("-a").arg(s).arg(&dest));
        }
    };
    copy(&LAYER1);
    run(
        "umoci repack",
        Command::new("umoci")
            .args(["repack", "--image", &image])
            .arg(&bundle),
    );
    copy(&LAYER2);
    // A whiteout in the second layer.
    std::fs::remove_dir_all(rootfs.join("usr/share/perl")).unwrap();
    let size = du(&rootfs);
    run(
        "umoci repack",
        Command::new("umoci")
            .args(["repack", "--image", &image])
            .arg(&bundle),
    );
    let files = walk_count(&rootfs);
    std::fs::remove_dir_all(&bundle).unwrap();
    (size, files)
}

fn walk_count(p: &Path) -> usize {
    let mut n = 0;
    if let Ok(rd) = std::fs::read_dir(p) {
        for e in rd.flatten() {
            n += 1;
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                n += walk_count(&e.path());
            }
        }
    }
    n
}

/// Run the benchmark; returns the Markdown section for docs/benchmarks.md.
pub fn section() -> String {
    let work = tempfile::tempdir().unwrap();
    let (content, files) = build_image(work.path());

    let ns = NetNs::new();
    let cfg = work.path().join("registry.yml");
    std::fs::write(
        &cfg,
        format!(
            "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: {ADDR}\n",
            work.path().join("registry").display()
        ),
    )
    .unwrap();
    let mut c = ns.exec("docker-registry");
    c.arg("serve").arg(&cfg);
    let mut registry = Proc::spawn("docker-registry", c);
    let deadline = Instant::now() + Duration::from_secs(20);
    while !ns.run(|| std::net::TcpStream::connect(ADDR).is_ok()) {
        assert!(registry.is_running(), "docker-registry exited");
        assert!(Instant::now() < deadline, "docker-registry did not listen");
        std::thread::sleep(Duration::from_millis(50));
    }
    run(
        "skopeo copy (push)",
        ns.exec("skopeo")
            .args(["copy", "--quiet", "--dest-tls-verify=false"])
            .arg(format!(
                "oci:{}:bench",
                work.path().join("layout").display()
            ))
            .arg(format!("docker://{ADDR}/bench:v1")),
    );

    let reference = format!("{ADDR}/bench:v1");
    let opts = banger_oci::PullOptions {
        insecure: true,
        headroom_bytes: 64 << 20,
        ..Default::default()
    };
    let mut subject = Vec::new();
    let mut baseline = Vec::new();
    let mut image_size = 0;
    for _ in 0..ITERS {
        let staging = tempfile::tempdir_in(work.path()).unwrap();
        let t = Instant::now();
        let img = ns
            .run(|| {
                banger_oci::pull_to_ext4_blocking(
                    &reference,
                    &opts,
                    staging.path(),
                    banger_oci::no_progress(),
                )
            })
            .unwrap_or_else(|e| panic!("pull_to_ext4: {e:?}"));
        subject.push(t.elapsed());
        image_size = img.size_bytes;
        drop(staging);

        let dir = tempfile::tempdir_in(work.path()).unwrap();
        let oci = format!("{}:v1", dir.path().join("oci").display());
        let bundle = dir.path().join("bundle");
        let t = Instant::now();
        run(
            "skopeo copy (pull)",
            ns.exec("skopeo")
                .args(["copy", "--quiet", "--src-tls-verify=false"])
                .arg(format!("docker://{reference}"))
                .arg(format!("oci:{oci}")),
        );
        run(
            "umoci unpack",
            Command::new("umoci")
                .args(["unpack", "--image", &oci])
                .arg(&bundle),
        );
        run(
            "mkfs.ext4 -d",
            Command::new("mkfs.ext4")
                .args(["-q", "-F", "-d"])
                .arg(bundle.join("rootfs"))
                .arg(dir.path().join("img.ext4"))
                .arg(format!("{}k", image_size / 1024)),
        );
        baseline.push(t.elapsed());
    }
    drop(registry.terminate());
    drop(ns);

    let (s, b) = (
        crate::percentile(&subject, 50),
        crate::percentile(&baseline, 50),
    );
    let secs = |d: Duration| format!("{:.2}", d.as_secs_f64());
    let mut md = String::new();
    md.push_str("\n## OCI pull → ext4\n\n");
    md.push_str("Seconds per pull, median of the iterations. Image: two layers built with umoci\n");
    md.push_str(&format!(
        "from {} (+ {}, then one directory whited out): {} MB of content, {} entries; ext4 image {} MB.\n",
        LAYER1.join(", "),
        LAYER2.join(", "),
        content / 1_000_000,
        files,
        image_size / 1_000_000
    ));
    md.push_str(
        "Registry: Debian `docker-registry` on 127.0.0.1 in a throwaway network namespace.\n\n",
    );
    md.push_str("| benchmark | iterations | subject median | subject min | subject max | baseline median | baseline min | ratio (median) |\n");
    md.push_str("|---|---|---|---|---|---|---|---|\n");
    md.push_str(&format!(
        "| `oci_pull_ext4` (banger-oci `pull_to_ext4`, incl. ownership pass and `e2fsck -fn` vs `skopeo copy` + `umoci unpack` + `mkfs.ext4 -d`) | {ITERS} | {} | {} | {} | {} | {} | {:.2}x |\n",
        secs(s),
        secs(*subject.iter().min().unwrap()),
        secs(*subject.iter().max().unwrap()),
        secs(b),
        secs(*baseline.iter().min().unwrap()),
        s.as_secs_f64() / b.as_secs_f64()
    ));
    md
}
