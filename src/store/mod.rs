//! The image store: an OCI image layout under `<root>/images` plus keel's own state
//! directories beside it. Owns blob writes (atomic, verified), index updates (locked,
//! atomic) and name resolution. See docs/store.md.
