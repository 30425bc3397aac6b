//! Classic BPF as seccomp uses it: the few instructions the compiler emits, and an interpreter
//! for them (tests run filters for any architecture with it).

use serde::{Deserialize, Serialize};

// Opcodes (linux/bpf_common.h).
const BPF_LD_W_ABS: u16 = 0x20;
const BPF_JMP_JA: u16 = 0x05;
const BPF_JMP_JEQ_K: u16 = 0x15;
const BPF_JMP_JGT_K: u16 = 0x25;
const BPF_JMP_JGE_K: u16 = 0x35;
const BPF_ALU_AND_K: u16 = 0x54;
const BPF_RET_K: u16 = 0x06;

/// `struct sock_filter`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[repr(C)]
pub struct Insn {
    pub code: u16,
    pub jt: u8,
    pub jf: u8,
    pub k: u32,
}

/// Offsets into `struct seccomp_data` (little-endian hosts: skiff's targets all are).
const OFF_NR: u32 = 0;
const OFF_ARCH: u32 = 4;
const OFF_ARGS: u32 = 16;

impl Insn {
    pub fn ld_nr() -> Insn {
        Insn {
            code: BPF_LD_W_ABS,
            jt: 0,
            jf: 0,
            k: OFF_NR,
        }
    }
    pub fn ld_arch() -> Insn {
        Insn {
            code: BPF_LD_W_ABS,
            jt: 0,
            jf: 0,
            k: OFF_ARCH,
        }
    }
    /// Loads the high or low 32 bits of argument `index`.
    pub fn ld_arg(index: u32, high: bool) -> Insn {
        let k = OFF_ARGS + index * 8 + if high { 4 } else { 0 };
        Insn {
            code: BPF_LD_W_ABS,
            jt: 0,
            jf: 0,
            k,
        }
    }
    pub fn jeq(k: u32, jt: u8, jf: u8) -> Insn {
        Insn {
            code: BPF_JMP_JEQ_K,
            jt,
            jf,
            k,
        }
    }
    pub fn jgt(k: u32, jt: u8, jf: u8) -> Insn {
        Insn {
            code: BPF_JMP_JGT_K,
            jt,
            jf,
            k,
        }
    }
    pub fn jge(k: u32, jt: u8, jf: u8) -> Insn {
        Insn {
            code: BPF_JMP_JGE_K,
            jt,
            jf,
            k,
        }
    }
    pub fn ja(k: u32) -> Insn {
        Insn {
            code: BPF_JMP_JA,
            jt: 0,
            jf: 0,
            k,
        }
    }
    pub fn and(k: u32) -> Insn {
        Insn {
            code: BPF_ALU_AND_K,
            jt: 0,
            jf: 0,
            k,
        }
    }
    pub fn ret(k: u32) -> Insn {
        Insn {
            code: BPF_RET_K,
            jt: 0,
            jf: 0,
            k,
        }
    }

    /// Replaces the placeholder offset `u8::MAX` in a conditional jump with `to`.
    pub(super) fn resolve_out(&mut self, to: u8) {
        if matches!(self.code, BPF_JMP_JEQ_K | BPF_JMP_JGT_K | BPF_JMP_JGE_K) {
            if self.jt == u8::MAX {
                self.jt = to;
            }
            if self.jf == u8::MAX {
                self.jf = to;
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Program(pub Vec<Insn>);

impl Program {
    pub fn len(&self) -> usize {
        self.0.len()
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// The fields of `struct seccomp_data` a filter reads.
#[derive(Debug, Clone, Copy)]
pub struct SeccompData {
    pub nr: u32,
    pub arch: u32,
    pub args: [u64; 6],
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum RunError {
    #[error("instruction {0}: unsupported opcode {1:#x}")]
    Opcode(usize, u16),
    #[error("instruction {0}: load from offset {1}")]
    Offset(usize, u32),
    #[error("jump past the end at instruction {0}")]
    OutOfRange(usize),
}

/// Runs `prog` on `data` as the kernel would; returns the `SECCOMP_RET_*` value.
pub fn run(prog: &Program, data: &SeccompData) -> Result<u32, RunError> {
    let word = |off: u32, pc: usize| -> Result<u32, RunError> {
        Ok(match off {
            OFF_NR => data.nr,
            OFF_ARCH => data.arch,
            o if (OFF_ARGS..OFF_ARGS + 48).contains(&o) && o.is_multiple_of(4) => {
                let i = ((o - OFF_ARGS) / 8) as usize;
                let v = data.args[i];
                if (o - OFF_ARGS).is_multiple_of(8) {
                    (v & 0xffff_ffff) as u32
                } else {
                    (v >> 32) as u32
                }
            }
            o => return Err(RunError::Offset(pc, o)),
        })
    };
    let mut a: u32 = 0;
    let mut pc = 0usize;
    loop {
        let insn = prog.0.get(pc).ok_or(RunError::OutOfRange(pc))?;
        let cond = |taken: bool| {
            if taken {
                insn.jt as usize
            } else {
                insn.jf as usize
            }
        };
        pc = match insn.code {
            BPF_LD_W_ABS => {
                a = word(insn.k, pc)?;
                pc + 1
            }
            BPF_ALU_AND_K => {
                a &= insn.k;
                pc + 1
            }
            BPF_JMP_JA => pc + 1 + insn.k as usize,
            BPF_JMP_JEQ_K => pc + 1 + cond(a == insn.k),
            BPF_JMP_JGT_K => pc + 1 + cond(a > insn.k),
            BPF_JMP_JGE_K => pc + 1 + cond(a >= insn.k),
            BPF_RET_K => return Ok(insn.k),
            code => return Err(RunError::Opcode(pc, code)),
        };
    }
}
