//! Helpers of the black-box suites: locating the repo, the lab and the guest image, and
//! reading a bzImage's embedded version.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The repository root (this crate lives in `<repo>/tests`).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// Errors of the suite helpers.
#[derive(Debug, thiserror::Error)]
pub enum SuiteError {
    #[error("run {cmd}: {source}")]
    Spawn {
        cmd: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{cmd} failed ({status}): {stderr}")]
    Failed {
        cmd: String,
        status: String,
        stderr: String,
    },
    #[error("{cmd} printed no {key}= line")]
    MissingKey { cmd: String, key: String },
    #[error("bzImage: {0}")]
    BadImage(String),
}

/// Paths of the guest image, as printed by `guest/build`.
#[derive(Debug, Clone)]
pub struct GuestImage {
    pub vmlinux: PathBuf,
    pub bzimage: PathBuf,
    pub initrd: PathBuf,
}

/// Runs `script` (relative to the repo) and returns it with its stdout.
fn run_script(script: &str) -> Result<(String, String), SuiteError> {
    let path = repo_root().join(script);
    let cmd = path.display().to_string();
    let out = output(&cmd, &mut Command::new(&path))?;
    Ok((cmd, String::from_utf8_lossy(&out.stdout).into_owned()))
}

/// Runs `c` (named `cmd` in errors) to completion; an error unless it exits 0.
fn output(cmd: &str, c: &mut Command) -> Result<Output, SuiteError> {
    let out = c.output().map_err(|source| SuiteError::Spawn {
        cmd: cmd.to_owned(),
        source,
    })?;
    check(cmd, &out)?;
    Ok(out)
}

/// The path on the `key=PATH` line of `stdout`.
fn key_path(cmd: &str, stdout: &str, key: &str) -> Result<PathBuf, SuiteError> {
    stdout
        .lines()
        .find_map(|l| l.strip_prefix(key).and_then(|r| r.strip_prefix('=')))
        .map(PathBuf::from)
        .ok_or_else(|| SuiteError::MissingKey {
            cmd: cmd.to_owned(),
            key: key.to_owned(),
        })
}

/// Builds (or finds in the cache) the guest kernel and initrd with `guest/build`.
pub fn guest_image() -> Result<GuestImage, SuiteError> {
    let (cmd, out) = run_script("guest/build")?;
    Ok(GuestImage {
        vmlinux: key_path(&cmd, &out, "vmlinux")?,
        bzimage: key_path(&cmd, &out, "bzImage")?,
        initrd: key_path(&cmd, &out, "initrd")?,
    })
}

/// Builds (or finds in the cache) virtiofsd with `scripts/ensure-virtiofsd`.
pub fn virtiofsd() -> Result<PathBuf, SuiteError> {
    let (cmd, out) = run_script("scripts/ensure-virtiofsd")?;
    key_path(&cmd, &out, "virtiofsd")
}

/// What a pod in a VM needs on the host: the shim, a static hull-vmm and hullctl (in one
/// directory), the guest image and virtiofsd.
#[derive(Debug)]
pub struct PodStack {
    pub bin_dir: PathBuf,
    pub image: GuestImage,
    pub virtiofsd: PathBuf,
}

/// The target triple hull-vmm is built for when it must be static (the shim's jail holds
/// no shared libraries): with `--target`, the rustflags reach hull-vmm and its dependencies
/// but not build scripts and proc macros, as `guest/build` does for the agent.
pub const STATIC_TARGET: &str = "x86_64-unknown-linux-gnu";

/// Builds hull-vmm and hullctl statically linked (one cargo run): hull-vmm runs in its jail,
/// which holds no shared libraries, and hullctl also in the installer image, which has none
/// either (the kubelet suite runs that image's container). Returns their paths.
pub fn build_static() -> Result<(PathBuf, PathBuf), SuiteError> {
    let cmd = format!(
        "cargo build --locked -p hull-vmm -p hullctl --target {STATIC_TARGET} (+crt-static)"
    );
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    output(
        &cmd,
        Command::new(cargo)
            .args([
                "build",
                "--locked",
                "-p",
                "hull-vmm",
                "-p",
                "hullctl",
                "--target",
                STATIC_TARGET,
            ])
            .env(
                "CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUSTFLAGS",
                "-C target-feature=+crt-static",
            )
            .current_dir(repo_root()),
    )?;
    let dir = target_dir(&cmd)?.join(STATIC_TARGET).join("debug");
    Ok((dir.join("hull-vmm"), dir.join("hullctl")))
}

/// `<target>` of the running test binary (`<target>/debug/deps/<test>`).
fn target_dir(cmd: &str) -> Result<PathBuf, SuiteError> {
    let exe = std::env::current_exe().map_err(|source| SuiteError::Spawn {
        cmd: cmd.to_owned(),
        source,
    })?;
    exe.ancestors()
        .nth(3)
        .map(Path::to_path_buf)
        .ok_or_else(|| SuiteError::MissingKey {
            cmd: cmd.to_owned(),
            key: format!("target directory above {}", exe.display()),
        })
}

/// Builds (or finds) everything a lab test of pods in VMs passes to its script. The binaries
/// are hard-linked (or copied) into `<target>/lab-bin`, because the static hull-vmm and hullctl
/// live in another directory than the shim, and lab scripts take one.
pub fn pod_stack() -> Result<PodStack, SuiteError> {
    let shim = build_bin("containerd-shim-hull-v2")?;
    // Lab scripts ask the shim and the agent directly with hullctl (e.g. Task.Stats).
    let (vmm, hullctl) = build_static()?;
    let cmd = "assemble <target>/lab-bin";
    let bin_dir = target_dir(cmd)?.join("lab-bin");
    std::fs::create_dir_all(&bin_dir).map_err(|source| SuiteError::Spawn {
        cmd: cmd.into(),
        source,
    })?;
    for from in [&shim, &hullctl, &vmm] {
        let to = bin_dir.join(from.file_name().unwrap_or_default());
        let _ = std::fs::remove_file(&to);
        std::fs::hard_link(from, &to)
            .or_else(|_| std::fs::copy(from, &to).map(drop))
            .map_err(|source| SuiteError::Spawn {
                cmd: format!("{cmd}: {} -> {}", from.display(), to.display()),
                source,
            })?;
    }
    Ok(PodStack {
        bin_dir,
        image: guest_image()?,
        virtiofsd: virtiofsd()?,
    })
}

/// `lab/run`'s exit code when the lab's own kernel crashed or locked up, and a lab script's
/// when it caught a guest stuck in the lab's emulated SVM (`vcpu_stuck_in_lab` in lab/lib.sh):
/// the lab's defects, not the script's failure.
pub const LAB_LOCKED_UP: i32 = 125;

/// What a lab script run ended with: its exit status and its `FAIL:` lines (every try's).
#[derive(Debug)]
pub struct LabRun {
    pub status: std::process::ExitStatus,
    pub failures: Vec<String>,
}

/// Runs `bash SCRIPT ARGS...` inside the lab (`lab/run --timeout SECS`, DESIGN §5) from the
/// repo root; returns its exit status and `FAIL:` lines. The scripts source `lab/lib.sh`: one
/// `PASS:`/`FAIL:` line per check, exit 1 on any FAIL.
///
/// The script's output goes to ours as it comes (written to the process's stdout, which the
/// test harness does not capture, so a long suite shows its progress); the `FAIL:` lines are
/// also kept, so that a failed test's message names what failed: CI shows the panic message,
/// not always the whole log.
///
/// The lab host's kernel can crash or lock up under QEMU's SVM emulation, and a guest can get
/// stuck re-faulting in it (lab/README.md): then `lab/run` or the script exits
/// [`LAB_LOCKED_UP`] and the script runs once more, saying so. Only that code is retried: a
/// script's own failure, a timeout or a guest crash inside the lab never is.
pub fn lab_script(
    timeout_secs: u32,
    script: &str,
    args: &[&std::ffi::OsStr],
) -> Result<LabRun, SuiteError> {
    lab_script_with_reruns(timeout_secs, script, args, 1)
}

/// [`lab_script`] with up to `reruns` reruns on [`LAB_LOCKED_UP`], for a long script that
/// resumes where the lab failed instead of starting over: the k-th rerun gets
/// `HULL_LAB_RERUN=k` in its environment (`lab/run` passes `HULL_*` on), so the script can
/// keep what earlier runs recorded in its output directory.
pub fn lab_script_with_reruns(
    timeout_secs: u32,
    script: &str,
    args: &[&std::ffi::OsStr],
    reruns: u32,
) -> Result<LabRun, SuiteError> {
    let root = repo_root();
    let mut failures = Vec::new();
    let mut run = |rerun: u32| {
        let mut cmd = Command::new(root.join("lab/run"));
        cmd.arg("--timeout")
            .arg(timeout_secs.to_string())
            .arg("--")
            .arg("bash")
            .arg(root.join(script))
            .args(args)
            .current_dir(&root)
            .stdout(std::process::Stdio::piped());
        if rerun > 0 {
            cmd.env("HULL_LAB_RERUN", rerun.to_string());
        } else {
            cmd.env_remove("HULL_LAB_RERUN");
        }
        let spawn_error = |source| SuiteError::Spawn {
            cmd: format!("lab/run -- bash {script}"),
            source,
        };
        let mut child = cmd.spawn().map_err(spawn_error)?;
        if let Some(out) = child.stdout.take() {
            failures.extend(relay_lines(out, std::io::stdout()));
        }
        child.wait().map_err(spawn_error)
    };
    let mut status = run(0)?;
    for rerun in 1..=reruns {
        if status.code() != Some(LAB_LOCKED_UP) {
            break;
        }
        println!(
            "RETRY: the lab's emulated SVM failed during {script} (the lab host's kernel crashed \
             or locked up, or a guest got stuck re-faulting: a known lab defect, not a test \
             failure); rerun {rerun} of at most {reruns}"
        );
        status = run(rerun)?;
    }
    Ok(LabRun { status, failures })
}

/// Copies `out` line by line to `to` until it ends; returns its `FAIL:` lines. A write error
/// (a closed stdout) stops the copy but not the reading, so the script never blocks on a full
/// pipe.
fn relay_lines(out: impl std::io::Read, to: impl std::io::Write) -> Vec<String> {
    use std::io::BufRead;
    let mut reader = std::io::BufReader::new(out);
    let mut stdout = Some(to);
    let mut failures = Vec::new();
    let mut line = Vec::new();
    loop {
        line.clear();
        match reader.read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        if stdout
            .as_mut()
            .is_some_and(|o| o.write_all(&line).and_then(|()| o.flush()).is_err())
        {
            stdout = None;
        }
        if line.starts_with(b"FAIL:") {
            failures.push(String::from_utf8_lossy(&line).trim_end().to_owned());
        }
    }
    failures
}

/// `<repo>/target/lab-out/NAME`: a lab script's log directory (`target/lab-out` is the lab's
/// read-write way back to the host, lab/README.md).
pub fn lab_out_dir(name: &str) -> PathBuf {
    repo_root().join("target/lab-out").join(name)
}

/// The whole check of a lab test: runs `script` inside the lab with [`lab_script`] and panics
/// unless it exits 0 (every check passed), naming the exit status and `out_dir`, where the
/// script leaves its logs. A lab that cannot run (no `lab/run`, no KVM inside) fails too.
pub fn assert_lab_script(
    timeout_secs: u32,
    script: &str,
    args: &[&std::ffi::OsStr],
    out_dir: &Path,
) {
    assert_lab_script_with_reruns(timeout_secs, script, args, out_dir, 1);
}

/// [`assert_lab_script`] through [`lab_script_with_reruns`], `out_dir` emptied first.
pub fn assert_lab_script_with_reruns(
    timeout_secs: u32,
    script: &str,
    args: &[&std::ffi::OsStr],
    out_dir: &Path,
    reruns: u32,
) {
    // A fresh output directory: a rerun resumes from what the script recorded there
    // (HULL_LAB_RERUN), and that must be this test's first try, not an earlier, interrupted
    // test's (a first try whose lab crashed before the script began would otherwise resume
    // a stale record).
    match std::fs::remove_dir_all(out_dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => panic!("clear {}: {e}", out_dir.display()),
    }
    let run = lab_script_with_reruns(timeout_secs, script, args, reruns)
        .unwrap_or_else(|e| panic!("lab/run -- bash {script}: {e}"));
    assert!(
        run.status.success(),
        "lab checks of {script} failed ({}); logs in {}; {} FAIL line(s):\n{}",
        run.status,
        out_dir.display(),
        run.failures.len(),
        run.failures.join("\n")
    );
}

/// The whole check of a lab test that runs pods through containerd: builds the
/// [`pod_stack`] and runs `script` with [`assert_lab_script`] on the arguments such scripts
/// take, `BINDIR VMLINUX INITRD VIRTIOFSD OUTDIR` (OUTDIR: [`lab_out_dir`] of `out_name`).
pub fn assert_pod_lab_script(timeout_secs: u32, script: &str, out_name: &str) {
    assert_pod_lab_script_with_reruns(timeout_secs, script, out_name, 1);
}

/// [`assert_pod_lab_script`] with up to `reruns` reruns on [`LAB_LOCKED_UP`], for a script
/// that resumes (see [`lab_script_with_reruns`]).
pub fn assert_pod_lab_script_with_reruns(
    timeout_secs: u32,
    script: &str,
    out_name: &str,
    reruns: u32,
) {
    let pod = pod_stack().expect("build the shim, hull-vmm, guest and virtiofsd");
    let out_dir = lab_out_dir(out_name);
    assert_lab_script_with_reruns(
        timeout_secs,
        script,
        &[
            pod.bin_dir.as_os_str(),
            pod.image.vmlinux.as_os_str(),
            pod.image.initrd.as_os_str(),
            pod.virtiofsd.as_os_str(),
            out_dir.as_os_str(),
        ],
        &out_dir,
        reruns,
    );
}

/// Returns the path of the workspace binary `name` (debug profile), building the workspace
/// first: lab tests need other packages' binaries, which cargo does not build for a crate's
/// tests. The build is the CI build step's own (`--workspace --all-targets`), so in CI it is
/// a no-op: building one binary alone would resolve the dependencies' features differently
/// and rebuild crates, and turn off the shim's test-only backend that its own tests use.
/// The test binary calling this lives in `target/debug/deps`; binaries are one level up.
pub fn build_bin(name: &str) -> Result<PathBuf, SuiteError> {
    static BUILT: std::sync::Mutex<bool> = std::sync::Mutex::new(false);
    let cmd = String::from("cargo build --locked --workspace --all-targets");
    {
        let mut built = BUILT
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if !*built {
            let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
            output(
                &cmd,
                Command::new(cargo)
                    .args(["build", "--locked", "--workspace", "--all-targets"])
                    .current_dir(repo_root()),
            )?;
            *built = true;
        }
    }
    let exe = std::env::current_exe().map_err(|source| SuiteError::Spawn {
        cmd: cmd.clone(),
        source,
    })?;
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .map(|d| d.join(name))
        .unwrap_or_else(|| PathBuf::from(name));
    if bin.exists() {
        Ok(bin)
    } else {
        Err(SuiteError::MissingKey {
            cmd,
            key: format!("binary {}", bin.display()),
        })
    }
}

fn check(cmd: &str, out: &Output) -> Result<(), SuiteError> {
    if out.status.success() {
        return Ok(());
    }
    Err(SuiteError::Failed {
        cmd: cmd.to_owned(),
        status: out.status.to_string(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}

/// The kernel version string embedded in a bzImage (boot protocol: the setup header's
/// `kernel_version` field at 0x20E points, relative to 0x200, at a NUL-terminated string).
pub fn bzimage_version(image: &[u8]) -> Result<String, SuiteError> {
    const HEADER_MAGIC_AT: usize = 0x202;
    const VERSION_PTR_AT: usize = 0x20E;
    let magic = image.get(HEADER_MAGIC_AT..HEADER_MAGIC_AT + 4);
    if magic != Some(b"HdrS".as_slice()) {
        return Err(SuiteError::BadImage("no HdrS setup header".into()));
    }
    let ptr = image
        .get(VERSION_PTR_AT..VERSION_PTR_AT + 2)
        .map(|b| usize::from(u16::from_le_bytes([b[0], b[1]])))
        .ok_or_else(|| SuiteError::BadImage("truncated header".into()))?;
    let start = 0x200 + ptr;
    let tail = image
        .get(start..)
        .ok_or_else(|| SuiteError::BadImage(format!("version pointer {ptr:#x} out of range")))?;
    let end = tail.iter().position(|&b| b == 0).unwrap_or(tail.len());
    Ok(String::from_utf8_lossy(&tail[..end]).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lab_scripts_fail_lines_are_kept_for_the_test_message() {
        let out: &[u8] = b"PASS: one\nFAIL: two: why\nINFO: x\nFAIL: three\xff\nFAIL: no newline";
        let mut copy = Vec::new();
        assert_eq!(
            relay_lines(out, &mut copy),
            ["FAIL: two: why", "FAIL: three\u{fffd}", "FAIL: no newline"]
        );
        assert_eq!(copy, out, "the output is not passed on as it was");
    }

    #[test]
    fn reads_the_setup_header_version() {
        let mut img = vec![0u8; 0x400];
        img[0x202..0x206].copy_from_slice(b"HdrS");
        img[0x20E..0x210].copy_from_slice(&0x100u16.to_le_bytes());
        let v = b"6.12.57-hull (hull@hull) #1 SMP\0";
        img[0x300..0x300 + v.len()].copy_from_slice(v);
        assert_eq!(
            bzimage_version(&img).expect("version"),
            "6.12.57-hull (hull@hull) #1 SMP"
        );
    }

    #[test]
    fn rejects_images_without_a_header_or_with_a_wild_pointer() {
        assert!(bzimage_version(&[0u8; 0x300]).is_err());
        let mut img = vec![0u8; 0x300];
        img[0x202..0x206].copy_from_slice(b"HdrS");
        img[0x20E..0x210].copy_from_slice(&0xFFFFu16.to_le_bytes());
        assert!(bzimage_version(&img).is_err());
    }
}
