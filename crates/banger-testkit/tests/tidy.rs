//! Tidy checks, as tests: structure the docs promise, no god files, no
//! silently ignored tests, doc links that resolve.

use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

#[test]
fn every_crate_is_in_the_architecture_code_map() {
    let arch = std::fs::read_to_string(root().join("ARCHITECTURE.md")).unwrap();
    for e in std::fs::read_dir(root().join("crates")).unwrap() {
        let name = e.unwrap().file_name().into_string().unwrap();
        assert!(
            arch.contains(&format!("`crates/{name}`")),
            "ARCHITECTURE.md's code map does not mention crates/{name}"
        );
    }
}

#[test]
fn no_source_file_passes_800_lines() {
    let mut files = Vec::new();
    rust_files(&root().join("crates"), &mut files);
    for f in files {
        let n = std::fs::read_to_string(&f).unwrap().lines().count();
        assert!(
            n <= 800,
            "{} has {n} lines; split it along a real seam",
            f.display()
        );
    }
}

#[test]
fn no_test_is_silently_ignored() {
    let mut files = Vec::new();
    rust_files(&root().join("crates"), &mut files);
    let needle = ["#[", "ignore"].concat();
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        assert!(
            !text.contains(&needle),
            "{} ignores a test; tests fail or run, they never silently skip",
            f.display()
        );
    }
}

#[test]
fn markdown_links_to_repository_files_resolve() {
    let r = root();
    let mut docs: Vec<PathBuf> = vec![r.join("README.md"), r.join("ARCHITECTURE.md")];
    for e in std::fs::read_dir(r.join("docs")).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "md") {
            docs.push(p);
        }
    }
    for doc in docs {
        let text = std::fs::read_to_string(&doc).unwrap();
        for (i, _) in text.match_indices("](") {
            let rest = &text[i + 2..];
            let Some(end) = rest.find(')') else { continue };
            let target = rest[..end].split('#').next().unwrap();
            if target.is_empty() || target.contains("://") {
                continue;
            }
            let p = doc.parent().unwrap().join(target);
            assert!(p.exists(), "{} links to missing {}", doc.display(), target);
        }
    }
}

/// The programs `scripts/packages.list` says its packages provide.
fn listed_programs() -> std::collections::BTreeSet<String> {
    let text = std::fs::read_to_string(root().join("scripts/packages.list")).unwrap();
    let mut programs = std::collections::BTreeSet::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let cols: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(cols.len(), 3, "scripts/packages.list: bad line {line:?}");
        let scopes: Vec<&str> = cols[1].split(',').collect();
        for scope in &scopes {
            assert!(
                ["demo", "test", "runtime", "shared", "unpacked"].contains(scope),
                "scripts/packages.list: unknown scope {scope:?} in {line:?}"
            );
        }
        // An `unpacked` package is fetched and unpacked for the tests, never
        // installed: installing udev would start a udevd on every block
        // device of the host. `demo` or `test` would install it.
        assert!(
            !scopes.contains(&"unpacked") || !scopes.iter().any(|s| ["demo", "test"].contains(s)),
            "scripts/packages.list: {line:?} is unpacked and installed at once"
        );
        programs.extend(cols[2].split(',').filter(|p| *p != "-").map(str::to_string));
    }
    programs
}

/// The first string literal after each `needle` in `text` (the program of a
/// `Cmd::new("…")`), or, when the argument is an upper-case constant, the
/// literal that constant is defined as in the same file.
fn programs_after(text: &str, needle: &str, skip_args: usize) -> Vec<String> {
    let mut out = Vec::new();
    for (i, _) in text.match_indices(needle) {
        let mut rest = &text[i + needle.len()..];
        for _ in 0..skip_args {
            match rest.find(',') {
                Some(c) => rest = rest[c + 1..].trim_start(),
                None => break,
            }
        }
        let rest = rest.trim_start();
        if let Some(lit) = rest.strip_prefix('"') {
            if let Some(end) = lit.find('"') {
                out.push(lit[..end].to_string());
            }
        } else {
            let ident: String = rest
                .chars()
                .take_while(|c| c.is_ascii_uppercase() || *c == '_' || c.is_ascii_digit())
                .collect();
            if ident.len() > 1 {
                let def = format!("const {ident}: &str = \"");
                if let Some(d) = text.find(&def) {
                    let lit = &text[d + def.len()..];
                    out.push(lit[..lit.find('"').unwrap()].to_string());
                }
            }
        }
    }
    out
}

/// Every program that code or a test runs (`Cmd::new`, `Command::new`, the
/// doctor's `probe_tool`/`locate_tool`) is provided by a package of
/// `scripts/packages.list`, the one list `make demo`, `make test` and
/// .ci/run install from — so a fresh host never misses one. Programs named
/// inside `sh -c` scripts are beyond this check; programs that must not
/// exist are named `no-such-…`.
#[test]
fn every_program_run_comes_from_the_package_list() {
    let listed = listed_programs();
    let mut files = Vec::new();
    rust_files(&root().join("crates"), &mut files);
    let mut missing = Vec::new();
    // This file's own examples are not programs anyone runs.
    files.retain(|f| !f.ends_with("banger-testkit/tests/tidy.rs"));
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        let found = [
            programs_after(&text, "Cmd::new(", 0),
            programs_after(&text, "Command::new(", 0),
            programs_after(&text, "probe_tool(", 2),
            programs_after(&text, "locate_tool(", 1),
        ]
        .concat();
        for program in found {
            let name = program.rsplit('/').next().unwrap().to_string();
            if name.starts_with("no-such-") || listed.contains(&name) {
                continue;
            }
            missing.push(format!("{}: {program}", f.display()));
        }
    }
    assert!(
        missing.is_empty(),
        "programs run by the code or its tests that scripts/packages.list does not provide \
         (add the package that ships each, with its scope):\n{}",
        missing.join("\n")
    );
}

/// The check above finds what it should: a program it has never heard of,
/// in each form it reads.
#[test]
fn the_package_list_check_reads_every_form() {
    let text = r#"
        const TOOL: &str = "/usr/sbin/frobnicate";
        Cmd::new("alpha").arg("x");
        Command::new( "beta")
        probe_tool(runner, "label", "gamma", &["-V"]);
        locate_tool("label", "delta");
        Cmd::new(TOOL)
        Cmd::new(program)
    "#;
    let found = [
        programs_after(text, "Cmd::new(", 0),
        programs_after(text, "Command::new(", 0),
        programs_after(text, "probe_tool(", 2),
        programs_after(text, "locate_tool(", 1),
    ]
    .concat();
    assert_eq!(
        found,
        ["alpha", "/usr/sbin/frobnicate", "beta", "gamma", "delta"]
    );
    let listed = listed_programs();
    for p in ["qemu-system-x86_64", "mkfs.ext4", "nft", "firecracker"] {
        assert!(listed.contains(p), "{p} not in scripts/packages.list");
    }
}

/// Issue #13 item 16 (nit): `banger_host::watch`, inotify support for
/// tests, was compiled into every user of `banger-host`, the root helper
/// included. It sits behind `banger-host`'s `test-support` feature, which
/// only dev-dependencies enable: the helper's graph has no such feature.
#[test]
fn test_support_stays_out_of_the_helper() {
    let lib = std::fs::read_to_string(root().join("crates/banger-host/src/lib.rs")).unwrap();
    assert!(
        lib.contains("#[cfg(any(test, feature = \"test-support\"))]\npub mod watch;"),
        "banger_host::watch is compiled into every user of banger-host, the helper included"
    );
    // The cargo running this test (`$CARGO`), not one from a search path.
    // The runner clears the environment: cargo gets back its home and the
    // rustc beside it.
    let cargo = std::env::var_os("CARGO").expect("run under cargo ($CARGO)");
    let rustc = Path::new(&cargo).with_file_name("rustc");
    let mut cmd = banger_host::runner::Cmd::new(&cargo)
        .args(["tree", "--offline", "-p", "bangerd-root"])
        .args([
            "-e",
            "features,normal",
            "--prefix",
            "none",
            "--manifest-path",
        ])
        .arg(root().join("Cargo.toml"))
        .env("RUSTC", rustc);
    for var in ["HOME", "CARGO_HOME", "RUSTUP_HOME", "RUSTUP_TOOLCHAIN"] {
        if let Some(v) = std::env::var_os(var) {
            cmd = cmd.env(var, v);
        }
    }
    let out = banger_host::runner::Runner
        .run(&cmd)
        .unwrap_or_else(|e| panic!("cargo tree: {e}"));
    let tree = out.stdout;
    assert!(tree.contains("banger-host v"), "{tree}");
    assert!(!tree.contains("test-support"), "{tree}");
}
