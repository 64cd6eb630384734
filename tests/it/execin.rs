//! `keel exec-in` as the tree's owner (issue 12): a non-root owner of a project tree gets
//! a passwd and group entry, an existing writable HOME, cache volumes it owns, and files
//! it writes in the tree are its own; `mvn -o package` runs with a `~/.m2` cache volume.
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::{have, is_root, run_ok, Keel};
use crate::require;

/// The test owner: a host user made once (`useradd`), never root.
pub(crate) const OWNER: &str = "keel-test-owner";

pub(crate) fn owner_ids() -> (u32, u32) {
    // Tests run in parallel: one useradd at a time.
    static MADE: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _once = MADE.lock().unwrap_or_else(|e| e.into_inner());
    if Command::new("id")
        .arg(OWNER)
        .output()
        .map(|o| !o.status.success())
        .unwrap_or(true)
    {
        run_ok(Command::new("useradd").args(["-M", "-U", "-s", "/bin/sh", OWNER]));
    }
    let id = |flag: &str| -> u32 {
        run_ok(Command::new("id").args([flag, OWNER]))
            .trim()
            .parse()
            .unwrap()
    };
    (id("-u"), id("-g"))
}

/// A project tree `files` owned by the test owner.
fn owned_tree(k: &Keel, files: &[(&str, &str)]) -> PathBuf {
    let dir = k.path("proj");
    for (p, body) in files {
        let f = dir.join(p);
        std::fs::create_dir_all(f.parent().unwrap()).unwrap();
        std::fs::write(f, body).unwrap();
    }
    run_ok(Command::new("chmod").arg("-R").arg("a+rX").arg(&dir));
    run_ok(
        Command::new("chown")
            .arg("-R")
            .arg(format!("{OWNER}:{OWNER}"))
            .arg(&dir),
    );
    // The temp dir above it must be passable for the owner's own checks (mvn's basedir).
    run_ok(Command::new("chmod").arg("a+x").arg(k.dir.path()));
    dir
}

fn exec_in(k: &Keel, dir: &Path, cmd: &[&str]) -> std::process::Output {
    k.cmd()
        .arg("exec-in")
        .arg("dev")
        .arg("--")
        .args(cmd)
        .current_dir(dir)
        .output()
        .unwrap()
}

fn owner_of(p: &Path) -> (u32, u32) {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(p).unwrap();
    (m.uid(), m.gid())
}

/// r012: as a non-root tree owner, `whoami` works, HOME exists and is writable, the
/// cache volumes below it (maven, pip, npm style) are the owner's and writable, and the
/// files written in the tree belong to the owner.
#[test]
fn r012_exec_in_runs_as_the_tree_owner_with_passwd_home_and_caches() {
    require!(is_root(), "exec-in maps users, which needs root");
    require!(have("useradd"), "useradd is not installed (passwd)");
    let (uid, gid) = owner_ids();
    let k = Keel::new();
    k.ok(&["bootstrap", "busybox", "bb"]);
    let dir = owned_tree(&k, &[(
        "keel.toml",
        "[env.dev]\nimage = \"bb\"\ncache = { m2 = \"~/.m2\", pip = \"~/.cache/pip\", npm = \"~/.npm\" }\n",
    )]);
    let out = exec_in(&k, &dir, &[
        "sh", "-c",
        "whoami; id -gn; echo $HOME; touch $HOME/h ~/.m2/m ~/.cache/pip/p ~/.npm/n && echo writable; touch out",
    ]);
    crate::common::assert_success(&out, "keel exec-in");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("{OWNER}\n{OWNER}\n/home/keel\nwritable\n")
    );
    assert_eq!(owner_of(&dir.join("out")), (uid, gid));
    for v in ["m2", "pip", "npm"] {
        let data = k.root().join("volumes").join(v).join("_data");
        assert_eq!(owner_of(&data), (uid, gid), "cache volume {v}");
    }
    // A second run finds its caches again.
    let out = exec_in(&k, &dir, &["sh", "-c", "ls ~/.m2 ~/.npm"]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "/home/keel/.m2:\nm\n\n/home/keel/.npm:\nn\n"
    );
}

/// Builds a small rootfs with the host's maven, its Debian repository (as a file mirror)
/// and a jlink'ed JRE, as a tarball at $1.
const MAVEN_ROOTFS: &str = r#"set -eu
# The image's modes are the recipe's, not the test runner's: under umask 077 the root,
# /etc/passwd and the copied libraries came out 0700/0600 and the tree's (non-root) owner
# could not run java in the image.
umask 022
out=$1
R=$(mktemp -d)
trap 'rm -rf "$R"' EXIT
JH=$(dirname "$(dirname "$(readlink -f "$(command -v javac)")")")
"$JH/bin/jlink" --add-modules java.se,jdk.unsupported --output "$R/opt/jre" \
  --strip-debug --no-man-pages --no-header-files --compress=2 >/dev/null
mkdir -p "$R/bin" "$R/tmp" "$R/etc" "$R/root"
chmod 1777 "$R/tmp"
cp /bin/busybox "$R/bin/busybox"
for a in $(/bin/busybox --list); do [ -e "$R/bin/$a" ] || ln -s busybox "$R/bin/$a"; done
for f in $( (ldd "$R/opt/jre/bin/java"; find "$R/opt/jre/lib" -name '*.so' -exec ldd {} \; ) 2>/dev/null | grep -oE '/[^ ]+\.so[^ ]*' | sort -u); do
  mkdir -p "$R$(dirname "$f")" && cp -L "$f" "$R$f"
done
tar -C / -cf - usr/share/maven usr/share/maven-repo etc/maven usr/share/java | tar -C "$R" -xf -
cat > "$R/etc/maven/settings.xml" <<'X'
<settings><mirrors><mirror><id>debian</id><mirrorOf>*</mirrorOf><url>file:///usr/share/maven-repo</url></mirror></mirrors></settings>
X
printf 'root:x:0:0:root:/root:/bin/sh\n' > "$R/etc/passwd"
printf 'root:x:0:\n' > "$R/etc/group"
tar -C "$R" -cf "$out.tmp" . && mv "$out.tmp" "$out"
"#;

/// The maven image's rootfs tarball, made once per host toolchain and kept outside the
/// clone (`/var/cache/keel-test`), keyed by the recipe and the JDK and maven installed.
fn maven_rootfs() -> PathBuf {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    h.update(MAVEN_ROOTFS);
    for p in [
        "/usr/share/maven-repo",
        "/usr/share/maven/lib",
        "/usr/share/java",
    ] {
        let m = std::fs::metadata(p).unwrap();
        h.update(format!("{p} {:?}\n", m.modified().ok()));
    }
    h.update(run_ok(Command::new("javac").arg("-version")));
    let key = hex::encode(h.finalize());
    let dir = Path::new("/var/cache/keel-test");
    std::fs::create_dir_all(dir).unwrap();
    let tar = dir.join(format!("maven-rootfs-{}.tar", &key[..16]));
    if !tar.exists() {
        run_ok(
            Command::new("sh")
                .arg("-c")
                .arg(MAVEN_ROOTFS)
                .arg("sh")
                .arg(&tar),
        );
    }
    tar
}

const POM: &str = r#"<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>example.keel</groupId>
  <artifactId>exec-in</artifactId>
  <version>0.1.0</version>
  <packaging>pom</packaging>
  <build>
    <plugins>
      <plugin>
        <groupId>org.codehaus.mojo</groupId>
        <artifactId>exec-maven-plugin</artifactId>
        <version>3.1.0</version>
        <executions>
          <execution>
            <id>who</id>
            <phase>package</phase>
            <goals><goal>exec</goal></goals>
            <configuration>
              <executable>sh</executable>
              <arguments>
                <argument>-c</argument>
                <argument>mkdir -p target &amp;&amp; whoami &gt; target/who</argument>
              </arguments>
            </configuration>
          </execution>
        </executions>
      </plugin>
    </plugins>
  </build>
</project>
"#;

/// r012: the documented `keel exec-in dev -- mvn -o package` with a `~/.m2` cache volume,
/// as a non-root tree owner: maven resolves its plugin into the owner's cache (the
/// Debian repository is the image's file mirror) and writes `target/` as the owner.
#[test]
fn r012_exec_in_mvn_offline_package_with_an_m2_cache_as_the_owner() {
    require!(is_root(), "exec-in maps users, which needs root");
    require!(have("useradd"), "useradd is not installed (passwd)");
    require!(
        have("mvn") && have("javac") && have("jlink"),
        "maven and a JDK are not installed (apt-get install maven default-jdk-headless)"
    );
    require!(
        Path::new("/usr/share/maven-repo/org/codehaus/mojo/exec-maven-plugin/3.1.0").is_dir(),
        "exec-maven-plugin 3.1.0 is not installed (apt-get install libexec-maven-plugin-java)"
    );
    let (uid, gid) = owner_ids();
    let k = Keel::new();
    k.ok(&["import", maven_rootfs().to_str().unwrap(), "mvn"]);
    let dir = owned_tree(&k, &[
        ("pom.xml", POM),
        // Only the file:// mirror may be used offline.
        (".mvn/maven.config", "-Daether.offline.protocols=file\n"),
        (
            "keel.toml",
            "[env.dev]\nimage = \"mvn\"\ncache = { m2 = \"~/.m2\" }\n\
             env = { JAVA_HOME = \"/opt/jre\", PATH = \"/usr/share/maven/bin:/opt/jre/bin:/bin\" }\n",
        ),
    ]);
    let out = exec_in(&k, &dir, &["mvn", "-o", "-B", "-q", "package"]);
    crate::common::assert_success(&out, "keel exec-in dev -- mvn -o package");
    assert_eq!(
        std::fs::read_to_string(dir.join("target/who")).unwrap(),
        format!("{OWNER}\n")
    );
    assert_eq!(owner_of(&dir.join("target")), (uid, gid));
    let plugin = k
        .root()
        .join("volumes/m2/_data/repository/org/codehaus/mojo/exec-maven-plugin/3.1.0");
    assert!(plugin.is_dir(), "the plugin did not reach the ~/.m2 cache");
    assert_eq!(owner_of(&plugin), (uid, gid));
}

/// Every path below `dir` not owned by `ids`.
fn not_owned(dir: &Path, ids: (u32, u32)) -> Vec<String> {
    walkdir::WalkDir::new(dir)
        .into_iter()
        .map(|e| e.unwrap().into_path())
        .filter(|p| {
            use std::os::unix::fs::MetadataExt;
            let m = std::fs::symlink_metadata(p).unwrap();
            (m.uid(), m.gid()) != ids
        })
        .map(|p| p.display().to_string())
        .collect()
}

/// r012: after a root `make` through the generated keel.mk (`keel integrate make`,
/// `.keel/` stamps, `--iidfile`), everything keel wrote in the tree belongs to the tree's
/// owner, who can go on working there.
#[test]
fn r012_files_keel_writes_in_a_tree_belong_to_its_owner() {
    require!(is_root(), "the point is keel running as root");
    require!(
        have("useradd") && have("make"),
        "useradd and make are needed"
    );
    let ids = owner_ids();
    let k = Keel::new();
    k.ok(&["bootstrap", "busybox", "bb"]);
    let dir = owned_tree(
        &k,
        &[
            ("keel.toml", "[[image]]\nname = \"app\"\ncontext = \".\"\n"),
            ("Dockerfile", "FROM bb\nCOPY hello /hello\n"),
            ("hello", "hi\n"),
            ("Makefile", "include keel.mk\nall: images\n"),
        ],
    );
    let toml = dir.join("keel.toml");
    k.ok(&[
        "integrate",
        "make",
        "-f",
        toml.to_str().unwrap(),
        "--write",
        dir.to_str().unwrap(),
    ]);
    let make = Command::new("make")
        .current_dir(&dir)
        .arg(format!(
            "KEEL={} --root {} --progress plain",
            env!("CARGO_BIN_EXE_keel"),
            k.root().display()
        ))
        .arg("images")
        .env_remove("MAKEFLAGS")
        .output()
        .unwrap();
    crate::common::assert_success(&make, "make images (as root)");
    assert!(dir.join(".keel/app.iid").is_file(), "no iid file");
    assert_eq!(
        not_owned(&dir, ids),
        Vec::<String>::new(),
        "owned by someone else"
    );
    // The owner can work in .keel/ after root's make.
    run_ok(
        Command::new("su")
            .args(["-s", "/bin/sh", OWNER, "-c"])
            .arg(format!(
                "touch {0}/.keel/mine && rm {0}/.keel/app.iid",
                dir.display()
            )),
    );
}
