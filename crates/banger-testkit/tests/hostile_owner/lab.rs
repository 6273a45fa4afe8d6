//! The lab every hostile-owner test starts from: a real `bangerd-root`
//! serving a throwaway owner, and what the tests check files with.

use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use banger_proto::install::InstallVmm;
use banger_proto::net::{BridgeSpec, TapSpec};
use banger_proto::privops::{NetOp, PrivOp, Teardown, VmOp};
use banger_proto::vmops::{LaunchVmSpec, VmmKind};
use banger_testkit::*;
use serde_json::Value;

pub const KERNEL: &str = "4b4b4b4b4b4b4b4b4b4b4b4b4b4b4b4b";
pub const IMAGE: &str = "1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d";
pub const BRIDGE: &str = "bangerhost0";
pub const TAP: &str = "bangertap0";

/// A helper serving a throwaway owner, with its state under a temp dir.
/// Fields drop in order: the helper stops before its namespace and its
/// user go, the directory last.
pub struct Lab {
    pub helper: Option<RootHelper>,
    pub ns: NetNs,
    pub owner: TestUser,
    pub root: PathBuf,
    pub _tmp: tempfile::TempDir,
}

impl Lab {
    /// The owner, its state directory (as `banger system install` leaves
    /// it: the owner's), a kernel and an image of the owner's, and the two
    /// VMM stand-ins (`vmm/qemu`, `vmm/firecracker`: `exit 1` until a test
    /// writes them).
    pub fn new() -> Lab {
        require_root();
        let tmp = shared_tempdir();
        let root = tmp.path().to_path_buf();
        let owner = TestUser::create(None);
        let ns = NetNs::new();
        let lab = Lab {
            helper: None,
            ns,
            owner,
            root,
            _tmp: tmp,
        };
        for d in ["state", "state/vms", "state/images", "state/kernels"] {
            lab.owner_dir(&lab.root.join(d));
        }
        let kdir = lab.state().join("kernels").join(KERNEL);
        lab.owner_dir(&kdir);
        // An ELF header, so the Firecracker path gets past its kernel check.
        let mut kernel = b"\x7fELF".to_vec();
        kernel.resize(4096, 0);
        lab.owner_file(&kdir.join("kernel"), &kernel);
        let idir = lab.state().join("images").join(IMAGE);
        lab.owner_dir(&idir);
        lab.owner_file(&idir.join("rootfs.ext4"), &vec![0u8; 1 << 20]);
        let vmm = lab.root.join("vmm");
        std::fs::create_dir(&vmm).unwrap();
        std::fs::set_permissions(&vmm, std::fs::Permissions::from_mode(0o755)).unwrap();
        lab.stand_in("qemu", "exit 1\n");
        lab.stand_in("firecracker", "exit 1\n");
        lab
    }

    /// Start the helper, then the bridge and the tap every launch uses.
    pub fn start(self) -> Lab {
        self.start_with_tools(&[])
    }

    /// [`Lab::start`] with stand-ins bound over host tools in the helper's
    /// own mount namespace (see `RootHelper::start_in_with_tools`).
    pub fn start_with_tools(mut self, tools: &[(PathBuf, &str)]) -> Lab {
        let vmm = InstallVmm {
            qemu_bin: Some(self.root.join("vmm/qemu")),
            firecracker_bin: Some(self.root.join("vmm/firecracker")),
        };
        // The helper serves only the bridge its install records.
        let network = banger_proto::install::InstallNetwork {
            bridge: BRIDGE.into(),
            subnet: "10.213.7.0/24".parse().unwrap(),
        };
        // A jailed Firecracker's slot uid has no groups, so the executor
        // takes `/dev/kvm` only as a world read-write node (0666, as
        // systemd makes it); this host's is 0660. A node of the test's,
        // 10:232 and 0666, is bound over it in the helper's own mount
        // namespace (the stand-ins never open it).
        let kvm = self.root.join("kvm");
        kvm_node(&kvm);
        let mut binds = tools.to_vec();
        binds.push((kvm, "/dev/kvm"));
        self.helper = Some(RootHelper::start_in_with_tools(
            &self.ns,
            &self.root,
            &self.owner,
            vmm,
            network,
            &binds,
        ));
        self.call(PrivOp::Net(NetOp::EnsureBridge(BridgeSpec {
            name: BRIDGE.into(),
            address: [10, 213, 7, 1].into(),
            prefix_len: 24,
        })))
        .expect("EnsureBridge");
        self.call(PrivOp::Net(NetOp::EnsureTap(TapSpec {
            name: TAP.into(),
            bridge: BRIDGE.into(),
            owner_uid: self.owner.uid,
        })))
        .expect("EnsureTap");
        self
    }

    pub fn state(&self) -> PathBuf {
        self.root.join("state")
    }

    pub fn vm_dir(&self, vm_id: &str) -> PathBuf {
        self.state().join("vms").join(vm_id)
    }

    pub fn owner_dir(&self, p: &Path) {
        std::fs::create_dir_all(p).unwrap();
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::os::unix::fs::chown(p, Some(self.owner.uid), Some(self.owner.gid)).unwrap();
    }

    pub fn owner_file(&self, p: &Path, bytes: &[u8]) {
        std::fs::write(p, bytes).unwrap();
        std::os::unix::fs::chown(p, Some(self.owner.uid), Some(self.owner.gid)).unwrap();
    }

    /// A VM directory as `bangerd` leaves it before `LaunchVm`: the
    /// owner's, with a root and a work disk of the owner's.
    pub fn vm(&self, vm_id: &str) -> PathBuf {
        let dir = self.vm_dir(vm_id);
        self.owner_dir(&dir);
        self.owner_file(&dir.join("root.ext4"), &[0u8; 4096]);
        self.owner_file(&dir.join("work.ext4"), &[0u8; 4096]);
        dir
    }

    /// (Re)write the stand-in for `vmm` (`qemu` or `firecracker`): a shell
    /// script root runs as the owner. Written beside and renamed into
    /// place, so the path the helper executes is never open for writing.
    pub fn stand_in(&self, vmm: &str, body: &str) {
        let path = self.root.join("vmm").join(vmm);
        let tmp = path.with_extension("new");
        std::fs::write(&tmp, format!("#!/bin/sh\n{body}")).unwrap();
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::rename(&tmp, &path).unwrap();
    }

    /// Make the stand-in for `vmm` a link to `program` (e.g. a held file,
    /// `banger_vmm::testing::Held`, made before [`Lab::start`] so that the
    /// helper's mount namespace has its mount).
    pub fn stand_in_link(&self, vmm: &str, program: &Path) {
        let path = self.root.join("vmm").join(vmm);
        let tmp = path.with_extension("new");
        std::os::unix::fs::symlink(program, &tmp).unwrap();
        std::fs::rename(&tmp, &path).unwrap();
    }

    /// Send `op` over `root.sock` as the owner: the result's body, or the
    /// error's code and messages.
    pub fn call(&self, op: PrivOp) -> Result<Value, String> {
        let helper = self.helper.as_ref().expect("the helper is started");
        helper.call_as(&self.owner, op)
    }

    pub fn launch(&self, vm_id: &str, vmm: VmmKind) -> Result<Value, String> {
        self.launch_from(vm_id, vmm, IMAGE, KERNEL)
    }

    pub fn launch_from(
        &self,
        vm_id: &str,
        vmm: VmmKind,
        image: &str,
        kernel: &str,
    ) -> Result<Value, String> {
        self.launch_spec(LaunchVmSpec {
            vm_id: vm_id.into(),
            image_id: image.into(),
            kernel_id: kernel.into(),
            vmm,
            vcpus: 1,
            memory_mib: 128,
            tap: TAP.into(),
            mac: "02:ba:0a:d5:07:02".into(),
            force_kvm: vmm == VmmKind::Firecracker,
            restore: None,
        })
    }

    /// A Firecracker launch of `vm_id` (the lab's image and kernel) on
    /// `tap` with `mac`.
    pub fn launch_fc_on(&self, vm_id: &str, tap: &str, mac: &str) -> Result<Value, String> {
        self.launch_spec(LaunchVmSpec {
            tap: tap.into(),
            mac: mac.into(),
            ..self.fc_spec(vm_id)
        })
    }

    /// The spec of a Firecracker launch of `vm_id` as [`Lab::launch`]
    /// sends it.
    pub fn fc_spec(&self, vm_id: &str) -> LaunchVmSpec {
        LaunchVmSpec {
            vm_id: vm_id.into(),
            image_id: IMAGE.into(),
            kernel_id: KERNEL.into(),
            vmm: VmmKind::Firecracker,
            vcpus: 1,
            memory_mib: 128,
            tap: TAP.into(),
            mac: "02:ba:0a:d5:07:02".into(),
            force_kvm: true,
            restore: None,
        }
    }

    pub fn launch_spec(&self, spec: LaunchVmSpec) -> Result<Value, String> {
        self.call(PrivOp::Vm(VmOp::LaunchVm(spec)))
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if self.helper.is_some() {
            let _ = self.call(PrivOp::Net(NetOp::Teardown(Teardown)));
        }
    }
}

/// A root-only file (root:root 0600) holding `text`.
pub fn root_file(p: &Path, text: &str) {
    std::fs::write(p, text).unwrap();
    std::os::unix::fs::chown(p, Some(0), Some(0)).unwrap();
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o600)).unwrap();
}

/// Owner, group, mode, size and a digest of the content (FNV-1a): what
/// root must never change.
pub fn identity(p: &Path) -> (u32, u32, u32, u64, u64) {
    let m = std::fs::symlink_metadata(p).unwrap();
    let digest = std::fs::read(p)
        .unwrap()
        .iter()
        .fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3)
        });
    (m.uid(), m.gid(), m.mode() & 0o7777, m.len(), digest)
}

/// Give this thread the owner's file-system identity: from here on it can
/// do in the state directory what the owner's processes could, and no
/// more (a non-zero fsuid drops root's file capabilities). `setfsuid` is
/// per thread; call it only on a thread that ends with the test's race.
pub fn become_owner_fs(owner: &TestUser) {
    // SAFETY: setfsgid/setfsuid take plain integers and change only the
    // calling thread's file-system ids; the thread is a racer that ends
    // before the test does. Each returns the previous id, so the second
    // call reports whether the first took.
    let ok = unsafe {
        libc::setfsgid(owner.gid);
        libc::setfsuid(owner.uid);
        libc::setfsgid(owner.gid) as u32 == owner.gid
            && libc::setfsuid(owner.uid) as u32 == owner.uid
    };
    assert!(ok, "could not take the owner's file-system ids");
}

/// Exchange the names `a` and `b` in the directory `dir`
/// (`RENAME_EXCHANGE`), as the owner's racers do: whether it happened.
pub fn exchange(dir: &std::fs::File, a: &str, b: &str) -> bool {
    rustix::fs::renameat_with(dir, a, dir, b, rustix::fs::RenameFlags::EXCHANGE).is_ok()
}
