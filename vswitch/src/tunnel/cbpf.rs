//! Classic BPF, as the kernel runs it on sockets: the opcodes we use, a few lines of assembler
//! with named jump targets, and (for tests) an interpreter of the same opcodes.

// Opcodes (linux/bpf_common.h, linux/filter.h).
pub(crate) const LD_W_ABS: u16 = 0x20;
pub(crate) const LD_H_ABS: u16 = 0x28;
pub(crate) const LD_B_ABS: u16 = 0x30;
pub(crate) const LD_W_IND: u16 = 0x40;
pub(crate) const LD_H_IND: u16 = 0x48;
pub(crate) const LD_B_IND: u16 = 0x50;
pub(crate) const LD_IMM: u16 = 0x00;
pub(crate) const LD_MEM: u16 = 0x60;
pub(crate) const LDX_MEM: u16 = 0x61;
pub(crate) const LDX_MSH: u16 = 0xb1;
pub(crate) const ST: u16 = 0x02;
pub(crate) const ADD_K: u16 = 0x04;
pub(crate) const ADD_X: u16 = 0x0c;
pub(crate) const AND_K: u16 = 0x54;
pub(crate) const LSH_K: u16 = 0x64;
pub(crate) const RSH_K: u16 = 0x74;
pub(crate) const XOR_X: u16 = 0xac;
pub(crate) const TAX: u16 = 0x07;
pub(crate) const JA: u16 = 0x05;
pub(crate) const JEQ_K: u16 = 0x15;
pub(crate) const JSET_K: u16 = 0x45;
pub(crate) const RET_A: u16 = 0x16;
pub(crate) const RET_K: u16 = 0x06;

/// A jump target while assembling.
#[derive(Clone, Copy)]
pub(crate) enum To {
    Next,
    L(&'static str),
}

/// A few lines of assembler: instructions with named jump targets, resolved at the end
/// (classic BPF jumps only forward, by a count of instructions).
#[derive(Default)]
pub(crate) struct Asm {
    code: Vec<(u16, To, To, u32)>,
    labels: Vec<(&'static str, usize)>,
}

impl Asm {
    pub(crate) fn op(&mut self, code: u16, k: u32) -> &mut Self {
        self.code.push((code, To::Next, To::Next, k));
        self
    }
    pub(crate) fn jeq(&mut self, k: u32, yes: To, no: To) -> &mut Self {
        self.code.push((JEQ_K, yes, no, k));
        self
    }
    pub(crate) fn jset(&mut self, k: u32, yes: To, no: To) -> &mut Self {
        self.code.push((JSET_K, yes, no, k));
        self
    }
    pub(crate) fn ja(&mut self, to: &'static str) -> &mut Self {
        self.code.push((JA, To::L(to), To::Next, 0));
        self
    }
    pub(crate) fn label(&mut self, name: &'static str) -> &mut Self {
        self.labels.push((name, self.code.len()));
        self
    }
    pub(crate) fn finish(&self) -> Vec<libc::sock_filter> {
        let at = |to: To, pc: usize| -> usize {
            match to {
                To::Next => 0,
                To::L(name) => {
                    let (_, target) = self.labels.iter().find(|(n, _)| *n == name).expect("label");
                    assert!(*target > pc, "classic BPF jumps only forward: {name}");
                    target - pc - 1
                }
            }
        };
        let mut out = Vec::with_capacity(self.code.len());
        for (pc, &(code, yes, no, k)) in self.code.iter().enumerate() {
            out.push(if code == JA {
                insn(code, 0, 0, at(yes, pc) as u32)
            } else {
                let (jt, jf) = (at(yes, pc), at(no, pc));
                assert!(jt < 256 && jf < 256, "jump too far");
                insn(code, jt as u8, jf as u8, k)
            });
        }
        out
    }
}

/// The ancillary load of the packet's ethertype, in host order (SKF_AD_OFF + SKF_AD_PROTOCOL).
pub(crate) const SKF_AD_PROTOCOL: u32 = 0xffff_f000;

pub(crate) fn insn(code: u16, jt: u8, jf: u8, k: u32) -> libc::sock_filter {
    libc::sock_filter { code, jt, jf, k }
}

#[cfg(test)]
pub(crate) mod test {
    use super::*;

    /// Run a classic BPF program over `pkt` the way the kernel does for the opcodes used here;
    /// a load past the end ends the program with 0, as in the kernel.
    pub(crate) fn run(prog: &[libc::sock_filter], pkt: &[u8]) -> u32 {
        run_proto(prog, 0x0800, pkt)
    }

    /// The same, for a packet whose ethertype (SKF_AD_PROTOCOL) is `proto`.
    pub(crate) fn run_proto(prog: &[libc::sock_filter], proto: u16, pkt: &[u8]) -> u32 {
        let (mut a, mut x, mut m) = (0u32, 0u32, [0u32; 16]);
        let load = |at: u32, size: usize| -> Option<u32> {
            let at = at as usize;
            let b = pkt.get(at..at + size)?;
            Some(b.iter().fold(0u32, |v, &byte| v << 8 | byte as u32))
        };
        let mut pc = 0;
        loop {
            let i = prog[pc];
            let loaded = match i.code {
                LD_W_ABS => load(i.k, 4),
                LD_H_ABS if i.k == SKF_AD_PROTOCOL => Some(u32::from(proto)),
                LD_H_ABS => load(i.k, 2),
                LD_B_ABS => load(i.k, 1),
                LD_W_IND => load(x.wrapping_add(i.k), 4),
                LD_H_IND => load(x.wrapping_add(i.k), 2),
                LD_B_IND => load(x.wrapping_add(i.k), 1),
                LDX_MSH => load(i.k, 1),
                _ => Some(0),
            };
            let Some(v) = loaded else { return 0 };
            match i.code {
                LD_W_ABS | LD_H_ABS | LD_B_ABS | LD_W_IND | LD_H_IND | LD_B_IND => a = v,
                LDX_MSH => x = (v & 0xf) * 4,
                LD_IMM => a = i.k,
                LD_MEM => a = m[i.k as usize],
                LDX_MEM => x = m[i.k as usize],
                ST => m[i.k as usize] = a,
                ADD_K => a = a.wrapping_add(i.k),
                ADD_X => a = a.wrapping_add(x),
                AND_K => a &= i.k,
                LSH_K => a <<= i.k,
                RSH_K => a >>= i.k,
                XOR_X => a ^= x,
                TAX => x = a,
                JA => pc += i.k as usize,
                JEQ_K => pc += if a == i.k { i.jt } else { i.jf } as usize,
                JSET_K => pc += if a & i.k != 0 { i.jt } else { i.jf } as usize,
                RET_A => return a,
                RET_K => return i.k,
                c => panic!("opcode {c:#x}"),
            }
            pc += 1;
        }
    }
}
