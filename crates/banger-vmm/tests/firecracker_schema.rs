//! Every request body the Firecracker driver sends, validated against the
//! Firecracker v1.16.1 swagger spec; and proof that the validator refuses
//! wrong bodies.

mod firecracker_support;

use std::collections::BTreeSet;

use banger_vmm::LaunchSpec;
use banger_vmm::firecracker::paths::Paths;
use banger_vmm::firecracker::{
    ActionType, ApiRequest, VmRunState, config_plan, restore_plan, snapshot_create,
};
use firecracker_support::{sample_spec, swagger};
use serde_json::{Value, json};

/// Validate one request; the error names the request.
fn check(spec: &swagger::Spec, req: &ApiRequest) {
    if let Err(e) = spec.validate_request(req.method, &req.path, req.body.as_ref()) {
        panic!("{} {} {:?}: {e}", req.method, req.path, req.body);
    }
}

/// Variants of the sample spec covering every optional branch of the plan.
fn variants() -> Vec<LaunchSpec> {
    let dir = std::env::temp_dir();
    let base = sample_spec(&dir);
    let mut with_initrd = base.clone();
    with_initrd.initrd = Some("/var/lib/banger/kernels/k1/initrd.img".into());
    let mut read_only_root = base.clone();
    read_only_root.drives[0].read_only = true;
    read_only_root.drives.truncate(1);
    let mut big = base.clone();
    big.vcpus = 32;
    big.memory_mib = 65536;
    big.vsock_cid = u32::MAX;
    vec![base, with_initrd, read_only_root, big]
}

#[test]
fn every_request_the_driver_sends_matches_the_spec() {
    let spec = swagger();
    let mut templates = BTreeSet::new();
    for launch in variants() {
        // The jailed launch's plan and the unjailed one's (until the
        // executor launches jailed: design step 5).
        for paths in [Paths::jailed(&launch), Paths::host(&launch)] {
            let plan = config_plan(&launch, &paths).into_iter();
            let snapshot = [snapshot_create(&paths.saved_state, &paths.saved_memory)].into_iter();
            for req in plan.chain(snapshot).chain(restore_plan(&launch, &paths)) {
                check(&spec, &req);
                let op = spec.operation(req.method, &req.path).unwrap();
                templates.insert(format!("{} {}", req.method, op.template));
            }
        }
    }
    // The calls made after launch: status, shutdown, pause and resume.
    for req in [
        ApiRequest::get("/"),
        ApiRequest::action(ActionType::SendCtrlAltDel),
        ApiRequest::vm_state(VmRunState::Paused),
        ApiRequest::vm_state(VmRunState::Resumed),
    ] {
        check(&spec, &req);
        let op = spec.operation(req.method, &req.path).unwrap();
        templates.insert(format!("{} {}", req.method, op.template));
    }
    let want: BTreeSet<String> = [
        "GET /",
        "PUT /actions",
        "PUT /boot-source",
        "PUT /drives/{drive_id}",
        "PUT /logger",
        "PUT /machine-config",
        "PUT /network-interfaces/{iface_id}",
        "PUT /snapshot/create",
        "PUT /snapshot/load",
        "PUT /vsock",
        "PATCH /vm",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    assert_eq!(templates, want);
}

#[test]
fn the_plan_is_in_order_and_carries_the_spec_values() {
    let dir = std::env::temp_dir();
    let launch = sample_spec(&dir);
    let plan = config_plan(&launch, &Paths::host(&launch));
    let paths: Vec<&str> = plan.iter().map(|r| r.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "/logger",
            "/machine-config",
            "/boot-source",
            "/drives/root",
            "/drives/work",
            "/network-interfaces/eth0",
            "/vsock",
            "/actions",
        ]
    );
    assert!(plan.iter().all(|r| r.method == "PUT"));
    let body = |i: usize| plan[i].body.clone().unwrap();
    assert_eq!(body(1), json!({"vcpu_count": 2, "mem_size_mib": 512}));
    assert_eq!(
        body(2),
        json!({
            "kernel_image_path": "/var/lib/banger/kernels/k1/vmlinux",
            "boot_args": "console=ttyS0 reboot=k panic=1 root=/dev/vda rw",
        })
    );
    assert_eq!(
        body(3),
        json!({
            "drive_id": "root", "path_on_host": "/var/lib/banger/vms/v/root.ext4",
            "is_root_device": true, "is_read_only": false,
        })
    );
    assert_eq!(body(4)["is_root_device"], json!(false));
    assert_eq!(
        body(5),
        json!({"iface_id": "eth0", "host_dev_name": "bangertap3", "guest_mac": "02:ba:0a:c8:00:05"})
    );
    assert_eq!(
        body(6),
        json!({"guest_cid": 7, "uds_path": launch.vsock_socket().to_string_lossy()})
    );
    assert_eq!(body(7), json!({"action_type": "InstanceStart"}));
}

/// Jailed, every file the plan names is a fixed path in the jail's root
/// (`run/` at `/run`, drives at `/drive-<id>`, copies at `/kernel` and
/// `/initrd`): no host path of the spec reaches Firecracker.
#[test]
fn the_jailed_plan_names_only_the_jails_paths() {
    let dir = std::env::temp_dir();
    let mut launch = sample_spec(&dir);
    launch.initrd = Some("/var/lib/banger/kernels/k1/initrd.img".into());
    let plan = config_plan(&launch, &Paths::jailed(&launch));
    let body = |path: &str| {
        plan.iter()
            .find(|r| r.path == path)
            .and_then(|r| r.body.clone())
            .unwrap()
    };
    assert_eq!(body("/logger")["log_path"], json!("/run/firecracker.log"));
    assert_eq!(body("/boot-source")["kernel_image_path"], json!("/kernel"));
    assert_eq!(body("/boot-source")["initrd_path"], json!("/initrd"));
    assert_eq!(body("/drives/root")["path_on_host"], json!("/drive-root"));
    assert_eq!(body("/drives/work")["path_on_host"], json!("/drive-work"));
    assert_eq!(body("/vsock")["uds_path"], json!("/run/vsock.sock"));
    let text = serde_json::to_string(&plan.iter().map(|r| &r.body).collect::<Vec<_>>()).unwrap();
    for host in ["/var/lib/banger", dir.to_str().unwrap()] {
        assert!(!text.contains(host), "{host} in the jailed plan: {text}");
    }
}

/// Each wrong request must be refused with an error containing `needle`.
#[test]
fn the_validator_refuses_wrong_bodies() {
    let spec = swagger();
    let drive = json!({
        "drive_id": "root", "path_on_host": "/d/root.ext4",
        "is_root_device": true, "is_read_only": false,
    });
    let with = |base: &Value, key: &str, v: Value| {
        let mut b = base.clone();
        b[key] = v;
        b
    };
    let without = |base: &Value, key: &str| {
        let mut b = base.clone();
        b.as_object_mut().unwrap().remove(key);
        b
    };
    let machine = json!({"vcpu_count": 2, "mem_size_mib": 512});
    let cases: Vec<(&str, &str, Option<Value>, &str)> = vec![
        // required field missing
        (
            "PUT",
            "/drives/root",
            Some(without(&drive, "is_root_device")),
            "\"is_root_device\" is missing",
        ),
        (
            "PUT",
            "/metrics",
            Some(json!({})),
            "\"metrics_path\" is missing",
        ),
        // wrong types
        (
            "PUT",
            "/drives/root",
            Some(with(&drive, "is_read_only", json!("no"))),
            "body.is_read_only: expected boolean",
        ),
        (
            "PUT",
            "/machine-config",
            Some(with(&machine, "vcpu_count", json!("2"))),
            "body.vcpu_count: expected integer",
        ),
        (
            "PUT",
            "/machine-config",
            Some(with(&machine, "mem_size_mib", json!(512.5))),
            "body.mem_size_mib: expected integer",
        ),
        // enum
        (
            "PUT",
            "/actions",
            Some(json!({"action_type": "Reboot"})),
            "\"Reboot\" is not one of",
        ),
        (
            "PUT",
            "/logger",
            Some(json!({"level": "Loud"})),
            "body.level",
        ),
        // ranges
        (
            "PUT",
            "/machine-config",
            Some(with(&machine, "vcpu_count", json!(33))),
            "above the maximum 32",
        ),
        (
            "PUT",
            "/machine-config",
            Some(with(&machine, "vcpu_count", json!(0))),
            "below the minimum 1",
        ),
        (
            "PUT",
            "/vsock",
            Some(json!({"guest_cid": 2, "uds_path": "/v.sock"})),
            "below the minimum 3",
        ),
        // unknown field (a typo Firecracker would refuse)
        (
            "PUT",
            "/drives/root",
            Some(with(&drive, "is_readonly", json!(true))),
            "unknown field \"is_readonly\"",
        ),
        // path id and body id disagree
        (
            "PUT",
            "/drives/work",
            Some(drive.clone()),
            "the path says \"work\"",
        ),
        // a required body is absent, or a body where none is taken
        ("PUT", "/boot-source", None, "the body is required"),
        ("GET", "/", Some(json!({})), "takes no body"),
        // no such operation
        (
            "PUT",
            "/drive/root",
            Some(drive.clone()),
            "no operation PUT /drive/root",
        ),
        ("DELETE", "/drives/root", None, "no operation DELETE"),
    ];
    for (method, path, body, needle) in cases {
        let err = spec
            .validate_request(method, path, body.as_ref())
            .expect_err(&format!("{method} {path} {body:?} should be refused"));
        assert!(
            err.contains(needle),
            "{method} {path}: {needle:?} not in {err:?}"
        );
    }
}

#[test]
fn logger_levels_read_from_yaml_stay_strings() {
    // YAML 1.1 would read `Off` as false; the spec's enum must keep it.
    let spec = swagger();
    spec.validate_definition("Logger", &json!({"level": "Off"}))
        .unwrap();
    spec.validate_definition("Logger", &json!({"level": false}))
        .unwrap_err();
}

#[test]
fn the_validator_refuses_schema_keywords_it_does_not_implement() {
    let spec = swagger::Spec::new(json!({"definitions": {
        "T": {"type": "string", "pattern": "^[a-z]+$"}
    }}));
    let err = spec.validate_definition("T", &json!("abc")).unwrap_err();
    assert!(err.contains("\"pattern\" is not understood"), "{err}");
}

/// Walk every schema in the spec: the validator must implement (or know
/// as annotation) each keyword, so no part of the spec is silently skipped.
#[test]
fn every_schema_in_the_spec_uses_only_understood_keywords() {
    fn walk(spec: &swagger::Spec, schema: &Value, at: &str, seen: &mut usize) {
        let Some(obj) = schema.as_object() else {
            panic!("{at}: schema is not an object");
        };
        *seen += 1;
        // An empty value of the schema's type exercises the keyword check;
        // the value may fail other rules, but never with "not understood".
        if let Err(e) = spec.validate(schema, &Value::Null, at) {
            assert!(!e.contains("not understood"), "{e}");
        }
        for (name, sub) in obj
            .get("properties")
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
        {
            walk(spec, sub, &format!("{at}.{name}"), seen);
        }
        if let Some(items) = obj.get("items") {
            walk(spec, items, &format!("{at}[]"), seen);
        }
        if let Some(extra @ Value::Object(_)) = obj.get("additionalProperties") {
            walk(spec, extra, &format!("{at}.*"), seen);
        }
    }
    let json = firecracker_support::spec_json();
    let spec = swagger::Spec::new(json.clone());
    let mut seen = 0;
    for (name, schema) in json["definitions"].as_object().unwrap() {
        walk(&spec, schema, name, &mut seen);
    }
    assert!(seen > 100, "walked only {seen} schemas");
}
