//! bpf(2): loading a cgroup device program and attaching it to a cgroup v2 directory.
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

use super::SysError;

const BPF_PROG_LOAD: libc::c_int = 5;
const BPF_PROG_ATTACH: libc::c_int = 8;
const BPF_PROG_TYPE_CGROUP_DEVICE: u32 = 15;
const BPF_CGROUP_DEVICE: u32 = 6;

/// bpf(cmd, attr): `attr` is the kernel's `union bpf_attr`, laid out by the caller.
fn bpf(cmd: libc::c_int, attr: &mut [u8]) -> std::io::Result<i64> {
    // SAFETY: `attr` is a live, writable buffer of the size passed; the kernel reads (and
    // for some commands writes) at most that many bytes.
    let r = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr.as_mut_ptr(), attr.len() as u32) };
    if r < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

fn put(attr: &mut [u8], at: usize, bytes: &[u8]) {
    attr[at..at + bytes.len()].copy_from_slice(bytes);
}

/// Loads `insns` (8-byte `struct bpf_insn`s) as a `BPF_PROG_TYPE_CGROUP_DEVICE` program;
/// the verifier's log is in the error when it refuses.
pub fn load_device_program(insns: &[[u8; 8]]) -> Result<OwnedFd, SysError> {
    let code: Vec<u8> = insns.concat();
    let license = c"Apache-2.0";
    let mut log = vec![0u8; 64 * 1024];
    // union bpf_attr, BPF_PROG_LOAD part: prog_type, insn_cnt, insns, license,
    // log_level, log_size, log_buf.
    let mut attr = [0u8; 72];
    put(&mut attr, 0, &BPF_PROG_TYPE_CGROUP_DEVICE.to_ne_bytes());
    put(&mut attr, 4, &(insns.len() as u32).to_ne_bytes());
    put(&mut attr, 8, &(code.as_ptr() as u64).to_ne_bytes());
    put(&mut attr, 16, &(license.as_ptr() as u64).to_ne_bytes());
    put(&mut attr, 24, &1u32.to_ne_bytes());
    put(&mut attr, 28, &(log.len() as u32).to_ne_bytes());
    put(&mut attr, 32, &(log.as_mut_ptr() as u64).to_ne_bytes());
    match bpf(BPF_PROG_LOAD, &mut attr) {
        // SAFETY: the kernel returned a new fd that nothing else owns.
        Ok(fd) => Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) }),
        Err(e) => {
            let end = log.iter().position(|b| *b == 0).unwrap_or(0);
            let text = String::from_utf8_lossy(&log[..end]).trim().to_string();
            Err(SysError::new(
                "bpf load device program",
                std::io::Error::new(e.kind(), format!("{e}: {text}")),
            ))
        }
    }
}

/// Attaches device program `prog` to the cgroup v2 directory `cgroup`: from then on the
/// kernel asks it about every device open and mknod by the cgroup's processes.
pub fn attach_device_program(cgroup: &Path, prog: &OwnedFd) -> Result<(), SysError> {
    let dir = std::fs::File::open(cgroup).map_err(|e| SysError::at("open cgroup", cgroup, e))?;
    // union bpf_attr, BPF_PROG_ATTACH part: target_fd, attach_bpf_fd, attach_type, flags.
    let mut attr = [0u8; 16];
    put(&mut attr, 0, &(dir.as_raw_fd() as u32).to_ne_bytes());
    put(&mut attr, 4, &(prog.as_raw_fd() as u32).to_ne_bytes());
    put(&mut attr, 8, &BPF_CGROUP_DEVICE.to_ne_bytes());
    bpf(BPF_PROG_ATTACH, &mut attr)
        .map(drop)
        .map_err(|e| SysError::at("bpf attach device program", cgroup, e))
}
