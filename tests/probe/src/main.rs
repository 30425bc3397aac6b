//! skiff-probe: run inside a container, reports what the process sees as one JSON object.
//!
//! `skiff-probe [report] [--sysctl NAME]…` prints the report; `skiff-probe alloc MIB` touches
//! memory 1 MiB at a time, printing each MiB done; `skiff-probe forks N` forks up to N sleeping
//! children and prints how many it got; `skiff-probe sleep` sleeps until killed.
//! Built statically (musl) so it runs in any rootfs.

use std::collections::BTreeMap;

use serde_json::{Value, json};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("alloc") => alloc(args.get(1).and_then(|a| a.parse().ok()).unwrap_or(1024)),
        Some("forks") => forks(args.get(1).and_then(|a| a.parse().ok()).unwrap_or(1000)),
        Some("syscalls") => println!("{}", syscalls()),
        Some("getpid") => {
            // SAFETY: getpid takes no arguments.
            println!("{}", unsafe { libc::getpid() });
        }
        Some("sleep") => loop {
            std::thread::sleep(std::time::Duration::from_secs(3600));
        },
        _ => {
            let sysctls: Vec<&str> = args
                .windows(2)
                .filter(|w| w[0] == "--sysctl")
                .map(|w| w[1].as_str())
                .collect();
            println!("{}", report(&sysctls));
        }
    }
}

fn read(path: &str) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_string())
}

fn status_field(status: &str, name: &str) -> Option<String> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(':')))
        .map(|v| v.trim().to_string())
}

const RLIMITS: [(&str, i32); 16] = [
    ("RLIMIT_CPU", 0),
    ("RLIMIT_FSIZE", 1),
    ("RLIMIT_DATA", 2),
    ("RLIMIT_STACK", 3),
    ("RLIMIT_CORE", 4),
    ("RLIMIT_RSS", 5),
    ("RLIMIT_NPROC", 6),
    ("RLIMIT_NOFILE", 7),
    ("RLIMIT_MEMLOCK", 8),
    ("RLIMIT_AS", 9),
    ("RLIMIT_LOCKS", 10),
    ("RLIMIT_SIGPENDING", 11),
    ("RLIMIT_MSGQUEUE", 12),
    ("RLIMIT_NICE", 13),
    ("RLIMIT_RTPRIO", 14),
    ("RLIMIT_RTTIME", 15),
];

fn report(sysctls: &[&str]) -> Value {
    let status = read("/proc/self/status").unwrap_or_default();
    let field = |n: &str| status_field(&status, n);
    let mut host = [0u8; 256];
    // SAFETY: the buffer is writable for its whole length.
    unsafe { libc::gethostname(host.as_mut_ptr().cast(), host.len()) };
    let hostname = String::from_utf8_lossy(&host[..host.iter().position(|b| *b == 0).unwrap_or(0)])
        .into_owned();
    let mut groups = [0 as libc::gid_t; 256];
    // SAFETY: the buffer holds 256 gids.
    let n = unsafe { libc::getgroups(256, groups.as_mut_ptr()) };
    let groups: Vec<u32> = groups[..usize::try_from(n).unwrap_or(0)].to_vec();
    let mut rlimits = BTreeMap::new();
    for (name, res) in RLIMITS {
        let mut l = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: l is a valid out pointer.
        unsafe { libc::getrlimit(res as _, &mut l) };
        let show = |v: libc::rlim_t| {
            if v == libc::RLIM_INFINITY {
                json!("unlimited")
            } else {
                json!(v)
            }
        };
        rlimits.insert(name, json!([show(l.rlim_cur), show(l.rlim_max)]));
    }
    // SAFETY: prctl with integer arguments.
    let nnp = unsafe { libc::prctl(libc::PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0) };
    let sysctl: BTreeMap<&str, Option<String>> = sysctls
        .iter()
        .map(|k| (*k, read(&format!("/proc/sys/{}", k.replace('.', "/")))))
        .collect();
    // SAFETY: these calls take no arguments and cannot fail.
    let ids = unsafe {
        (
            libc::getpid(),
            libc::getuid(),
            libc::getgid(),
            libc::geteuid(),
            libc::getegid(),
        )
    };
    let namespaces: BTreeMap<&str, Option<std::path::PathBuf>> =
        ["net", "uts", "ipc", "pid", "mnt", "cgroup", "user"]
            .iter()
            .map(|n| (*n, std::fs::read_link(format!("/proc/self/ns/{n}")).ok()))
            .collect();
    json!({
        "pid": ids.0,
        "hostname": hostname,
        "uid": ids.1,
        "gid": ids.2,
        "euid": ids.3,
        "egid": ids.4,
        "groups": groups,
        "umask": field("Umask"),
        "cwd": std::env::current_dir().ok(),
        "caps": {
            "bounding": field("CapBnd"),
            "effective": field("CapEff"),
            "inheritable": field("CapInh"),
            "permitted": field("CapPrm"),
            "ambient": field("CapAmb"),
        },
        "no_new_privs": nnp == 1,
        "seccomp": field("Seccomp"),
        "rlimits": rlimits,
        "oom_score_adj": read("/proc/self/oom_score_adj"),
        "mounts": mounts(),
        "cgroup": cgroup_limits(),
        "sysctl": sysctl,
        "namespaces": namespaces,
        "stdin_tty": std::fs::read_link("/proc/self/fd/0").ok().filter(|p| p.starts_with("/dev/pts")),
        "env": std::env::vars().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>(),
    })
}

/// Mount point, fs type and the per-mount flags that a config controls.
fn mounts() -> Vec<Value> {
    let text = read("/proc/self/mountinfo").unwrap_or_default();
    text.lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let f: Vec<&str> = left.split(' ').collect();
            let target = *f.get(4)?;
            let mut opts: Vec<&str> = f
                .get(5)?
                .split(',')
                .filter(|o| matches!(*o, "ro" | "rw" | "nosuid" | "nodev" | "noexec"))
                .collect();
            opts.sort_unstable();
            let fstype = right.split(' ').next()?;
            Some(json!({"target": target, "fstype": fstype, "options": opts}))
        })
        .collect()
}

fn cgroup_limits() -> Value {
    let v2 = std::path::Path::new("/sys/fs/cgroup/cgroup.controllers").exists();
    if v2 {
        json!({
            "version": 2,
            "memory": read("/sys/fs/cgroup/memory.max"),
            "pids": read("/sys/fs/cgroup/pids.max"),
            "cpu_max": read("/sys/fs/cgroup/cpu.max"),
            "cpu_weight": read("/sys/fs/cgroup/cpu.weight"),
            "cpuset": read("/sys/fs/cgroup/cpuset.cpus"),
        })
    } else {
        json!({
            "version": 1,
            "memory": read("/sys/fs/cgroup/memory/memory.limit_in_bytes"),
            "pids": read("/sys/fs/cgroup/pids/pids.max"),
            "cpu_shares": read("/sys/fs/cgroup/cpu/cpu.shares"),
            "cpu_quota": read("/sys/fs/cgroup/cpu/cpu.cfs_quota_us"),
            "cpu_period": read("/sys/fs/cgroup/cpu/cpu.cfs_period_us"),
            "cpuset": read("/sys/fs/cgroup/cpuset/cpuset.cpus"),
        })
    }
}

/// The errno (0 for success) of calls a default seccomp profile refuses, and of ordinary work.
fn syscalls() -> Value {
    let errno = |rc: libc::c_long| {
        if rc < 0 {
            std::io::Error::last_os_error().raw_os_error().unwrap_or(-1)
        } else {
            0
        }
    };
    // SAFETY: each call takes plain integers or pointers to static NUL-terminated strings; the
    // ones that succeed change nothing outside this process's own namespaces.
    unsafe {
        let keyctl = errno(libc::syscall(
            libc::SYS_keyctl,
            0, /* KEYCTL_GET_KEYRING_ID */
            -3,
            0,
        ));
        let mount = errno(
            libc::mount(
                c"none".as_ptr(),
                c"/tmp".as_ptr(),
                c"tmpfs".as_ptr(),
                0,
                std::ptr::null(),
            )
            .into(),
        );
        let unshare_user = errno(libc::unshare(libc::CLONE_NEWUSER).into());
        let getpid = errno(libc::getpid().into());
        let file = std::fs::write("/tmp/probe-write", b"x")
            .map_or_else(|e| e.raw_os_error().unwrap_or(-1), |()| 0);
        let fork = {
            let pid = libc::fork();
            if pid == 0 {
                libc::_exit(0);
            }
            if pid > 0 {
                libc::waitpid(pid, std::ptr::null_mut(), 0);
            }
            errno(pid.into())
        };
        json!({"keyctl": keyctl, "mount": mount, "unshare_user": unshare_user,
               "getpid": getpid, "write_file": file, "fork": fork})
    }
}

fn alloc(mib: usize) {
    let mut keep: Vec<Vec<u8>> = Vec::new();
    for i in 1..=mib {
        keep.push(vec![1u8; 1 << 20]);
        println!("{i}");
    }
    println!("done");
}

fn forks(max: usize) {
    let mut children = Vec::new();
    for _ in 0..max {
        // SAFETY: the child only pauses and exits; it touches no shared state.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            // SAFETY: pause/_exit are async-signal-safe.
            unsafe {
                libc::pause();
                libc::_exit(0);
            }
        }
        if pid < 0 {
            break;
        }
        children.push(pid);
    }
    println!("{}", children.len());
    for pid in children {
        // SAFETY: signalling and reaping our own children.
        unsafe {
            libc::kill(pid, libc::SIGKILL);
            libc::waitpid(pid, std::ptr::null_mut(), 0);
        }
    }
}
