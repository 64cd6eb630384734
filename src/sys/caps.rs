//! Capability sets: drop the bounding set to a keep-list and set the process sets to it.
use std::str::FromStr;

use caps::{CapSet, Capability, CapsHashSet};

use super::SysError;

fn err(op: &'static str, e: impl std::fmt::Display) -> SysError {
    SysError::new(op, std::io::Error::other(e.to_string()))
}

/// Parses capability names (`CAP_CHOWN`) into a set; unknown names are errors.
pub fn parse(names: &[String]) -> Result<CapsHashSet, SysError> {
    names
        .iter()
        .map(|n| Capability::from_str(n).map_err(|e| err("parse capability", format!("{n}: {e}"))))
        .collect()
}

/// Drops every capability not in `keep` from the bounding set, then sets the effective
/// and permitted sets to `keep` and empties the inheritable and ambient sets (so no exec
/// can raise capabilities through file inheritable bits). Call as root, before changing
/// uid (the caller needs CAP_SETPCAP for the bounding set); a later change to a non-zero
/// uid clears the effective and permitted sets.
pub fn restrict_to(keep: &CapsHashSet) -> Result<(), SysError> {
    for cap in caps::all() {
        if !keep.contains(&cap) && caps::has_cap(None, CapSet::Bounding, cap).unwrap_or(false) {
            caps::drop(None, CapSet::Bounding, cap)
                .map_err(|e| err("drop bounding capability", e))?;
        }
    }
    caps::clear(None, CapSet::Ambient).map_err(|e| err("clear ambient capabilities", e))?;
    caps::clear(None, CapSet::Inheritable).map_err(|e| err("clear inheritable capabilities", e))?;
    caps::set(None, CapSet::Effective, keep).map_err(|e| err("set effective capabilities", e))?;
    caps::set(None, CapSet::Permitted, keep).map_err(|e| err("set permitted capabilities", e))
}

/// The capability bitmask of a set (as printed in `/proc/PID/status`).
pub fn mask(set: &CapsHashSet) -> u64 {
    set.iter().fold(0, |m, c| m | c.bitmask())
}
