//! A recording fake of [`DiskTools`] that plays the loop ioctls and
//! `dmsetup` well enough for the dm driver: loop devices are handed out
//! lowest first and remember the identity (device, inode) of the
//! descriptor they were given, dm devices exist between create and remove.
//! Every call is recorded (loop ioctls as `loop-configure /dev/loopN ro`
//! and the like, commands by argv), with the journal's text at that moment,
//! so tests can check that a device was journaled before it was made.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::os::unix::process::ExitStatusExt as _;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use banger_host::runner::{Cmd, Output, RunError};

use super::{Backing, DiskTools, loopdev};

#[derive(Debug, Default)]
pub(crate) struct FakeState {
    /// Loop device number → (backing identity, read-only).
    pub loops: BTreeMap<u32, (Backing, bool)>,
    /// What `DM_VERSION` fails with (`None`: it works).
    pub dm_error: Option<i32>,
    /// Make `LOOP_CONFIGURE` fail with this errno (once).
    pub loop_error: Option<i32>,
    /// Make the next attach report this identity instead (a kernel that
    /// attached something else).
    pub lie: Option<Backing>,
    pub dms: BTreeSet<String>,
    /// dm devices that refuse removal (a running VM holds them).
    pub busy: BTreeSet<String>,
    /// Fail the first command whose argv starts with this.
    pub fail: Option<String>,
    /// The stderr of that failure (default: "injected failure").
    pub fail_stderr: Option<String>,
    /// Each argv, with the journal text when it ran.
    pub calls: Vec<(String, String)>,
}

#[derive(Debug)]
pub(crate) struct FakeTools {
    pub state: Mutex<FakeState>,
    pub programs: Vec<&'static str>,
    pub journal: PathBuf,
}

impl FakeTools {
    pub fn new(journal: &Path) -> FakeTools {
        FakeTools {
            state: Mutex::new(FakeState::default()),
            programs: vec!["dmsetup"],
            journal: journal.to_path_buf(),
        }
    }

    pub fn without(mut self, program: &str) -> FakeTools {
        self.programs.retain(|p| *p != program);
        self
    }

    pub fn st(&self) -> std::sync::MutexGuard<'_, FakeState> {
        self.state.lock().unwrap()
    }

    /// The argvs so far, and forget them.
    pub fn take_calls(&self) -> Vec<String> {
        std::mem::take(&mut self.st().calls)
            .into_iter()
            .map(|(argv, _)| argv)
            .collect()
    }
}

fn status(code: i32) -> std::process::ExitStatus {
    std::process::ExitStatus::from_raw(code << 8)
}

fn out(code: i32, stdout: &str, stderr: &str) -> Output {
    Output {
        status: status(code),
        stdout: stdout.to_string(),
        stderr: stderr.to_string(),
        stdout_raw: stdout.as_bytes().to_vec(),
    }
}

impl DiskTools for FakeTools {
    fn output(&self, cmd: &Cmd) -> Result<Output, RunError> {
        let argv = cmd.display();
        let journal = std::fs::read_to_string(&self.journal).unwrap_or_default();
        let mut st = self.st();
        st.calls.push((argv.clone(), journal));
        if let Some(prefix) = st.fail.clone()
            && argv.starts_with(&prefix)
        {
            st.fail = None;
            let stderr = st.fail_stderr.take().unwrap_or("injected failure".into());
            return Ok(out(1, "", &stderr));
        }
        let words: Vec<&str> = argv.split(' ').collect();
        Ok(match words.as_slice() {
            ["dmsetup", "create", name, "--table", ..] => {
                if !st.dms.insert(name.to_string()) {
                    return Ok(out(
                        1,
                        "",
                        "device-mapper: create ioctl failed: Device or resource busy",
                    ));
                }
                out(0, "", "")
            }
            ["dmsetup", "info", name] => {
                if st.dms.contains(*name) {
                    out(0, &format!("Name: {name}\nState: ACTIVE\n"), "")
                } else {
                    out(
                        1,
                        "",
                        &format!("Device {name} does not exist.\nCommand failed."),
                    )
                }
            }
            ["dmsetup", "remove", "--retry", name] => {
                if st.busy.contains(*name) {
                    out(
                        1,
                        "",
                        "device-mapper: remove ioctl failed: Device or resource busy",
                    )
                } else if st.dms.remove(*name) {
                    out(0, "", "")
                } else {
                    out(1, "", "No such device or address")
                }
            }
            _ => out(2, "", &format!("fake: unexpected command {argv}")),
        })
    }

    fn has_program(&self, program: &str) -> bool {
        self.programs.contains(&program)
    }

    fn dm_version(&self) -> std::io::Result<()> {
        match self.st().dm_error {
            Some(e) => Err(std::io::Error::from_raw_os_error(e)),
            None => Ok(()),
        }
    }

    fn loop_free(&self) -> std::io::Result<u32> {
        let st = self.st();
        Ok((0..).find(|n| !st.loops.contains_key(n)).unwrap())
    }

    fn loop_configure(
        &self,
        n: u32,
        file: &File,
        read_only: bool,
        _label: &Path,
    ) -> std::io::Result<()> {
        let id = loopdev::identity(file)?;
        let journal = std::fs::read_to_string(&self.journal).unwrap_or_default();
        let mut st = self.st();
        let mode = if read_only { "ro" } else { "rw" };
        st.calls
            .push((format!("loop-configure /dev/loop{n} {mode}"), journal));
        if let Some(e) = st.loop_error.take() {
            return Err(std::io::Error::from_raw_os_error(e));
        }
        if st.loops.contains_key(&n) {
            return Err(std::io::Error::from_raw_os_error(
                rustix::io::Errno::BUSY.raw_os_error(),
            ));
        }
        let id = st.lie.take().unwrap_or(id);
        st.loops.insert(n, (id, read_only));
        Ok(())
    }

    fn loop_backing(&self, n: u32) -> std::io::Result<Option<Backing>> {
        Ok(self.st().loops.get(&n).map(|(b, _)| *b))
    }

    fn loop_clear(&self, n: u32) -> std::io::Result<()> {
        let mut st = self.st();
        st.calls
            .push((format!("loop-clear /dev/loop{n}"), String::new()));
        st.loops.remove(&n);
        Ok(())
    }

    fn chown(&self, path: &Path, owner: (u32, u32)) -> std::io::Result<()> {
        self.st().calls.push((
            format!("chown {}:{} {}", owner.0, owner.1, path.display()),
            String::new(),
        ));
        Ok(())
    }
}
