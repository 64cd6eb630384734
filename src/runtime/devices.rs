//! The device allow-list as a cgroup v2 device program: cgroup v2 has no `devices.allow`
//! file, so the kernel asks a BPF program (`BPF_PROG_TYPE_CGROUP_DEVICE`) attached to the
//! cgroup whether an open or mknod of a device may go ahead. This module turns
//! [`DeviceRule`]s into that program's instructions; `sys::bpf` loads and attaches it.
//!
//! Pure: instructions are plain bytes (`struct bpf_insn`, linux/bpf.h), table-tested.
//! The program reads `struct bpf_cgroup_dev_ctx { u32 access_type; u32 major; u32 minor }`
//! (access_type: device type in the low 16 bits, 1 block / 2 char; requested access in
//! the high 16, 1 mknod / 2 read / 4 write) and returns 1 to allow, 0 to refuse.
//! Semantics match the v1 rule list: a leading `a` rule sets the default, and of the
//! rules after it the last one that matches decides.
use super::spec::DeviceRule;

/// One BPF instruction, encoded as the kernel expects (little-endian hosts).
pub type Insn = [u8; 8];

fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
    let mut b = [0u8; 8];
    b[0] = code;
    b[1] = (src << 4) | (dst & 0x0f);
    b[2..4].copy_from_slice(&off.to_le_bytes());
    b[4..8].copy_from_slice(&imm.to_le_bytes());
    b
}

// Opcodes (linux/bpf_common.h, linux/bpf.h).
const LDX_MEM_W: u8 = 0x61; // dst = *(u32 *)(src + off)
const ALU64_AND_K: u8 = 0x57; // dst &= imm
const ALU64_RSH_K: u8 = 0x77; // dst >>= imm
const ALU64_MOV_K: u8 = 0xb7; // dst = imm
const ALU64_MOV_X: u8 = 0xbf; // dst = src
const JMP_JNE_K: u8 = 0x55; // if dst != imm goto pc + 1 + off
const JMP_EXIT: u8 = 0x95;

/// Registers: r1 is the context; r2 type, r3 access, r4 major, r5 minor, r6 scratch.
const CTX: u8 = 1;
const TYPE: u8 = 2;
const ACCESS: u8 = 3;
const MAJOR: u8 = 4;
const MINOR: u8 = 5;
const SCRATCH: u8 = 6;

fn access_bits(access: &str) -> i32 {
    access.chars().fold(0, |m, c| {
        m | match c {
            'm' => 1,
            'r' => 2,
            'w' => 4,
            _ => 0,
        }
    })
}

/// The checks of one rule: each jumps past the rule's `return` when it fails.
fn rule_block(r: &DeviceRule) -> Vec<Insn> {
    let mut conds: Vec<(u8, i32)> = Vec::new();
    match r.kind {
        'b' => conds.push((TYPE, 1)),
        'c' => conds.push((TYPE, 2)),
        _ => {}
    }
    if let Some(m) = r.major {
        conds.push((MAJOR, m as i32));
    }
    if let Some(m) = r.minor {
        conds.push((MINOR, m as i32));
    }
    // Then: every requested access bit must be in the rule's (access & ~allowed == 0).
    let total = conds.len() as i16 + 3 + 2;
    let mut out = Vec::new();
    for (i, (reg, val)) in conds.iter().enumerate() {
        out.push(insn(JMP_JNE_K, *reg, 0, total - 1 - i as i16, *val));
    }
    let n = conds.len() as i16;
    out.push(insn(ALU64_MOV_X, SCRATCH, ACCESS, 0, 0));
    out.push(insn(
        ALU64_AND_K,
        SCRATCH,
        0,
        0,
        !access_bits(&r.access) & 0xffff,
    ));
    out.push(insn(JMP_JNE_K, SCRATCH, 0, total - 1 - (n + 2), 0));
    out.push(insn(ALU64_MOV_K, 0, 0, 0, r.allow as i32));
    out.push(insn(JMP_EXIT, 0, 0, 0, 0));
    out
}

/// The program for `rules` (in v1 order: typically `a *:* rwm` deny, then allows).
pub fn program(rules: &[DeviceRule]) -> Vec<Insn> {
    let (default, rest) = match rules.split_first() {
        Some((first, rest)) if first.kind == 'a' => (first.allow, rest),
        _ => (true, rules),
    };
    let mut p = vec![
        insn(LDX_MEM_W, TYPE, CTX, 0, 0),
        insn(ALU64_MOV_X, ACCESS, TYPE, 0, 0),
        insn(ALU64_AND_K, TYPE, 0, 0, 0xffff),
        insn(ALU64_RSH_K, ACCESS, 0, 0, 16),
        insn(LDX_MEM_W, MAJOR, CTX, 4, 0),
        insn(LDX_MEM_W, MINOR, CTX, 8, 0),
    ];
    // The last matching rule wins: check them from the end.
    for r in rest.iter().rev() {
        p.extend(rule_block(r));
    }
    p.push(insn(ALU64_MOV_K, 0, 0, 0, default as i32));
    p.push(insn(JMP_EXIT, 0, 0, 0, 0));
    p
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::spec::default_device_rules;

    /// A tiny interpreter for the instructions `program` emits, to table-test decisions
    /// without the kernel.
    fn run(p: &[Insn], kind: u32, access: u32, major: u32, minor: u32) -> u64 {
        let ctx = [kind | (access << 16), major, minor];
        let mut r = [0u64; 11];
        let mut pc = 0usize;
        loop {
            let i = p[pc];
            let (dst, src) = ((i[1] & 0x0f) as usize, (i[1] >> 4) as usize);
            let off = i16::from_le_bytes([i[2], i[3]]);
            let imm = i32::from_le_bytes([i[4], i[5], i[6], i[7]]) as i64 as u64;
            pc += 1;
            match i[0] {
                LDX_MEM_W => r[dst] = ctx[off as usize / 4] as u64,
                ALU64_AND_K => r[dst] &= imm,
                ALU64_RSH_K => r[dst] >>= imm,
                ALU64_MOV_K => r[dst] = imm,
                ALU64_MOV_X => r[dst] = r[src],
                JMP_JNE_K if r[dst] != imm => pc = (pc as i64 + off as i64) as usize,
                JMP_JNE_K => {}
                JMP_EXIT => return r[0],
                other => panic!("unknown opcode {other:#x}"),
            }
        }
    }

    #[test]
    fn default_rules_allow_only_the_default_devices() {
        let p = program(&default_device_rules());
        let (b, c) = (1, 2);
        let (m, rd, wr) = (1, 2, 4);
        let cases = [
            ((c, rd | wr, 1, 3), 1, "read/write /dev/null"),
            ((c, rd, 1, 9), 1, "read /dev/urandom"),
            ((c, rd | wr, 136, 7), 1, "a pts terminal"),
            ((c, rd | wr, 10, 229), 1, "fuse"),
            ((b, rd, 7, 0), 0, "read a loop device"),
            ((b, wr, 8, 0), 0, "write a disk"),
            ((b, m, 8, 0), 1, "mknod a disk node"),
            ((c, m, 10, 237), 1, "mknod loop-control"),
            ((c, rd, 10, 237), 0, "open loop-control"),
            ((c, rd, 1, 1), 0, "/dev/mem"),
            ((c, rd | m, 1, 1), 0, "mknod+read /dev/mem"),
        ];
        for ((kind, access, major, minor), want, what) in cases {
            assert_eq!(run(&p, kind, access, major, minor), want, "{what}");
        }
    }

    #[test]
    fn without_a_leading_deny_all_the_default_is_allow() {
        let deny_disk = DeviceRule {
            allow: false,
            kind: 'b',
            major: Some(8),
            minor: None,
            access: "rw".into(),
        };
        let p = program(&[deny_disk]);
        assert_eq!(run(&p, 1, 2, 8, 1), 0);
        assert_eq!(run(&p, 1, 2, 7, 1), 1);
        assert_eq!(run(&p, 2, 2, 8, 1), 1);
    }
}
