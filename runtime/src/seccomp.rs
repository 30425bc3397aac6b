//! `linux.seccomp` compiled to a classic BPF program in Rust (no libseccomp: the binary stays
//! static). One section per architecture the profile names and skiff has a syscall table for
//! (x86_64, aarch64, arm); a syscall from any other architecture or ABI is killed.
//!
//! Layout of the program:
//! ```text
//!   ld arch; jeq ARCH_1 → section 1; jeq ARCH_2 → section 2; …; ret KILL_PROCESS
//! section:  [x86_64: ld nr; jge 0x40000000 (x32 ABI) → ret KILL_PROCESS]
//!           per rule: ld nr; jeq NR ? conditions… : next rule;  ret ACTION
//!           ret DEFAULT
//! ```
//! [`bpf::run`] interprets a program, so tests check the filter for every architecture on any
//! host (qemu-user cannot load filters).

pub mod bpf;
pub mod default;
mod syscalls;

use serde::{Deserialize, Serialize};

use bpf::{Insn, Program};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Arch {
    X86_64,
    Aarch64,
    Arm,
}

impl Arch {
    /// The kernel's `AUDIT_ARCH_*` value, as it appears in `seccomp_data.arch`.
    pub fn audit(self) -> u32 {
        match self {
            Arch::X86_64 => 0xC000_003E,
            Arch::Aarch64 => 0xC000_00B7,
            Arch::Arm => 0x4000_0028,
        }
    }

    fn from_scmp(name: &str) -> Option<Arch> {
        match name {
            "SCMP_ARCH_X86_64" => Some(Arch::X86_64),
            "SCMP_ARCH_AARCH64" => Some(Arch::Aarch64),
            "SCMP_ARCH_ARM" => Some(Arch::Arm),
            _ => None,
        }
    }

    /// The architecture this binary runs on.
    pub fn native() -> Arch {
        if cfg!(target_arch = "aarch64") {
            Arch::Aarch64
        } else if cfg!(target_arch = "arm") {
            Arch::Arm
        } else {
            Arch::X86_64
        }
    }

    pub fn syscall(self, name: &str) -> Option<u32> {
        let table = match self {
            Arch::X86_64 => syscalls::X86_64,
            Arch::Aarch64 => syscalls::AARCH64,
            Arch::Arm => syscalls::ARM,
        };
        table
            .binary_search_by(|(n, _)| (*n).cmp(name))
            .ok()
            .map(|i| table[i].1)
    }
}

/// The OCI `linux.seccomp` object.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Profile {
    pub default_action: String,
    pub default_errno_ret: Option<u32>,
    #[serde(default)]
    pub architectures: Vec<String>,
    #[serde(default)]
    pub flags: Vec<String>,
    pub listener_path: Option<String>,
    #[serde(default)]
    pub syscalls: Vec<Rule>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Rule {
    #[serde(default)]
    pub names: Vec<String>,
    pub action: String,
    pub errno_ret: Option<u32>,
    #[serde(default)]
    pub args: Vec<ArgCond>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ArgCond {
    pub index: u32,
    pub value: u64,
    #[serde(default)]
    pub value_two: u64,
    pub op: String,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum SeccompError {
    #[error("unknown seccomp action {0:?}")]
    Action(String),
    #[error("seccomp action SCMP_ACT_NOTIFY (a listener) is not supported")]
    Notify,
    #[error("unknown seccomp comparison {0:?}")]
    Op(String),
    #[error("seccomp argument index {0} is out of range (0-5)")]
    ArgIndex(u32),
    #[error("unknown seccomp flag {0:?}")]
    Flag(String),
    #[error("the seccomp profile has no architecture skiff knows (listed: {0:?})")]
    NoArch(Vec<String>),
    #[error("the seccomp program has {0} instructions; the kernel takes at most 4096")]
    TooLong(usize),
    #[error("a seccomp jump of {0} instructions does not fit")]
    Jump(usize),
}

/// A compiled filter and the `seccomp(2)` flags to load it with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Filter {
    pub program: Program,
    pub flags: u32,
}

const RET_KILL_PROCESS: u32 = 0x8000_0000;
const RET_KILL_THREAD: u32 = 0x0000_0000;
const RET_TRAP: u32 = 0x0003_0000;
const RET_ERRNO: u32 = 0x0005_0000;
const RET_TRACE: u32 = 0x7ff0_0000;
const RET_LOG: u32 = 0x7ffc_0000;
const RET_ALLOW: u32 = 0x7fff_0000;

fn action(name: &str, errno: Option<u32>, default_errno: u32) -> Result<u32, SeccompError> {
    let data = |e: Option<u32>| e.unwrap_or(default_errno) & 0xffff;
    Ok(match name {
        "SCMP_ACT_KILL" | "SCMP_ACT_KILL_THREAD" => RET_KILL_THREAD,
        "SCMP_ACT_KILL_PROCESS" => RET_KILL_PROCESS,
        "SCMP_ACT_TRAP" => RET_TRAP,
        "SCMP_ACT_ERRNO" => RET_ERRNO | data(errno),
        "SCMP_ACT_TRACE" => RET_TRACE | data(errno),
        "SCMP_ACT_LOG" => RET_LOG,
        "SCMP_ACT_ALLOW" => RET_ALLOW,
        "SCMP_ACT_NOTIFY" => return Err(SeccompError::Notify),
        other => return Err(SeccompError::Action(other.to_string())),
    })
}

fn flag(name: &str) -> Result<u32, SeccompError> {
    Ok(match name {
        "SECCOMP_FILTER_FLAG_TSYNC" => 1,
        "SECCOMP_FILTER_FLAG_LOG" => 2,
        "SECCOMP_FILTER_FLAG_SPEC_ALLOW" => 4,
        other => return Err(SeccompError::Flag(other.to_string())),
    })
}

/// Compiles `profile` for the architectures it lists that `host` can run: the native one, and
/// 32-bit arm on aarch64. An empty list means the host's own.
pub fn compile(profile: &Profile, host: Arch) -> Result<Filter, SeccompError> {
    let runnable = |a: Arch| a == host || (host == Arch::Aarch64 && a == Arch::Arm);
    let mut arches: Vec<Arch> = profile
        .architectures
        .iter()
        .filter_map(|a| Arch::from_scmp(a))
        .filter(|a| runnable(*a))
        .collect();
    arches.dedup();
    if profile.architectures.is_empty() {
        arches.push(host);
    }
    if arches.is_empty() {
        return Err(SeccompError::NoArch(profile.architectures.clone()));
    }
    let default_errno = profile.default_errno_ret.unwrap_or(libc::EPERM as u32);
    let default = action(&profile.default_action, None, default_errno)?;
    let mut flags = 0;
    for f in &profile.flags {
        flags |= flag(f)?;
    }
    let mut sections = Vec::new();
    for arch in &arches {
        sections.push(section(profile, *arch, default, default_errno)?);
    }

    // Dispatch on the architecture; a long `ja` reaches each section.
    let mut prog = vec![Insn::ld_arch()];
    let dispatch_len = arches.len() * 2 + 1;
    let mut offset = 0usize;
    for (i, arch) in arches.iter().enumerate() {
        // after this pair: (remaining pairs) + kill + earlier sections
        let remaining = dispatch_len - (i * 2 + 2);
        prog.push(Insn::jeq(arch.audit(), 0, 1));
        prog.push(Insn::ja(
            u32::try_from(remaining + offset)
                .map_err(|_| SeccompError::Jump(remaining + offset))?,
        ));
        offset += sections[i].len();
    }
    prog.push(Insn::ret(RET_KILL_PROCESS));
    for s in sections {
        prog.extend(s);
    }
    if prog.len() > 4096 {
        return Err(SeccompError::TooLong(prog.len()));
    }
    Ok(Filter {
        program: Program(prog),
        flags,
    })
}

fn section(
    profile: &Profile,
    arch: Arch,
    default: u32,
    default_errno: u32,
) -> Result<Vec<Insn>, SeccompError> {
    let mut out = Vec::new();
    if arch == Arch::X86_64 {
        // x32 syscalls arrive with AUDIT_ARCH_X86_64 and bit 30 set: not ours to allow.
        out.push(Insn::ld_nr());
        out.push(Insn::jge(0x4000_0000, 0, 1));
        out.push(Insn::ret(RET_KILL_PROCESS));
    }
    // The accumulator holds the syscall number until an argument check loads something else.
    let mut a_is_nr = false;
    for rule in &profile.syscalls {
        let act = action(&rule.action, rule.errno_ret, default_errno)?;
        if act == default && rule.args.is_empty() {
            continue; // says what the default says
        }
        for name in &rule.names {
            let Some(nr) = arch.syscall(name) else {
                continue; // not a syscall on this architecture
            };
            if rule.args.is_empty() {
                if !a_is_nr {
                    out.push(Insn::ld_nr());
                    a_is_nr = true;
                }
                out.push(Insn::jeq(nr, 0, 1));
                out.push(Insn::ret(act));
            } else {
                out.extend(rule_block(nr, &rule.args, act)?);
                a_is_nr = false;
            }
        }
    }
    out.push(Insn::ret(default));
    Ok(out)
}

/// `ld nr; jeq nr, 0, SKIP; <each condition, jumping to SKIP's target on failure>; ret act`.
fn rule_block(nr: u32, args: &[ArgCond], act: u32) -> Result<Vec<Insn>, SeccompError> {
    let mut conds: Vec<Vec<Insn>> = Vec::new();
    for c in args {
        conds.push(condition(c)?);
    }
    // Each condition's instructions jump "out" with a placeholder offset of u8::MAX, fixed
    // below to land just after the block's `ret`.
    let body: Vec<Insn> = conds.into_iter().flatten().collect();
    let total = body.len() + 1; // + ret
    let mut block = vec![Insn::ld_nr()];
    let skip = u8::try_from(total).map_err(|_| SeccompError::Jump(total))?;
    block.push(Insn::jeq(nr, 0, skip));
    for (i, mut insn) in body.into_iter().enumerate() {
        let to_end = total - i - 1; // instructions after this one up to and including ret
        insn.resolve_out(u8::try_from(to_end).map_err(|_| SeccompError::Jump(to_end))?);
        block.push(insn);
    }
    block.push(Insn::ret(act));
    Ok(block)
}

const OUT: u8 = u8::MAX;

/// One argument comparison on its 64-bit value (high word first). Falls through on a match;
/// jumps OUT (resolved later) otherwise.
fn condition(c: &ArgCond) -> Result<Vec<Insn>, SeccompError> {
    if c.index > 5 {
        return Err(SeccompError::ArgIndex(c.index));
    }
    let (hi, lo) = ((c.value >> 32) as u32, (c.value & 0xffff_ffff) as u32);
    let (hi2, lo2) = (
        (c.value_two >> 32) as u32,
        (c.value_two & 0xffff_ffff) as u32,
    );
    let ld_hi = Insn::ld_arg(c.index, true);
    let ld_lo = Insn::ld_arg(c.index, false);
    Ok(match c.op.as_str() {
        // hi == H && lo == L
        "SCMP_CMP_EQ" => vec![ld_hi, Insn::jeq(hi, 0, OUT), ld_lo, Insn::jeq(lo, 0, OUT)],
        // !(hi == H && lo == L): if hi != H match (skip the low test)
        "SCMP_CMP_NE" => vec![ld_hi, Insn::jeq(hi, 0, 2), ld_lo, Insn::jeq(lo, OUT, 0)],
        // (arg & V) == V2
        "SCMP_CMP_MASKED_EQ" => vec![
            ld_hi,
            Insn::and(hi),
            Insn::jeq(hi2, 0, OUT),
            ld_lo,
            Insn::and(lo),
            Insn::jeq(lo2, 0, OUT),
        ],
        // arg > V: hi > H, or hi == H and lo > L
        "SCMP_CMP_GT" => vec![
            ld_hi,
            Insn::jgt(hi, 3, 0),
            Insn::jeq(hi, 0, OUT),
            ld_lo,
            Insn::jgt(lo, 0, OUT),
        ],
        "SCMP_CMP_GE" => vec![
            ld_hi,
            Insn::jgt(hi, 3, 0),
            Insn::jeq(hi, 0, OUT),
            ld_lo,
            Insn::jge(lo, 0, OUT),
        ],
        // arg < V  ==  !(arg >= V)
        "SCMP_CMP_LT" => vec![
            ld_hi,
            Insn::jgt(hi, OUT, 0),
            Insn::jeq(hi, 0, 2),
            ld_lo,
            Insn::jge(lo, OUT, 0),
        ],
        "SCMP_CMP_LE" => vec![
            ld_hi,
            Insn::jgt(hi, OUT, 0),
            Insn::jeq(hi, 0, 2),
            ld_lo,
            Insn::jgt(lo, OUT, 0),
        ],
        other => return Err(SeccompError::Op(other.to_string())),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use bpf::SeccompData;

    fn profile(json: &str) -> Profile {
        serde_json::from_str(json).unwrap()
    }

    const P: &str = r#"{
        "defaultAction": "SCMP_ACT_ERRNO",
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"],
        "syscalls": [
            {"names": ["read", "write", "exit_group", "getpid"], "action": "SCMP_ACT_ALLOW"},
            {"names": ["getppid"], "action": "SCMP_ACT_KILL_PROCESS"},
            {"names": ["kill"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13},
            {"names": ["personality"], "action": "SCMP_ACT_ALLOW", "args": [{"index": 0, "value": 8, "op": "SCMP_CMP_EQ"}]},
            {"names": ["clone"], "action": "SCMP_ACT_ALLOW", "args": [{"index": 0, "value": 2114060288, "valueTwo": 0, "op": "SCMP_CMP_MASKED_EQ"}]},
            {"names": ["socket"], "action": "SCMP_ACT_ALLOW", "args": [{"index": 0, "value": 40, "op": "SCMP_CMP_NE"}]},
            {"names": ["setrlimit"], "action": "SCMP_ACT_ALLOW", "args": [{"index": 1, "value": 4294967296, "op": "SCMP_CMP_LT"}]},
            {"names": ["setpriority"], "action": "SCMP_ACT_ALLOW", "args": [{"index": 2, "value": 10, "op": "SCMP_CMP_GE"}]}
        ]}"#;

    fn verdict(f: &Filter, arch: Arch, name: &str, args: [u64; 6]) -> u32 {
        let nr = arch
            .syscall(name)
            .unwrap_or_else(|| panic!("{name} on {arch:?}"));
        bpf::run(
            &f.program,
            &SeccompData {
                nr,
                arch: arch.audit(),
                args,
            },
        )
        .unwrap()
    }

    /// Golden behaviour for each architecture, by interpreting the emitted program.
    #[test]
    fn every_architecture_filters_the_same() {
        for host in [Arch::X86_64, Arch::Aarch64, Arch::Arm] {
            let f = compile(&profile(P), host).unwrap();
            let mut arches = vec![host];
            if host == Arch::Aarch64 {
                arches.push(Arch::Arm);
            }
            for a in arches {
                let v = |n: &str, args: [u64; 6]| verdict(&f, a, n, args);
                let z = [0; 6];
                assert_eq!(v("getpid", z), RET_ALLOW, "{a:?}");
                assert_eq!(v("mount", z), RET_ERRNO | 1, "{a:?} default EPERM");
                assert_eq!(v("getppid", z), RET_KILL_PROCESS);
                assert_eq!(v("kill", z), RET_ERRNO | 13);
                assert_eq!(v("personality", [8, 0, 0, 0, 0, 0]), RET_ALLOW);
                assert_eq!(v("personality", [9, 0, 0, 0, 0, 0]), RET_ERRNO | 1);
                assert_eq!(
                    v("personality", [8 | 1 << 32, 0, 0, 0, 0, 0]),
                    RET_ERRNO | 1
                );
                // clone without namespace flags is allowed, with CLONE_NEWUSER it is not
                assert_eq!(v("clone", [libc::SIGCHLD as u64, 0, 0, 0, 0, 0]), RET_ALLOW);
                assert_eq!(
                    v("clone", [libc::CLONE_NEWUSER as u64, 0, 0, 0, 0, 0]),
                    RET_ERRNO | 1
                );
                assert_eq!(v("socket", [2, 0, 0, 0, 0, 0]), RET_ALLOW);
                assert_eq!(v("socket", [40, 0, 0, 0, 0, 0]), RET_ERRNO | 1);
                assert_eq!(v("socket", [40 | 1 << 32, 0, 0, 0, 0, 0]), RET_ALLOW);
                assert_eq!(v("setrlimit", [0, 5, 0, 0, 0, 0]), RET_ALLOW);
                assert_eq!(v("setrlimit", [0, 1 << 32, 0, 0, 0, 0]), RET_ERRNO | 1);
                assert_eq!(v("setpriority", [0, 0, 10, 0, 0, 0]), RET_ALLOW);
                assert_eq!(v("setpriority", [0, 0, 9, 0, 0, 0]), RET_ERRNO | 1);
                assert_eq!(v("setpriority", [0, 0, 1 << 40, 0, 0, 0]), RET_ALLOW);
            }
            // Another architecture's syscalls are killed.
            let foreign = bpf::run(
                &f.program,
                &SeccompData {
                    nr: 0,
                    arch: 0x4000_0003,
                    args: [0; 6],
                },
            );
            assert_eq!(foreign.unwrap(), RET_KILL_PROCESS);
        }
    }

    #[test]
    fn x32_syscalls_are_killed_on_x86_64() {
        let f = compile(&profile(P), Arch::X86_64).unwrap();
        let data = SeccompData {
            nr: 0x4000_0000 | 39,
            arch: Arch::X86_64.audit(),
            args: [0; 6],
        };
        assert_eq!(bpf::run(&f.program, &data).unwrap(), RET_KILL_PROCESS);
    }

    #[test]
    fn bad_profiles_are_refused() {
        let bad = |json: &str| compile(&profile(json), Arch::X86_64).unwrap_err();
        assert_eq!(
            bad(r#"{"defaultAction":"SCMP_ACT_FOO"}"#),
            SeccompError::Action("SCMP_ACT_FOO".into())
        );
        assert_eq!(
            bad(
                r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["read"],"action":"SCMP_ACT_ERRNO","args":[{"index":7,"value":1,"op":"SCMP_CMP_EQ"}]}]}"#
            ),
            SeccompError::ArgIndex(7)
        );
        assert_eq!(
            bad(r#"{"defaultAction":"SCMP_ACT_ALLOW","architectures":["SCMP_ARCH_S390X"]}"#),
            SeccompError::NoArch(vec!["SCMP_ARCH_S390X".into()])
        );
        assert_eq!(
            bad(r#"{"defaultAction":"SCMP_ACT_NOTIFY"}"#),
            SeccompError::Notify
        );
    }

    #[test]
    fn syscall_tables_know_the_usual_names() {
        assert_eq!(Arch::X86_64.syscall("getpid"), Some(39));
        assert_eq!(Arch::Aarch64.syscall("getpid"), Some(172));
        assert_eq!(Arch::Arm.syscall("getpid"), Some(20));
        assert_eq!(
            Arch::Aarch64.syscall("open"),
            None,
            "aarch64 has only openat"
        );
        assert_eq!(Arch::Arm.syscall("set_tls"), Some(0xf0005));
    }
}
