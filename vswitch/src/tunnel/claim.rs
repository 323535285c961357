//! Take GRE addressed to us away from the host's IP stack.
//!
//! The fanout sockets ([`fanout`](super::fanout)) copy each GRE packet as it arrives, before
//! the kernel's ingress hooks run. Left alone, the packet then climbs the host's IP stack as
//! well, which reassembles any fragments a second time (Cloud Rack sends none, an Open vSwitch
//! peer may) and hands it to the raw socket, whose filter throws it away: work for every
//! packet, done twice. A tc ingress program (tcx) on the underlay
//! interface ends it: it drops IPv4 GRE to our address after the fanout took its copy, and
//! passes everything else on untouched. This is the userspace counterpart of what Open
//! vSwitch's kernel datapath does with the packets of its tunnel ports.
//!
//! The program is ten eBPF instructions assembled here (no compiler, no object file), loaded
//! with bpf(2) and attached through a BPF link that this process holds: when the switch exits,
//! however it exits, the kernel detaches it.

use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

// From linux/bpf.h.
const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_LINK_CREATE: libc::c_long = 28;
const BPF_PROG_TYPE_SCHED_CLS: u32 = 3;
const BPF_TCX_INGRESS: u32 = 46;
/// tcx verdicts: hand the packet to the next program (and on to the stack), or drop it.
const TCX_NEXT: i32 = -1;
const TCX_DROP: i32 = 2;
/// Offsets of `data` and `data_end` in `struct __sk_buff`.
const SKB_DATA: i16 = 76;
const SKB_DATA_END: i16 = 80;

/// One eBPF instruction (`struct bpf_insn`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Insn {
    pub code: u8,
    /// dst register in the low nibble, src in the high one.
    pub regs: u8,
    pub off: i16,
    pub imm: i32,
}

// Opcodes used below (class | size/op | source).
const LDX_W: u8 = 0x61; // dst = *(u32 *)(src + off)
const LDX_H: u8 = 0x69; // dst = *(u16 *)(src + off)
const LDX_B: u8 = 0x71; // dst = *(u8 *)(src + off)
const MOV64_X: u8 = 0xbf; // dst = src
const MOV64_K: u8 = 0xb7; // dst = imm
const ADD64_K: u8 = 0x07; // dst += imm
const JGT_X: u8 = 0x2d; // if dst > src (unsigned, 64 bit): pc += off
const JNE32_K: u8 = 0x56; // if (u32)dst != (u32)imm: pc += off
const EXIT: u8 = 0x95;

const fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
    Insn {
        code,
        regs: dst | (src << 4),
        off,
        imm,
    }
}

/// The program: drop an Ethernet frame carrying IPv4 protocol 47 to `local`; pass on all
/// else, including frames too short to tell. At tc ingress `data` points at the Ethernet
/// header; loads are little-endian, so the wire's big-endian fields are compared as their
/// byte-swapped values.
pub fn program(local: Ipv4Addr) -> [Insn; 15] {
    const PASS: i16 = 13; // index of the pass branch
    let to_pass = |at: i16| PASS - at - 1;
    [
        insn(LDX_W, 2, 1, SKB_DATA, 0),
        insn(LDX_W, 3, 1, SKB_DATA_END, 0),
        insn(MOV64_X, 4, 2, 0, 0),
        insn(ADD64_K, 4, 0, 0, 14 + 20),
        insn(JGT_X, 4, 3, to_pass(4), 0),
        insn(LDX_H, 5, 2, 12, 0),
        insn(
            JNE32_K,
            5,
            0,
            to_pass(6),
            u16::from_le_bytes(0x0800u16.to_be_bytes()) as i32,
        ),
        insn(LDX_B, 5, 2, 14 + 9, 0),
        insn(JNE32_K, 5, 0, to_pass(8), cloudrack_wire::gre::IPPROTO_GRE),
        insn(LDX_W, 5, 2, 14 + 16, 0),
        insn(JNE32_K, 5, 0, to_pass(10), u32::from_le_bytes(local.octets()) as i32),
        insn(MOV64_K, 0, 0, 0, TCX_DROP),
        insn(EXIT, 0, 0, 0, 0),
        insn(MOV64_K, 0, 0, 0, TCX_NEXT),
        insn(EXIT, 0, 0, 0, 0),
    ]
}

/// `union bpf_attr` for BPF_PROG_LOAD, up to the fields used.
#[repr(C)]
#[derive(Default)]
struct ProgLoad {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
}

/// `union bpf_attr` for BPF_LINK_CREATE with tcx.
#[repr(C)]
#[derive(Default)]
struct LinkCreate {
    prog_fd: u32,
    target_ifindex: u32,
    attach_type: u32,
    flags: u32,
    relative_fd: u32,
    _pad: u32,
    expected_revision: u64,
}

fn bpf<T>(cmd: libc::c_long, attr: &mut T) -> io::Result<OwnedFd> {
    // SAFETY: attr is a live, initialised bpf_attr prefix and its size is passed; the calls
    // used here return a new descriptor, owned right away.
    let fd = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr as *mut T, std::mem::size_of::<T>() as u32) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// The attached program. Dropping it detaches the program.
pub struct GreClaim {
    _link: OwnedFd,
    _prog: OwnedFd,
}

impl GreClaim {
    /// Load the program for `local` and attach it at ingress of interface `ifindex`, after any
    /// tcx programs already there.
    pub fn attach(ifindex: u32, local: Ipv4Addr) -> io::Result<GreClaim> {
        let prog = load(&program(local))?;
        let mut attr = LinkCreate {
            prog_fd: prog.as_raw_fd() as u32,
            target_ifindex: ifindex,
            attach_type: BPF_TCX_INGRESS,
            ..Default::default()
        };
        let link = bpf(BPF_LINK_CREATE, &mut attr)?;
        Ok(GreClaim {
            _link: link,
            _prog: prog,
        })
    }
}

fn load(insns: &[Insn]) -> io::Result<OwnedFd> {
    let license = c"Apache-2.0";
    let mut name = [0u8; 16];
    name[..12].copy_from_slice(b"cr_gre_claim");
    let mut attr = ProgLoad {
        prog_type: BPF_PROG_TYPE_SCHED_CLS,
        insn_cnt: insns.len() as u32,
        insns: insns.as_ptr() as u64,
        license: license.as_ptr() as u64,
        prog_name: name,
        ..Default::default()
    };
    match bpf(BPF_PROG_LOAD, &mut attr) {
        Ok(fd) => Ok(fd),
        Err(e) if e.raw_os_error() == Some(libc::EACCES) || e.raw_os_error() == Some(libc::EINVAL) => {
            // The verifier refused it: load again with its log, to say why.
            let mut log = vec![0u8; 4096];
            attr.log_level = 1;
            attr.log_size = log.len() as u32;
            attr.log_buf = log.as_mut_ptr() as u64;
            let _ = bpf(BPF_PROG_LOAD, &mut attr);
            let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
            let text = String::from_utf8_lossy(&log[..end]);
            Err(io::Error::new(e.kind(), format!("{e}; verifier: {}", text.trim())))
        }
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod test {
    use super::*;

    /// Run the program the way the kernel would, for the opcodes it uses, over `frame`.
    fn run(prog: &[Insn], frame: &[u8]) -> i32 {
        let mut r = [0u64; 11];
        // The context: data at offset 0 of `frame`, data_end at its length.
        let (data, data_end) = (0x1000u64, 0x1000 + frame.len() as u64);
        let load = |addr: u64, size: usize| -> u64 {
            let at = (addr - data) as usize;
            assert!(
                addr >= data && at + size <= frame.len(),
                "out-of-bounds load the verifier would refuse"
            );
            frame[at..at + size].iter().rev().fold(0, |v, &b| v << 8 | b as u64)
        };
        let mut pc = 0usize;
        loop {
            let i = prog[pc];
            let (d, s) = ((i.regs & 0xf) as usize, (i.regs >> 4) as usize);
            match i.code {
                LDX_W if s == 1 => {
                    r[d] = match i.off {
                        SKB_DATA => data,
                        SKB_DATA_END => data_end,
                        o => panic!("context offset {o}"),
                    }
                }
                LDX_W => r[d] = load(r[s].wrapping_add(i.off as u64), 4),
                LDX_H => r[d] = load(r[s].wrapping_add(i.off as u64), 2),
                LDX_B => r[d] = load(r[s].wrapping_add(i.off as u64), 1),
                MOV64_X => r[d] = r[s],
                MOV64_K => r[d] = i.imm as i64 as u64,
                ADD64_K => r[d] = r[d].wrapping_add(i.imm as i64 as u64),
                JGT_X if r[d] > r[s] => pc = (pc as i64 + i.off as i64) as usize,
                JNE32_K if r[d] as u32 != i.imm as u32 => pc = (pc as i64 + i.off as i64) as usize,
                JGT_X | JNE32_K => {}
                EXIT => return r[0] as i32,
                c => panic!("opcode {c:#x}"),
            }
            pc += 1;
        }
    }

    fn frame(ethertype: u16, proto: u8, dst: [u8; 4], len: usize) -> Vec<u8> {
        let mut f = vec![0u8; len.max(34)];
        f[12..14].copy_from_slice(&ethertype.to_be_bytes());
        f[14] = 0x45;
        f[23] = proto;
        f[26..30].copy_from_slice(&[198, 18, 0, 2]);
        f[30..34].copy_from_slice(&dst);
        f.truncate(len);
        f
    }

    #[test]
    fn drops_only_gre_to_us() {
        // An address with the top bit set, so a sign-extending compare would miss it.
        let us = [203, 0, 113, 7];
        let p = program(Ipv4Addr::from(us));
        assert_eq!(run(&p, &frame(0x0800, 47, us, 100)), TCX_DROP);
        assert_eq!(run(&p, &frame(0x0800, 47, us, 34)), TCX_DROP, "headers only");
        assert_eq!(
            run(&p, &frame(0x0800, 47, [203, 0, 113, 8], 100)),
            TCX_NEXT,
            "another host"
        );
        assert_eq!(run(&p, &frame(0x0800, 17, us, 100)), TCX_NEXT, "UDP to us");
        assert_eq!(run(&p, &frame(0x0806, 47, us, 100)), TCX_NEXT, "ARP");
        assert_eq!(run(&p, &frame(0x86dd, 47, us, 100)), TCX_NEXT, "IPv6");
        assert_eq!(run(&p, &frame(0x0800, 47, us, 33)), TCX_NEXT, "too short to tell");
        assert_eq!(run(&p, &[]), TCX_NEXT);
        let low = program(Ipv4Addr::new(10, 0, 0, 1));
        assert_eq!(run(&low, &frame(0x0800, 47, [10, 0, 0, 1], 60)), TCX_DROP);
    }
}
