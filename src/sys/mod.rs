//! Thin wrappers over kernel operations: the only module that calls nix/libc directly.
//! Each function wraps one operation, returns [`SysError`] naming the operation and path,
//! and makes no policy decisions (those live in `runtime::spec` and the backends).
pub mod binfmt;
pub mod bpf;
pub mod btrfs;
pub mod caps;
pub mod error;
pub mod fs;
pub mod hostfs;
pub mod mount;
pub mod net;
pub mod ns;
pub mod proc;
pub mod remove;
pub mod rootfs;
pub mod seccomp;
pub mod session;
pub mod tty;
pub mod userfile;
pub mod userns;

pub use error::SysError;
