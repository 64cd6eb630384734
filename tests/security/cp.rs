//! `keel cp` against a hostile container: every path on the container side resolves
//! inside the container's root, whatever symlinks the container planted or `..` the
//! user typed, so the host's files are never read into, or written from, a copy.
use crate::canary::CanaryDir;
use crate::common::{is_root, Keel};
use crate::require;

/// The container plants links to a host canary (absolute, relative with `..`) and waits;
/// `keel cp` through them neither leaks the canary's secret nor writes beside it.
#[test]
fn cp_through_planted_links_stays_in_the_container() {
    require!(is_root(), "keel run needs root");
    let canary = CanaryDir::new();
    let k = Keel::new();
    k.ok(&["bootstrap", "busybox", "bb"]);
    let host = canary.path().display().to_string();
    let plant = format!(
        "ln -s {host} /abs; ln -s ../../../../../../../../{host} /rel; \
         ln -s {host}/file /leak; touch /ready; exec sleep 100"
    );
    k.ok(&["run", "-d", "--name", "evil", "bb", "sh", "-c", &plant]);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !k
        .cmd()
        .args(["exec", "evil", "test", "-e", "/ready"])
        .status()
        .unwrap()
        .success()
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the container never got ready"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let out_dir = k.path("out");
    std::fs::create_dir(&out_dir).unwrap();
    let src = k.path("payload");
    std::fs::write(&src, "attacker").unwrap();
    for path in [
        "/abs/file".to_string(),
        "/rel/file".to_string(),
        "/leak".to_string(),
        format!("/../../../../{host}/file"),
        "/abs".to_string(),
    ] {
        let res = k
            .cmd()
            .args(["cp", &format!("evil:{path}")])
            .arg(&out_dir)
            .output()
            .unwrap();
        canary.assert_not_leaked(&String::from_utf8_lossy(&res.stdout));
        canary.assert_not_leaked(&String::from_utf8_lossy(&res.stderr));
        for entry in walkdir::WalkDir::new(&out_dir) {
            let entry = entry.unwrap();
            if entry.file_type().is_file() {
                canary.assert_not_leaked(&std::fs::read_to_string(entry.path()).unwrap());
            }
        }
        // Into the container through the same paths: never beside the canary.
        let _ = k
            .cmd()
            .arg("cp")
            .arg(&src)
            .arg(format!("evil:{path}/sub/planted"))
            .output()
            .unwrap();
        let _ = k
            .cmd()
            .arg("cp")
            .arg(&src)
            .arg(format!("evil:{path}"))
            .output()
            .unwrap();
    }
    canary.assert_intact();
    k.ok(&["rm", "-f", "evil"]);
}
