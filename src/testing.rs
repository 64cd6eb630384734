//! Helpers for the library's unit tests.

/// Whether a test that needs something of the machine (root, a tool) can run: when it
/// cannot, the test fails under `CI=true` (CI provides everything, so a skip there would
/// hide a missing check) and otherwise prints `SKIP: <why>` and is skipped by its caller.
pub fn can_run(ok: bool, why: &str) -> bool {
    if !ok {
        assert_ne!(
            std::env::var("CI").as_deref(),
            Ok("true"),
            "required under CI: {why}"
        );
        eprintln!("SKIP: {why}");
    }
    ok
}
