//! skiff's default seccomp profile, with the policy of Docker's default: deny with EPERM
//! except a list of ordinary syscalls; namespace, mount, keyring, module, clock, reboot and
//! tracing calls only for containers holding the capability that makes them legitimate.
//! Written here as data of our own; the daemon applies it to containers without a profile.

use super::{Arch, ArgCond, Profile, Rule};
use crate::caps::CapSet;

/// Allowed for every container.
const ALLOWED: &[&str] = &[
    "accept",
    "accept4",
    "access",
    "adjtimex",
    "alarm",
    "bind",
    "brk",
    "cachestat",
    "capget",
    "capset",
    "chdir",
    "chmod",
    "chown",
    "chown32",
    "clock_adjtime",
    "clock_adjtime64",
    "clock_getres",
    "clock_getres_time64",
    "clock_gettime",
    "clock_gettime64",
    "clock_nanosleep",
    "clock_nanosleep_time64",
    "close",
    "close_range",
    "connect",
    "copy_file_range",
    "creat",
    "dup",
    "dup2",
    "dup3",
    "epoll_create",
    "epoll_create1",
    "epoll_ctl",
    "epoll_ctl_old",
    "epoll_pwait",
    "epoll_pwait2",
    "epoll_wait",
    "epoll_wait_old",
    "eventfd",
    "eventfd2",
    "execve",
    "execveat",
    "exit",
    "exit_group",
    "faccessat",
    "faccessat2",
    "fadvise64",
    "fadvise64_64",
    "fallocate",
    "fanotify_mark",
    "fchdir",
    "fchmod",
    "fchmodat",
    "fchmodat2",
    "fchown",
    "fchown32",
    "fchownat",
    "fcntl",
    "fcntl64",
    "fdatasync",
    "fgetxattr",
    "flistxattr",
    "flock",
    "fork",
    "fremovexattr",
    "fsetxattr",
    "fstat",
    "fstat64",
    "fstatat64",
    "fstatfs",
    "fstatfs64",
    "fsync",
    "ftruncate",
    "ftruncate64",
    "futex",
    "futex_requeue",
    "futex_time64",
    "futex_wait",
    "futex_waitv",
    "futex_wake",
    "futimesat",
    "getcpu",
    "getcwd",
    "getdents",
    "getdents64",
    "getegid",
    "getegid32",
    "geteuid",
    "geteuid32",
    "getgid",
    "getgid32",
    "getgroups",
    "getgroups32",
    "getitimer",
    "getpeername",
    "getpgid",
    "getpgrp",
    "getpid",
    "getppid",
    "getpriority",
    "getrandom",
    "getresgid",
    "getresgid32",
    "getresuid",
    "getresuid32",
    "getrlimit",
    "get_robust_list",
    "getrusage",
    "getsid",
    "getsockname",
    "getsockopt",
    "get_thread_area",
    "gettid",
    "gettimeofday",
    "getuid",
    "getuid32",
    "getxattr",
    "inotify_add_watch",
    "inotify_init",
    "inotify_init1",
    "inotify_rm_watch",
    "io_cancel",
    "ioctl",
    "io_destroy",
    "io_getevents",
    "io_pgetevents",
    "io_pgetevents_time64",
    "ioprio_get",
    "ioprio_set",
    "io_setup",
    "io_submit",
    "ipc",
    "kill",
    "landlock_add_rule",
    "landlock_create_ruleset",
    "landlock_restrict_self",
    "lchown",
    "lchown32",
    "lgetxattr",
    "link",
    "linkat",
    "listen",
    "listxattr",
    "llistxattr",
    "_llseek",
    "lremovexattr",
    "lseek",
    "lsetxattr",
    "lstat",
    "lstat64",
    "madvise",
    "map_shadow_stack",
    "membarrier",
    "memfd_create",
    "memfd_secret",
    "mincore",
    "mkdir",
    "mkdirat",
    "mknod",
    "mknodat",
    "mlock",
    "mlock2",
    "mlockall",
    "mmap",
    "mmap2",
    "mprotect",
    "mq_getsetattr",
    "mq_notify",
    "mq_open",
    "mq_timedreceive",
    "mq_timedreceive_time64",
    "mq_timedsend",
    "mq_timedsend_time64",
    "mq_unlink",
    "mremap",
    "msgctl",
    "msgget",
    "msgrcv",
    "msgsnd",
    "msync",
    "munlock",
    "munlockall",
    "munmap",
    "name_to_handle_at",
    "nanosleep",
    "newfstatat",
    "_newselect",
    "open",
    "openat",
    "openat2",
    "pause",
    "pidfd_open",
    "pidfd_send_signal",
    "pipe",
    "pipe2",
    "pkey_alloc",
    "pkey_free",
    "pkey_mprotect",
    "poll",
    "ppoll",
    "ppoll_time64",
    "prctl",
    "pread64",
    "preadv",
    "preadv2",
    "prlimit64",
    "process_mrelease",
    "pselect6",
    "pselect6_time64",
    "pwrite64",
    "pwritev",
    "pwritev2",
    "read",
    "readahead",
    "readlink",
    "readlinkat",
    "readv",
    "recv",
    "recvfrom",
    "recvmmsg",
    "recvmmsg_time64",
    "recvmsg",
    "remap_file_pages",
    "removexattr",
    "rename",
    "renameat",
    "renameat2",
    "restart_syscall",
    "rmdir",
    "rseq",
    "rt_sigaction",
    "rt_sigpending",
    "rt_sigprocmask",
    "rt_sigqueueinfo",
    "rt_sigreturn",
    "rt_sigsuspend",
    "rt_sigtimedwait",
    "rt_sigtimedwait_time64",
    "rt_tgsigqueueinfo",
    "sched_getaffinity",
    "sched_getattr",
    "sched_getparam",
    "sched_get_priority_max",
    "sched_get_priority_min",
    "sched_getscheduler",
    "sched_rr_get_interval",
    "sched_rr_get_interval_time64",
    "sched_setaffinity",
    "sched_setattr",
    "sched_setparam",
    "sched_setscheduler",
    "sched_yield",
    "seccomp",
    "select",
    "semctl",
    "semget",
    "semop",
    "semtimedop",
    "semtimedop_time64",
    "send",
    "sendfile",
    "sendfile64",
    "sendmmsg",
    "sendmsg",
    "sendto",
    "setfsgid",
    "setfsgid32",
    "setfsuid",
    "setfsuid32",
    "setgid",
    "setgid32",
    "setgroups",
    "setgroups32",
    "setitimer",
    "setpgid",
    "setpriority",
    "setregid",
    "setregid32",
    "setresgid",
    "setresgid32",
    "setresuid",
    "setresuid32",
    "setreuid",
    "setreuid32",
    "setrlimit",
    "set_robust_list",
    "setsid",
    "setsockopt",
    "set_thread_area",
    "set_tid_address",
    "setuid",
    "setuid32",
    "setxattr",
    "shmat",
    "shmctl",
    "shmdt",
    "shmget",
    "shutdown",
    "sigaltstack",
    "signalfd",
    "signalfd4",
    "sigprocmask",
    "sigreturn",
    "socketcall",
    "socketpair",
    "splice",
    "stat",
    "stat64",
    "statfs",
    "statfs64",
    "statx",
    "symlink",
    "symlinkat",
    "sync",
    "sync_file_range",
    "syncfs",
    "sysinfo",
    "tee",
    "tgkill",
    "time",
    "timer_create",
    "timer_delete",
    "timer_getoverrun",
    "timer_gettime",
    "timer_gettime64",
    "timer_settime",
    "timer_settime64",
    "timerfd_create",
    "timerfd_gettime",
    "timerfd_gettime64",
    "timerfd_settime",
    "timerfd_settime64",
    "times",
    "tkill",
    "truncate",
    "truncate64",
    "ugetrlimit",
    "umask",
    "uname",
    "unlink",
    "unlinkat",
    "utime",
    "utimensat",
    "utimensat_time64",
    "utimes",
    "vfork",
    "vmsplice",
    "wait4",
    "waitid",
    "waitpid",
    "write",
    "writev",
];

/// Allowed only with the capability named first.
const BY_CAP: &[(&str, &[&str])] = &[
    (
        "CAP_SYS_ADMIN",
        &[
            "bpf",
            "clone",
            "clone3",
            "fanotify_init",
            "fsconfig",
            "fsmount",
            "fsopen",
            "fspick",
            "lookup_dcookie",
            "mount",
            "mount_setattr",
            "move_mount",
            "open_tree",
            "perf_event_open",
            "quotactl",
            "quotactl_fd",
            "setdomainname",
            "sethostname",
            "setns",
            "syslog",
            "umount",
            "umount2",
            "unshare",
        ],
    ),
    ("CAP_SYS_BOOT", &["reboot"]),
    ("CAP_SYS_CHROOT", &["chroot"]),
    (
        "CAP_SYS_MODULE",
        &["delete_module", "init_module", "finit_module"],
    ),
    ("CAP_SYS_PACCT", &["acct"]),
    (
        "CAP_SYS_PTRACE",
        &[
            "kcmp",
            "pidfd_getfd",
            "process_madvise",
            "process_vm_readv",
            "process_vm_writev",
            "ptrace",
        ],
    ),
    ("CAP_SYS_RAWIO", &["iopl", "ioperm"]),
    (
        "CAP_SYS_TIME",
        &["settimeofday", "stime", "clock_settime", "clock_settime64"],
    ),
    ("CAP_SYS_TTY_CONFIG", &["vhangup"]),
    (
        "CAP_SYS_NICE",
        &[
            "get_mempolicy",
            "mbind",
            "set_mempolicy",
            "set_mempolicy_home_node",
        ],
    ),
    ("CAP_SYSLOG", &["syslog"]),
    ("CAP_BPF", &["bpf"]),
    ("CAP_PERFMON", &["perf_event_open"]),
];

/// Allowed on one architecture only.
const BY_ARCH: &[(Arch, &[&str])] = &[
    (Arch::X86_64, &["arch_prctl", "modify_ldt"]),
    (
        Arch::Arm,
        &[
            "arm_fadvise64_64",
            "arm_sync_file_range",
            "sync_file_range2",
            "breakpoint",
            "cacheflush",
            "set_tls",
        ],
    ),
    (Arch::Aarch64, &["sync_file_range2"]),
];

/// The `personality` values ordinary programs use (linux, linux32, UNAME26, query).
const PERSONALITIES: [u64; 5] = [0x0, 0x8, 0x20000, 0x20008, 0xffff_ffff];

/// Every CLONE_NEW* flag: clone without them is an ordinary fork or thread.
const CLONE_NAMESPACE_FLAGS: u64 = 0x7E02_0000;

/// The default profile for a container holding `caps`, on a host of architecture `arch`.
pub fn profile(caps: CapSet, arch: Arch) -> Profile {
    let allow = |names: Vec<&str>| Rule {
        names: names.into_iter().map(str::to_string).collect(),
        action: "SCMP_ACT_ALLOW".into(),
        ..Rule::default()
    };
    let has = |cap: &str| CapSet::from_names(&[cap]).is_ok_and(|c| caps.0 & c.0 != 0);
    let mut rules = vec![allow(ALLOWED.to_vec())];
    for (cap, names) in BY_CAP {
        if has(cap) {
            rules.push(allow(names.to_vec()));
        }
    }
    for (a, names) in BY_ARCH {
        if *a == arch || (arch == Arch::Aarch64 && *a == Arch::Arm) {
            rules.push(allow(names.to_vec()));
        }
    }
    for value in PERSONALITIES {
        rules.push(Rule {
            args: vec![ArgCond {
                index: 0,
                value,
                value_two: 0,
                op: "SCMP_CMP_EQ".into(),
            }],
            ..allow(vec!["personality"])
        });
    }
    // socket: everything but AF_VSOCK (40).
    rules.push(Rule {
        args: vec![ArgCond {
            index: 0,
            value: 40,
            value_two: 0,
            op: "SCMP_CMP_NE".into(),
        }],
        ..allow(vec!["socket"])
    });
    if !has("CAP_SYS_ADMIN") {
        rules.push(Rule {
            args: vec![ArgCond {
                index: 0,
                value: CLONE_NAMESPACE_FLAGS,
                value_two: 0,
                op: "SCMP_CMP_MASKED_EQ".into(),
            }],
            ..allow(vec!["clone"])
        });
        // ENOSYS makes libc fall back to clone, whose flags the rule above can check.
        rules.push(Rule {
            names: vec!["clone3".into()],
            action: "SCMP_ACT_ERRNO".into(),
            errno_ret: Some(libc::ENOSYS as u32),
            args: Vec::new(),
        });
    }
    let architectures = match arch {
        Arch::X86_64 => vec!["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
        Arch::Aarch64 => vec!["SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"],
        Arch::Arm => vec!["SCMP_ARCH_ARM"],
    };
    Profile {
        default_action: "SCMP_ACT_ERRNO".into(),
        default_errno_ret: Some(libc::EPERM as u32),
        architectures: architectures.into_iter().map(str::to_string).collect(),
        flags: Vec::new(),
        listener_path: None,
        syscalls: rules,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::seccomp::{bpf, compile};

    fn verdict(caps: CapSet, arch: Arch, name: &str, arg0: u64) -> u32 {
        let f = compile(&profile(caps, arch), arch).unwrap();
        let data = bpf::SeccompData {
            nr: arch.syscall(name).unwrap(),
            arch: arch.audit(),
            args: [arg0, 0, 0, 0, 0, 0],
        };
        bpf::run(&f.program, &data).unwrap()
    }

    #[test]
    fn docker_policy_on_every_architecture() {
        let plain = CapSet::from_names(&["CAP_CHOWN", "CAP_KILL"]).unwrap();
        let admin = CapSet::from_names(&["CAP_SYS_ADMIN"]).unwrap();
        const ALLOW: u32 = 0x7fff_0000;
        const EPERM: u32 = 0x0005_0001;
        for arch in [Arch::X86_64, Arch::Aarch64, Arch::Arm] {
            for name in [
                "keyctl",
                "add_key",
                "request_key",
                "mount",
                "unshare",
                "reboot",
            ] {
                assert_eq!(verdict(plain, arch, name, 0), EPERM, "{name} on {arch:?}");
            }
            for name in ["read", "openat", "getpid", "execve", "wait4"] {
                assert_eq!(verdict(plain, arch, name, 0), ALLOW, "{name} on {arch:?}");
            }
            assert_eq!(verdict(admin, arch, "mount", 0), ALLOW);
            assert_eq!(verdict(admin, arch, "unshare", 0), ALLOW);
            assert_eq!(verdict(plain, arch, "clone", libc::SIGCHLD as u64), ALLOW);
            assert_eq!(
                verdict(plain, arch, "clone", libc::CLONE_NEWUSER as u64),
                EPERM
            );
            assert_eq!(
                verdict(plain, arch, "clone3", 0),
                0x0005_0000 | libc::ENOSYS as u32
            );
            assert_eq!(verdict(plain, arch, "socket", 40), EPERM);
            assert_eq!(verdict(plain, arch, "socket", 2), ALLOW);
        }
        assert_eq!(verdict(plain, Arch::Arm, "set_tls", 0), ALLOW);
        assert_eq!(verdict(plain, Arch::X86_64, "arch_prctl", 0), ALLOW);
    }
}
