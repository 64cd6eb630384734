//! Installing seccomp BPF programs (compiled by `runtime::seccomp`) in the calling thread.
use super::SysError;

/// Installs `programs` in order (the caller has set no_new_privs, or holds CAP_SYS_ADMIN).
/// Meant for the container's process right before exec: the filters are inherited and
/// cannot be removed.
pub fn apply(programs: &[seccompiler::BpfProgram]) -> Result<(), SysError> {
    for p in programs {
        seccompiler::apply_filter(p).map_err(|e| {
            SysError::new(
                "install seccomp filter",
                std::io::Error::other(e.to_string()),
            )
        })?;
    }
    Ok(())
}
