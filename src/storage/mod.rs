//! Storage drivers: root filesystems (snapshots) for containers and build steps.
