//! The last steps before exec, shared by a container's init and its exec processes: limits,
//! credentials, capabilities, no_new_privileges, seccomp, cwd, then execve.

use std::ffi::CString;
use std::path::{Path, PathBuf};

use caps::{CapSet, Capability, CapsHashSet};
use nix::sys::stat::Mode;
use nix::unistd::{Gid, Uid};

use crate::engine::plan::ProcessPlan;
use crate::engine::seccomp;

/// A failed step, with the step named.
#[derive(Debug, thiserror::Error)]
#[error("{step}: {detail}")]
pub(crate) struct ProcessError {
    step: &'static str,
    detail: String,
}

fn fail(step: &'static str) -> impl FnOnce(String) -> ProcessError {
    move |detail| ProcessError { step, detail }
}

fn cap_set(names: &[String]) -> CapsHashSet {
    names
        .iter()
        .filter_map(|n| n.parse::<Capability>().ok())
        .collect()
}

/// Steps that need privilege: limits, oom score, bounding set, user switch. Seccomp is
/// installed here too when no_new_privileges is off (it then needs CAP_SYS_ADMIN, which the
/// capability drop below may remove).
pub(crate) fn setup_privileged(p: &ProcessPlan) -> Result<(), ProcessError> {
    for &(resource, soft, hard) in &p.rlimits {
        let rl = libc::rlimit {
            rlim_cur: soft,
            rlim_max: hard,
        };
        let res = resource_of(resource)
            .ok_or_else(|| fail("setrlimit")(format!("unknown resource {resource}")))?;
        nix::sys::resource::setrlimit(res, rl.rlim_cur, rl.rlim_max)
            .map_err(|e| fail("setrlimit")(format!("{res:?} soft {soft} hard {hard}: {e}")))?;
    }
    if let Some(adj) = p.oom_score_adj {
        std::fs::write("/proc/self/oom_score_adj", adj.to_string())
            .map_err(|e| fail("set oom_score_adj")(format!("{adj}: {e}")))?;
    }
    if p.no_new_privileges {
        nix::sys::prctl::set_no_new_privs()
            .map_err(|e| fail("no_new_privileges")(e.to_string()))?;
    } else {
        seccomp::install(&p.seccomp).map_err(|e| fail("install seccomp filter")(e.to_string()))?;
    }
    if let Some(c) = &p.caps {
        let keep = cap_set(&c.bounding);
        for cap in caps::all() {
            if !keep.contains(&cap) {
                caps::drop(None, CapSet::Bounding, cap)
                    .map_err(|e| fail("drop bounding capability")(format!("{cap}: {e}")))?;
            }
        }
        nix::sys::prctl::set_keepcaps(true)
            .map_err(|e| fail("keep capabilities")(e.to_string()))?;
    }
    let gids: Vec<Gid> = p
        .additional_gids
        .iter()
        .map(|&g| Gid::from_raw(g))
        .collect();
    nix::unistd::setgroups(&gids).map_err(|e| fail("setgroups")(e.to_string()))?;
    let gid = Gid::from_raw(p.gid);
    nix::unistd::setresgid(gid, gid, gid).map_err(|e| fail("setgid")(format!("{}: {e}", p.gid)))?;
    let uid = Uid::from_raw(p.uid);
    nix::unistd::setresuid(uid, uid, uid).map_err(|e| fail("setuid")(format!("{}: {e}", p.uid)))?;
    if let Some(c) = &p.caps {
        nix::sys::prctl::set_keepcaps(false)
            .map_err(|e| fail("keep capabilities")(e.to_string()))?;
        // Effective first: capset(2) refuses any state where Effective is not a subset of
        // Permitted, so shrinking Permitted while a root process still has a full Effective
        // set fails with EPERM. Permitted last: it may only shrink.
        for (set, names) in [
            (CapSet::Effective, &c.effective),
            (CapSet::Inheritable, &c.inheritable),
            (CapSet::Permitted, &c.permitted),
        ] {
            caps::set(None, set, &cap_set(names))
                .map_err(|e| fail("set capabilities")(format!("{set:?}: {e}")))?;
        }
        for cap in cap_set(&c.ambient) {
            caps::raise(None, CapSet::Ambient, cap)
                .map_err(|e| fail("raise ambient capability")(format!("{cap}: {e}")))?;
        }
    }
    if let Some(mask) = p.umask {
        nix::sys::stat::umask(Mode::from_bits_truncate(mask));
    }
    Ok(())
}

fn resource_of(n: i32) -> Option<nix::sys::resource::Resource> {
    use nix::sys::resource::Resource as R;
    let all = [
        R::RLIMIT_CPU,
        R::RLIMIT_FSIZE,
        R::RLIMIT_DATA,
        R::RLIMIT_STACK,
        R::RLIMIT_CORE,
        R::RLIMIT_RSS,
        R::RLIMIT_NPROC,
        R::RLIMIT_NOFILE,
        R::RLIMIT_MEMLOCK,
        R::RLIMIT_AS,
        R::RLIMIT_LOCKS,
        R::RLIMIT_SIGPENDING,
        R::RLIMIT_MSGQUEUE,
        R::RLIMIT_NICE,
        R::RLIMIT_RTPRIO,
        R::RLIMIT_RTTIME,
    ];
    all.into_iter()
        .find(|r| i32::try_from(*r as u32).ok() == Some(n))
}

/// Finds `prog` on the PATH of the process's environment, as execvp would inside the container.
fn resolve(prog: &str, env: &[String]) -> PathBuf {
    if prog.contains('/') {
        return PathBuf::from(prog);
    }
    let path = env
        .iter()
        .find_map(|e| e.strip_prefix("PATH="))
        .unwrap_or("/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
    for dir in path.split(':').filter(|d| !d.is_empty()) {
        let candidate = Path::new(dir).join(prog);
        if nix::unistd::access(&candidate, nix::unistd::AccessFlags::X_OK).is_ok()
            && candidate.is_file()
        {
            return candidate;
        }
    }
    PathBuf::from(prog)
}

/// cwd, late seccomp, execve. Returns only on failure.
pub(crate) fn exec(p: &ProcessPlan) -> ProcessError {
    if let Err(e) = nix::unistd::chdir(&p.cwd) {
        return fail("chdir")(format!("{:?}: {e}", p.cwd));
    }
    let to_c = |v: &[String]| -> Option<Vec<CString>> {
        v.iter().map(|s| CString::new(s.as_bytes()).ok()).collect()
    };
    let (Some(args), Some(env)) = (to_c(&p.args), to_c(&p.env)) else {
        return fail("exec")("NUL byte in args or env".into());
    };
    let path = resolve(&p.args[0], &p.env);
    let Ok(cpath) = CString::new(path.as_os_str().as_encoded_bytes()) else {
        return fail("exec")("NUL byte in program path".into());
    };
    if p.no_new_privileges {
        if let Err(e) = seccomp::install(&p.seccomp) {
            return fail("install seccomp filter")(e.to_string());
        }
    }
    let e = nix::unistd::execve(&cpath, &args, &env).err();
    fail("exec")(format!(
        "{:?}: {}",
        path,
        e.map_or_else(|| "returned".to_owned(), |e| e.to_string())
    ))
}
