//! `keel system df`: what the root holds, by kind (images, containers, volumes, build
//! cache), and how much of it `keel system prune` could give back. Sizes are apparent
//! sizes of the files under each directory; a hard-linked file counts once.
use std::collections::{BTreeSet, HashSet};
use std::path::Path;

/// Apparent size of everything under `path` (symlinks not followed; each inode once).
pub fn du(path: &Path) -> u64 {
    let mut seen = HashSet::new();
    du_inner(path, &mut seen)
}

fn du_inner(path: &Path, seen: &mut HashSet<(u64, u64)>) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let Ok(m) = std::fs::symlink_metadata(path) else {
        return 0;
    };
    if !seen.insert((m.dev(), m.ino())) {
        return 0;
    }
    if !m.is_dir() {
        return m.len();
    }
    std::fs::read_dir(path)
        .map(|rd| rd.flatten().map(|e| du_inner(&e.path(), seen)).sum())
        .unwrap_or(0)
}

/// One row of `keel system df`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageRow {
    pub kind: &'static str,
    pub total: usize,
    pub active: usize,
    pub size: u64,
    pub reclaimable: u64,
}

/// docker's `RECLAIMABLE` column: `1.2MB (40%)`.
pub fn reclaimable_text(r: &UsageRow, human: impl Fn(u64) -> String) -> String {
    let pct = (r.reclaimable * 100).checked_div(r.size).unwrap_or(0);
    format!("{} ({pct}%)", human(r.reclaimable))
}

#[derive(Debug, thiserror::Error)]
pub enum UsageError {
    #[error(transparent)]
    Container(#[from] super::ContainerError),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}

/// The four rows of `keel system df` for the root of `store`.
pub fn disk_usage(store: &crate::store::Store) -> Result<Vec<UsageRow>, UsageError> {
    use super::{Containers, Status};
    let root = store.root();
    let containers = Containers::new(root);
    let all = containers.list_with_state()?;
    let mut used_images = std::collections::BTreeSet::new();
    let (mut running, mut stopped_size, mut ctr_size) = (0, 0u64, 0u64);
    for (c, st) in &all {
        used_images.insert(c.image_digest.to_string());
        let size = du(&root.join("storage/snapshots").join(&c.id)) + du(&containers.dir_of(&c.id));
        ctr_size += size;
        if st.status == Status::Running {
            running += 1;
        } else {
            stopped_size += size;
        }
    }
    let images = store.images()?;
    let (used, unused): (Vec<_>, Vec<_>) = images
        .iter()
        .partition(|i| used_images.contains(&i.manifest_digest().to_string()));
    let vols = super::volume::Volumes::new(root);
    let vol_names = vols.list();
    let in_use: BTreeSet<&String> = all.iter().flat_map(|(c, _)| c.volumes.iter()).collect();
    let unused_vol: u64 = vol_names
        .iter()
        .filter(|v| !in_use.contains(v))
        .map(|v| du(&root.join("volumes").join(v)))
        .sum();
    let cache = du(&root.join("cache"));
    Ok(vec![
        UsageRow {
            kind: "Images",
            total: images.len(),
            active: used.len(),
            size: du(&store.layout()),
            reclaimable: unused.iter().map(|i| i.size()).sum(),
        },
        UsageRow {
            kind: "Containers",
            total: all.len(),
            active: running,
            size: ctr_size,
            reclaimable: stopped_size,
        },
        UsageRow {
            kind: "Local Volumes",
            total: vol_names.len(),
            active: vol_names.iter().filter(|v| in_use.contains(v)).count(),
            size: du(&root.join("volumes")),
            reclaimable: unused_vol,
        },
        // The step cache and the unpacked layers (gc --cache gives back the former). The
        // btrfs driver's chain subvolumes share their extents, so their apparent size
        // counts a base once per chain above it.
        UsageRow {
            kind: "Build Cache",
            total: 0,
            active: 0,
            size: cache
                + du(&root.join("storage/layers"))
                + du(&root.join("storage/chains"))
                + du(&root.join("storage/subvolumes")),
            reclaimable: cache,
        },
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn du_counts_hard_links_once_and_reclaimable_percent() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("a")).unwrap();
        std::fs::write(d.path().join("a/f"), vec![0u8; 1000]).unwrap();
        std::fs::hard_link(d.path().join("a/f"), d.path().join("g")).unwrap();
        std::os::unix::fs::symlink("/etc", d.path().join("l")).unwrap();
        let dirs = du(d.path()) - 1000;
        assert!(
            dirs < 20_000,
            "only directory entries and the link besides: {dirs}"
        );
        let row = UsageRow {
            kind: "Images",
            total: 2,
            active: 1,
            size: 200,
            reclaimable: 50,
        };
        assert_eq!(reclaimable_text(&row, |n| format!("{n}B")), "50B (25%)");
        let empty = UsageRow { size: 0, ..row };
        assert_eq!(reclaimable_text(&empty, |n| format!("{n}B")), "50B (0%)");
    }
}
