//! cgroup v2 device rules: `linux.resources.devices` compiled to an eBPF program of type
//! `BPF_PROG_TYPE_CGROUP_DEVICE` and attached to the container's v2 group, the way v2 controls
//! device access (v1 has the `devices.allow`/`devices.deny` files instead).
//!
//! The program reads `struct bpf_cgroup_dev_ctx { u32 access_type; u32 major; u32 minor; }`
//! (type in the low 16 bits of `access_type`, access bits above) and checks the rules from the
//! last to the first: the first that matches decides, as later rules override earlier ones in
//! the OCI list. No match denies.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

use crate::spec::DeviceRule;

/// One eBPF instruction (`struct bpf_insn`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(C)]
pub struct Insn {
    pub code: u8,
    /// dst in the low nibble, src in the high one.
    pub regs: u8,
    pub off: i16,
    pub imm: i32,
}

const LDX_W: u8 = 0x61; // BPF_LDX | BPF_MEM | BPF_W
const AND32_K: u8 = 0x54; // BPF_ALU | BPF_AND | BPF_K
const RSH32_K: u8 = 0x74; // BPF_ALU | BPF_RSH | BPF_K
const MOV32_X: u8 = 0xbc; // BPF_ALU | BPF_MOV | BPF_X
const MOV64_K: u8 = 0xb7; // BPF_ALU64 | BPF_MOV | BPF_K
const JNE_K: u8 = 0x55; // BPF_JMP | BPF_JNE | BPF_K
const JNE_X: u8 = 0x5d; // BPF_JMP | BPF_JNE | BPF_X
const EXIT: u8 = 0x95;

fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
    Insn {
        code,
        regs: dst | (src << 4),
        off,
        imm,
    }
}

const TYPE_BLOCK: i32 = 1;
const TYPE_CHAR: i32 = 2;
const ACC_MKNOD: i32 = 1;
const ACC_READ: i32 = 2;
const ACC_WRITE: i32 = 4;

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum DeviceRuleError {
    #[error("device rule type {0:?}: use a, b or c")]
    Type(String),
    #[error("device rule access {0:?}: use letters of rwm")]
    Access(String),
    #[error("device rule number {0} is out of range")]
    Number(i64),
}

/// Compiles `rules`; `None` when there are none (every device allowed, nothing to attach).
pub fn compile(rules: &[DeviceRule]) -> Result<Option<Vec<Insn>>, DeviceRuleError> {
    if rules.is_empty() {
        return Ok(None);
    }
    // r2 = type, r3 = access, r4 = major, r5 = minor
    let mut prog = vec![
        insn(LDX_W, 2, 1, 0, 0),
        insn(AND32_K, 2, 0, 0, 0xffff),
        insn(LDX_W, 3, 1, 0, 0),
        insn(RSH32_K, 3, 0, 0, 16),
        insn(LDX_W, 4, 1, 4, 0),
        insn(LDX_W, 5, 1, 8, 0),
    ];
    for rule in rules.iter().rev() {
        let mut block = Vec::new();
        match rule.kind.as_deref().unwrap_or("a") {
            "a" => {}
            "b" => block.push(insn(JNE_K, 2, 0, i16::MAX, TYPE_BLOCK)),
            "c" => block.push(insn(JNE_K, 2, 0, i16::MAX, TYPE_CHAR)),
            other => return Err(DeviceRuleError::Type(other.to_string())),
        }
        let access = rule.access.as_deref().unwrap_or("rwm");
        let mut bits = 0;
        for c in access.chars() {
            bits |= match c {
                'r' => ACC_READ,
                'w' => ACC_WRITE,
                'm' => ACC_MKNOD,
                _ => return Err(DeviceRuleError::Access(access.to_string())),
            };
        }
        if bits != ACC_READ | ACC_WRITE | ACC_MKNOD {
            // The access asked for must be within the rule's: (access & bits) == access.
            block.push(insn(MOV32_X, 1, 3, 0, 0));
            block.push(insn(AND32_K, 1, 0, 0, bits));
            block.push(insn(JNE_X, 1, 3, i16::MAX, 0));
        }
        for (reg, n) in [(4u8, rule.major), (5u8, rule.minor)] {
            if let Some(n) = n.filter(|n| *n >= 0) {
                let n = i32::try_from(n).map_err(|_| DeviceRuleError::Number(n))?;
                block.push(insn(JNE_K, reg, 0, i16::MAX, n));
            }
        }
        let unconditional = block.is_empty();
        block.push(insn(MOV64_K, 0, 0, 0, i32::from(rule.allow)));
        block.push(insn(EXIT, 0, 0, 0, 0));
        // Failed checks jump to the next rule: past the end of this block.
        let len = block.len();
        for (i, b) in block.iter_mut().enumerate() {
            if b.off == i16::MAX {
                b.off = i16::try_from(len - i - 1).unwrap_or(i16::MAX);
            }
        }
        prog.extend(block);
        if unconditional {
            // Matches everything: the rules before it can never decide (and the kernel's
            // verifier refuses unreachable instructions).
            return Ok(Some(prog));
        }
    }
    prog.push(insn(MOV64_K, 0, 0, 0, 0));
    prog.push(insn(EXIT, 0, 0, 0, 0));
    Ok(Some(prog))
}

/// `union bpf_attr`, as a buffer the kernel reads (unused fields zero).
#[repr(C, align(8))]
struct Attr([u8; 128]);

impl Attr {
    fn new() -> Attr {
        Attr([0; 128])
    }
    fn u32(&mut self, off: usize, v: u32) -> &mut Self {
        self.0[off..off + 4].copy_from_slice(&v.to_ne_bytes());
        self
    }
    fn u64(&mut self, off: usize, v: u64) -> &mut Self {
        self.0[off..off + 8].copy_from_slice(&v.to_ne_bytes());
        self
    }
}

fn bpf(cmd: libc::c_long, attr: &mut Attr) -> io::Result<libc::c_long> {
    // SAFETY: the kernel reads (and for queries writes) at most 128 bytes of `attr`; pointers
    // inside it refer to buffers that outlive the call.
    let rc = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr.0.as_mut_ptr(), attr.0.len()) };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_ATTACH: libc::c_long = 8;
const BPF_PROG_QUERY: libc::c_long = 16;
const PROG_TYPE_CGROUP_DEVICE: u32 = 15;
const ATTACH_CGROUP_DEVICE: u32 = 6;
const F_ALLOW_MULTI: u32 = 2;

/// Loads `prog` and attaches it to the v2 cgroup directory `dir`. The program stays attached
/// (and the group filtered) after this process exits, until the group is removed.
pub fn attach(dir: &Path, prog: &[Insn]) -> io::Result<()> {
    let license = c"Apache-2.0";
    let count =
        u32::try_from(prog.len()).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let mut load = Attr::new();
    load.u32(0, PROG_TYPE_CGROUP_DEVICE)
        .u32(4, count)
        .u64(8, prog.as_ptr() as u64)
        .u64(16, license.as_ptr() as u64);
    let fd = match bpf(BPF_PROG_LOAD, &mut load) {
        Ok(fd) => fd,
        Err(e) => {
            // Load again with the verifier's log, to say why.
            const LOG: u32 = 16 << 10;
            let mut log = vec![0u8; LOG as usize];
            load.u32(24, 1)
                .u32(28, LOG)
                .u64(32, log.as_mut_ptr() as u64);
            let _ = bpf(BPF_PROG_LOAD, &mut load);
            let text = String::from_utf8_lossy(&log);
            let text = text.trim_end_matches('\0').trim();
            return Err(io::Error::new(
                e.kind(),
                format!("loading the device program: {e}: {text}"),
            ));
        }
    };
    // SAFETY: BPF_PROG_LOAD returned a new fd that we own.
    let prog_fd = unsafe { OwnedFd::from_raw_fd(i32::try_from(fd).map_err(io::Error::other)?) };
    let group = std::fs::File::open(dir)?;
    let mut at = Attr::new();
    at.u32(0, group.as_raw_fd() as u32)
        .u32(4, prog_fd.as_raw_fd() as u32)
        .u32(8, ATTACH_CGROUP_DEVICE)
        .u32(12, F_ALLOW_MULTI);
    bpf(BPF_PROG_ATTACH, &mut at).map(drop)
}

/// How many device programs are attached to `dir` itself.
pub fn attached(dir: &Path) -> io::Result<u32> {
    let group = std::fs::File::open(dir)?;
    const IDS: u32 = 64;
    let mut ids = [0u32; IDS as usize];
    let mut q = Attr::new();
    q.u32(0, group.as_raw_fd() as u32)
        .u32(4, ATTACH_CGROUP_DEVICE)
        .u64(16, ids.as_mut_ptr() as u64)
        .u32(24, IDS);
    bpf(BPF_PROG_QUERY, &mut q)?;
    Ok(u32::from_ne_bytes([q.0[24], q.0[25], q.0[26], q.0[27]]))
}

#[cfg(test)]
#[allow(clippy::cast_possible_truncation)] // the interpreter models 32-bit eBPF operations
mod tests {
    use super::*;

    fn rule(
        allow: bool,
        kind: &str,
        major: Option<i64>,
        minor: Option<i64>,
        access: &str,
    ) -> DeviceRule {
        DeviceRule {
            allow,
            kind: Some(kind.into()),
            major,
            minor,
            access: Some(access.into()),
        }
    }

    /// A tiny interpreter for the instructions `compile` emits.
    fn run(prog: &[Insn], kind: i32, access: i32, major: u32, minor: u32) -> u64 {
        let ctx = [((access << 16) | kind) as u32, major, minor];
        let mut r = [0u64; 11];
        let mut pc = 0usize;
        loop {
            let i = prog[pc];
            let (dst, src) = ((i.regs & 0xf) as usize, (i.regs >> 4) as usize);
            pc += 1;
            match i.code {
                LDX_W => r[dst] = u64::from(ctx[(i.off / 4) as usize]),
                AND32_K => r[dst] = (r[dst] as u32 & i.imm as u32) as u64,
                RSH32_K => r[dst] = ((r[dst] as u32) >> i.imm) as u64,
                MOV32_X => r[dst] = r[src] as u32 as u64,
                MOV64_K => r[dst] = i.imm as i64 as u64,
                JNE_K if r[dst] != i.imm as u32 as u64 => pc += i.off as usize,
                JNE_X if r[dst] != r[src] => pc += i.off as usize,
                JNE_K | JNE_X => {}
                EXIT => return r[0],
                other => panic!("opcode {other:#x}"),
            }
        }
    }

    #[test]
    fn later_rules_win_and_access_must_be_covered() {
        let rules = [
            rule(false, "a", None, None, "rwm"),
            rule(true, "c", Some(1), Some(3), "rwm"),
            rule(true, "c", Some(1), Some(5), "r"),
            rule(true, "c", None, None, "m"),
            rule(false, "c", Some(1), Some(3), "w"),
        ];
        let prog = compile(&rules).unwrap().unwrap();
        let (c, b) = (TYPE_CHAR, TYPE_BLOCK);
        assert_eq!(run(&prog, c, ACC_READ, 1, 3), 1, "null readable");
        assert_eq!(
            run(&prog, c, ACC_WRITE, 1, 3),
            0,
            "null write denied by the last rule"
        );
        assert_eq!(run(&prog, c, ACC_READ, 1, 5), 1, "zero readable");
        assert_eq!(run(&prog, c, ACC_WRITE, 1, 5), 0, "zero not writable");
        assert_eq!(run(&prog, c, ACC_READ | ACC_WRITE, 1, 5), 0);
        assert_eq!(
            run(&prog, c, ACC_MKNOD, 42, 7),
            1,
            "mknod of any char device"
        );
        assert_eq!(run(&prog, b, ACC_MKNOD, 8, 0), 0, "not of block devices");
        assert_eq!(run(&prog, c, ACC_READ, 10, 229), 0, "anything else denied");
        assert_eq!(compile(&[]).unwrap(), None);
        // Nothing after an unconditional rule (the verifier refuses unreachable code).
        let all = compile(&[
            rule(true, "c", Some(1), Some(3), "r"),
            rule(false, "a", None, None, "rwm"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(all.len(), 6 + 2);
        assert_eq!(run(&all, c, ACC_READ, 1, 3), 0);
        assert_eq!(
            compile(&[rule(true, "x", None, None, "r")]),
            Err(DeviceRuleError::Type("x".into()))
        );
        assert_eq!(
            compile(&[rule(true, "c", None, None, "rq")]),
            Err(DeviceRuleError::Access("rq".into()))
        );
    }
}
