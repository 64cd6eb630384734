//! The cases: one test per behaviour, named after it. Where buildah 1.28 differs from
//! BuildKit, `.buildkit(…)` states BuildKit's result and the comment above it cites the
//! BuildKit doc or source it follows (moby/buildkit `frontend/dockerfile/dockerfile2llb/
//! convert.go`, `frontend/dockerfile/dockerfile_test.go`, docs.docker.com's Dockerfile
//! reference).
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::Path;

use serde_json::json;

use crate::Case;

fn mode(p: &Path, m: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap();
}

// ---- the divergences issue 11 lists ------------------------------------------------

/// A config with no PATH gets BuildKit's default, and RUN sees it: convert.go adds
/// `PATH=` + `system.DefaultPathEnv` to a stage's env when the base has none (Dockerfile
/// reference, ENV: "the default PATH"). buildah 1.28 only does so for RUN, not the config.
/// `FROM scratch` also starts with WorkingDir "/" (dockerfile2llb `emptyImage`), which
/// buildah leaves empty.
#[test]
fn divergence_default_path() {
    Case::new(
        "divergence_default_path",
        "FROM bb AS tools\nFROM scratch\nCOPY --from=tools / /\nRUN echo \"$PATH\" > /path.txt\n",
    )
    .buildkit(|i| {
        i.set(
            "Env",
            Some(json!([
                "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
            ])),
        );
        i.set("WorkingDir", Some(json!("/")));
    })
    .check();
}

/// `ENV A=y B="$A z"`: every value expands with the env from before the instruction
/// (BuildKit `dispatchEnv` expands all words first, then sets; Dockerfile reference, ENV).
#[test]
fn divergence_env_same_line_sees_old_value() {
    Case::new(
        "divergence_env_same_line_sees_old_value",
        "FROM bb\nENV A=x\nENV A=y B=\"$A z\" C=${A}c\nRUN echo \"$A $B $C\" > /env.txt\n",
    )
    .check();
}

/// `# escape=`` `: the backtick escapes (also inside double quotes) and `\` is a plain
/// character, so Windows paths survive (Dockerfile reference, "escape" directive).
#[test]
fn divergence_escape_backtick() {
    Case::new(
        "divergence_escape_backtick",
        "# escape=`\nFROM bb\nENV WIN=C:\\dir\\sub Q=\"a`\"b\" S=one` two A=\"`$NOT\" E=\"tab`tx\"\nLABEL path=\"C:\\Program Files\\x\" tick=\"x``y\"\n",
    )
    // buildah 1.28's lexer rejects a backtick-escaped quote inside double quotes, which
    // BuildKit's lexer accepts (`frontend/dockerfile/shell/lex.go`: processDoubleQuote
    // honours the escape token): the values BuildKit gives, with the default escape.
    .buildah_as(r#"FROM bb
ENV WIN=C:\\dir\\sub Q="a\"b" S=one\ two A="\$NOT" E="tab`tx"
LABEL path="C:\\Program Files\\x" tick="x`y"
"#)
    .check();
}

/// WORKDIR creates the directory even if nothing is written there, owned by the current
/// USER when one is set (convert.go `dispatchWorkdir`: `llb.Mkdir` with `WithUser`).
#[test]
fn divergence_workdir_created_owned_by_user() {
    Case::new(
        "divergence_workdir_created_owned_by_user",
        "FROM bb\nWORKDIR /made/by/workdir\nUSER daemon\nWORKDIR /owned\nWORKDIR sub\n",
    )
    .buildkit(|i| {
        // buildah 1.28 creates no WORKDIR directory; BuildKit makes each, as the user.
        for d in ["made", "made/by", "made/by/workdir"] {
            i.file(d, Some("dir 0755 0:0"));
        }
        i.file("owned", Some("dir 0755 1:1"));
        i.file("owned/sub", Some("dir 0755 1:1"));
    })
    .check();
}

/// `COPY --chown` also owns the directories the copy creates (the destination and its
/// missing parents): BuildKit's copy creates them with the copy's owner
/// (`llb.Copy` … `CreateDestPath`, `ChownOpt`; dockerfile_test.go `testCopyChownCreateDest`).
#[test]
fn divergence_copy_chown_owns_created_dirs() {
    Case::new(
        "divergence_copy_chown_owns_created_dirs",
        "FROM bb\nCOPY --chown=1:1 a.txt /new/deep/dir/\nCOPY --chown=daemon b/ /other/\n",
    )
    .file("a.txt", "a\n")
    .file("b/c.txt", "c\n")
    .buildkit(|i| {
        i.file("new", Some("dir 0755 1:1"));
        i.file("new/deep", Some("dir 0755 1:1"));
        i.file("new/deep/dir", Some("dir 0755 1:1"));
    })
    .check();
}

/// `--chown` applies to `COPY --from=stage` as well.
#[test]
fn divergence_copy_from_stage_chown() {
    Case::new(
        "divergence_copy_from_stage_chown",
        "FROM bb AS build\nRUN mkdir -p /out/sub && echo x > /out/sub/f && echo y > /out/g\nFROM bb\nCOPY --from=build --chown=1:1 /out/ /res/\n",
    )
    .check();
}

/// ADD of a compressed file that is not a tar archive copies it as it is (Dockerfile
/// reference, ADD: only "a local tar archive in a recognized compression format" is
/// unpacked; BuildKit's `copy` with `AttemptUnpack` falls back to a plain copy).
#[test]
fn divergence_add_gz_not_tar() {
    Case::new(
        "divergence_add_gz_not_tar",
        "FROM bb\nADD notes.txt.gz /d/\n",
    )
    .setup(|d| {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        std::io::Write::write_all(&mut gz, b"just some notes\n").unwrap();
        std::fs::write(d.join("notes.txt.gz"), gz.finish().unwrap()).unwrap();
    })
    .check();
}

/// setuid, setgid and sticky bits survive into the layer.
#[test]
fn divergence_special_mode_bits() {
    Case::new(
        "divergence_special_mode_bits",
        "FROM bb\nRUN mkdir /out /g && chmod 1777 /out && chmod 2755 /g && echo x > /s && chmod 4755 /s\n",
    )
    .check();
}

/// `EXPOSE 7000-7002` is three ports: convert.go `dispatchExpose` runs the words through
/// `nat.ParsePortSpecs`, which expands a range to one entry per port. buildah 1.28 keeps
/// the range as one key.
#[test]
fn divergence_expose_range() {
    Case::new(
        "divergence_expose_range",
        "FROM bb\nEXPOSE 7000-7002 53/udp\n",
    )
    .buildkit(|i| {
        i.set(
            "ExposedPorts",
            Some(json!({"7000/tcp": {}, "7001/tcp": {}, "7002/tcp": {}, "53/udp": {}})),
        )
    })
    .check();
}

/// `COPY <<EOF` with an unquoted delimiter expands build args and env in the body; a
/// quoted `'EOF'` does not (Dockerfile reference, "Here-Documents"; dockerfile_test.go
/// `testHeredocVarSubstitution`). buildah 1.28 expands in neither.
#[test]
fn divergence_copy_heredoc_expands() {
    Case::new(
        "divergence_copy_heredoc_expands",
        "FROM bb\nARG NAME=world\nENV GREET=hello\nCOPY <<EOF /expanded\n$GREET ${NAME}\nEOF\nCOPY <<'EOF' /literal\n$GREET ${NAME}\nEOF\n",
    )
    // buildah 1.28 has no heredocs: the files BuildKit writes, written by RUN.
    .buildah_as(r#"FROM bb
ENV GREET=hello
RUN echo 'hello world' > /expanded && echo '$GREET ${NAME}' > /literal
"#)
    .check();
}

// ---- RUN ---------------------------------------------------------------------------

#[test]
fn run_shell_form() {
    Case::new(
        "run_shell_form",
        "FROM bb\nRUN echo hi > /hi.txt && mkdir -p /a/b && echo x > /a/b/c\n",
    )
    .check();
}

#[test]
fn run_exec_form() {
    Case::new(
        "run_exec_form",
        "FROM bb\nRUN [\"/bin/sh\", \"-c\", \"echo exec > /e.txt\"]\n",
    )
    .check();
}

#[test]
fn run_heredoc() {
    Case::new(
        "run_heredoc",
        "FROM bb\nRUN <<EOF\necho one > /one\necho two > /two\nEOF\n",
    )
    // buildah 1.28 has no heredocs: the same script on one line.
    .buildah_as("FROM bb\nRUN echo one > /one; echo two > /two\n")
    .check();
}

#[test]
fn run_sees_args_and_env() {
    Case::new(
        "run_sees_args_and_env",
        "FROM bb\nARG V=1\nENV E=env\nRUN echo \"$V $E\" > /seen\n",
    )
    .arg("--build-arg")
    .arg("V=2")
    .check();
}

#[test]
fn run_as_user() {
    Case::new(
        "run_as_user",
        "FROM bb\nRUN mkdir /d && chown daemon /d\nUSER daemon\nRUN touch /d/mine\n",
    )
    .check();
}

#[test]
fn run_in_workdir() {
    Case::new(
        "run_in_workdir",
        "FROM bb\nWORKDIR /w\nRUN echo x > rel.txt\n",
    )
    .check();
}

#[test]
fn run_deletes_file_and_dir() {
    Case::new(
        "run_deletes_file_and_dir",
        "FROM bb\nRUN mkdir -p /d/e && echo x > /d/e/f && echo y > /g\nRUN rm -r /d/e /g /bin/ls\n",
    )
    .check();
}

#[test]
fn run_replaces_dir_with_file() {
    Case::new(
        "run_replaces_dir_with_file",
        "FROM bb\nRUN mkdir -p /x/y && echo a > /x/y/z\nRUN rm -r /x && echo file > /x\n",
    )
    .check();
}

#[test]
fn run_links() {
    Case::new(
        "run_links",
        "FROM bb\nRUN echo t > /t && ln -s /t /abs && ln -s t /rel && ln -s /nowhere /dangling && ln /t /hard\n",
    )
    .check();
}

#[test]
fn run_modes_and_owners() {
    Case::new(
        "run_modes_and_owners",
        "FROM bb\nRUN echo a > /a && chmod 600 /a && mkdir /p && chmod 700 /p && chown 1:65534 /p /a\n",
    )
    .check();
}

#[test]
fn run_mount_cache_not_in_image() {
    Case::new(
        "run_mount_cache_not_in_image",
        "FROM bb\nRUN --mount=type=cache,target=/cache echo c > /cache/x && cp /cache/x /copied\n",
    )
    .check();
}

#[test]
fn run_mount_bind_context() {
    Case::new(
        "run_mount_bind_context",
        "FROM bb\nRUN --mount=type=bind,source=data,target=/data cp /data/in /out\n",
    )
    .file("data/in", "bound\n")
    .check();
}

#[test]
fn run_mount_tmpfs() {
    Case::new(
        "run_mount_tmpfs",
        "FROM bb\nRUN --mount=type=tmpfs,target=/scratch echo t > /scratch/x && cat /scratch/x > /kept\n",
    )
    .check();
}

#[test]
fn run_network_none() {
    Case::new(
        "run_network_none",
        "FROM bb\nRUN --network=none ls /sys/class/net > /ifaces\n",
    )
    // buildah 1.28 has no `RUN --network`; with none, BuildKit's step sees only `lo`.
    .buildah_as("FROM bb\nRUN echo lo > /ifaces\n")
    .check();
}

#[test]
fn run_mount_secret() {
    Case::new(
        "run_mount_secret",
        "FROM bb\nRUN --mount=type=secret,id=tok wc -c < /run/secrets/tok > /len\n",
    )
    .file("tok.txt", "s3cret")
    .arg("--secret")
    .arg("id=tok,src={ctx}/tok.txt")
    .check();
}

// ---- COPY / ADD --------------------------------------------------------------------

#[test]
fn copy_file() {
    Case::new(
        "copy_file",
        "FROM bb\nCOPY a.txt /dst/\nCOPY a.txt /renamed\n",
    )
    .file("a.txt", "hello\n")
    .check();
}

#[test]
fn copy_dir_contents() {
    Case::new("copy_dir_contents", "FROM bb\nCOPY src /dst\n")
        .file("src/one", "1")
        .file("src/sub/two", "2")
        .file("src/empty/", "")
        .check();
}

#[test]
fn copy_several_sources() {
    Case::new("copy_several_sources", "FROM bb\nCOPY a b dir /many/\n")
        .file("a", "a")
        .file("b", "b")
        .file("dir/c", "c")
        .check();
}

#[test]
fn copy_glob() {
    Case::new("copy_glob", "FROM bb\nCOPY *.txt d?/ /g/\n")
        .file("x.txt", "x")
        .file("y.txt", "y")
        .file("z.md", "z")
        .file("d1/f", "f")
        .check();
}

#[test]
fn copy_chmod() {
    Case::new("copy_chmod", "FROM bb\nCOPY --chmod=0750 a dir /m/\n")
        .file("a", "a")
        .file("dir/b", "b")
        .check();
}

#[test]
fn copy_chown_names() {
    Case::new(
        "copy_chown_names",
        "FROM bb\nCOPY --chown=daemon:nogroup a /a\nCOPY --chown=65534 a /b\n",
    )
    .file("a", "a")
    .check();
}

#[test]
fn copy_keeps_source_modes() {
    Case::new("copy_keeps_source_modes", "FROM bb\nCOPY . /ctx/\n")
        .file("exe", "#!/bin/sh\n")
        .file("priv/f", "p")
        .setup(|d| {
            mode(&d.join("exe"), 0o755);
            mode(&d.join("priv"), 0o700);
            mode(&d.join("priv/f"), 0o600);
            mode(&d.join("Dockerfile"), 0o644);
        })
        .check();
}

#[test]
fn copy_symlinks_as_links() {
    Case::new("copy_symlinks_as_links", "FROM bb\nCOPY tree /tree\n")
        .file("tree/target", "t")
        .setup(|d| {
            symlink("target", d.join("tree/rel")).unwrap();
            symlink("/etc/passwd", d.join("tree/abs")).unwrap();
        })
        .check();
}

#[test]
fn copy_into_symlinked_dir() {
    Case::new(
        "copy_into_symlinked_dir",
        "FROM bb\nRUN mkdir /real && ln -s /real /link\nCOPY a /link/\n",
    )
    .file("a", "a")
    .check();
}

#[test]
fn copy_relative_dest_uses_workdir() {
    Case::new(
        "copy_relative_dest_uses_workdir",
        "FROM bb\nWORKDIR /app\nCOPY a ./\nCOPY a sub/b\n",
    )
    .file("a", "a")
    .check();
}

#[test]
fn copy_dest_in_env() {
    Case::new(
        "copy_dest_in_env",
        "FROM bb\nENV D=/from/env\nARG F=a\nCOPY $F ${D}/\n",
    )
    .file("a", "a")
    .check();
}

#[test]
fn copy_onto_existing_dir_without_slash() {
    Case::new(
        "copy_onto_existing_dir_without_slash",
        "FROM bb\nCOPY a /etc\n",
    )
    .file("a", "a")
    .check();
}

#[test]
fn copy_heredoc_quoted_and_chmod() {
    Case::new(
        "copy_heredoc_quoted_and_chmod",
        "FROM bb\nCOPY --chmod=755 <<'EOF' /script.sh\n#!/bin/sh\necho $HOME\nEOF\n",
    )
    // buildah 1.28 has no heredocs; BuildKit writes the body as given (Dockerfile reference,
    // "Here-Documents"): the same file, written by RUN.
    .buildah_as(
        r#"FROM bb
RUN printf '#!/bin/sh\necho $HOME\n' > /script.sh && chmod 755 /script.sh
"#,
    )
    .check();
}

#[test]
fn add_local_file() {
    Case::new("add_local_file", "FROM bb\nADD a /added/\n")
        .file("a", "a")
        .check();
}

fn tarball(d: &Path, name: &str, gz: bool) {
    let mut b = tar::Builder::new(Vec::new());
    for (p, data, m) in [("t/one", &b"1"[..], 0o644), ("t/exe", &b"#!"[..], 0o755)] {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(m);
        h.set_uid(7);
        h.set_gid(8);
        h.set_cksum();
        b.append_data(&mut h, p, data).unwrap();
    }
    let raw = b.into_inner().unwrap();
    let bytes = if gz {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        std::io::Write::write_all(&mut e, &raw).unwrap();
        e.finish().unwrap()
    } else {
        raw
    };
    std::fs::write(d.join(name), bytes).unwrap();
}

#[test]
fn add_tar_extracts() {
    Case::new("add_tar_extracts", "FROM bb\nADD a.tar /x/\n")
        .setup(|d| tarball(d, "a.tar", false))
        .check();
}

#[test]
fn add_tgz_extracts() {
    Case::new("add_tgz_extracts", "FROM bb\nADD a.tar.gz /y\n")
        .setup(|d| tarball(d, "a.tar.gz", true))
        .check();
}

#[test]
fn add_chown() {
    Case::new("add_chown", "FROM bb\nADD --chown=1:1 a /a\n")
        .file("a", "a")
        .check();
}

// ---- .dockerignore -----------------------------------------------------------------

#[test]
fn dockerignore_patterns() {
    Case::new("dockerignore_patterns", "FROM bb\nCOPY . /c/\n")
        .file(".dockerignore", "*.log\nsecret/\n**/tmp\n")
        .file("keep.txt", "k")
        .file("drop.log", "d")
        .file("secret/key", "s")
        .file("a/b/tmp", "t")
        .file("a/b/keep", "k")
        .check();
}

#[test]
fn dockerignore_exception() {
    Case::new("dockerignore_exception", "FROM bb\nCOPY . /c/\n")
        .file(".dockerignore", "docs\n!docs/README.md\n")
        .file("docs/README.md", "r")
        .file("docs/other.md", "o")
        .check();
}

#[test]
fn dockerignore_dockerfile_itself() {
    Case::new("dockerignore_dockerfile_itself", "FROM bb\nCOPY . /c/\n")
        .file(".dockerignore", "Dockerfile\n.dockerignore\n")
        .file("x", "x")
        .check();
}

// ---- ENV, ARG, LABEL and expansion -------------------------------------------------

#[test]
fn env_forms() {
    Case::new(
        "env_forms",
        "FROM bb\nENV ONE two words\nENV K1=v1 K2=\"v 2\" K3='$K1'\nENV K4=a\\ b\n",
    )
    .check();
}

/// A new value of a key replaces the old one where it stands (convert.go `addEnv`).
#[test]
fn env_override_keeps_order() {
    Case::new(
        "env_override_keeps_order",
        "FROM bb\nENV A=1 B=2\nENV A=3\nENV PATH=/opt/bin:$PATH\n",
    )
    // buildah 1.28 moves a replaced key to the end; BuildKit's `addEnv` (convert.go)
    // overwrites the entry in place.
    .buildkit(|i| {
        i.set(
            "Env",
            Some(json!([
                "PATH=/opt/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                "A=3",
                "B=2"
            ])),
        )
    })
    .check();
}

#[test]
fn expansion_modifiers() {
    Case::new(
        "expansion_modifiers",
        "FROM bb\nENV SET=s EMPTY=\nENV A=${UNSET:-d} B=${SET:+alt} C=${EMPTY:-e} D=${EMPTY-e} E=${UNSET+x} F=\\$SET G=\"${SET}x\"\n",
    )
    // buildah 1.28 lacks `${V-w}` and `${V+w}`, which BuildKit's lexer has (Dockerfile
    // reference, "Environment replacement"): EMPTY is set, so D is empty; so is E.
    .buildah_as(r#"FROM bb
ENV SET=s EMPTY=
ENV A=${UNSET:-d} B=${SET:+alt} C=${EMPTY:-e} D= E= F=\$SET G="${SET}x"
"#)
    .check();
}

#[test]
fn arg_defaults_and_overrides() {
    Case::new(
        "arg_defaults_and_overrides",
        "FROM bb\nARG A=def\nARG B=def\nENV A=$A B=$B\n",
    )
    .arg("--build-arg")
    .arg("B=given")
    .check();
}

#[test]
fn arg_before_from() {
    Case::new(
        "arg_before_from",
        "ARG BASE=bb\nARG V=global\nFROM ${BASE}\nENV NOT_SEEN=${V}x\nARG V\nENV SEEN=${V}\n",
    )
    .check();
}

#[test]
fn arg_not_kept_in_image() {
    Case::new(
        "arg_not_kept_in_image",
        "FROM bb\nARG SECRET=x\nRUN echo \"$SECRET\" > /f\n",
    )
    .check();
}

#[test]
fn arg_env_precedence() {
    Case::new(
        "arg_env_precedence",
        "FROM bb\nARG X=arg\nENV X=env\nARG X=arg2\nENV Y=$X\n",
    )
    .arg("--build-arg")
    .arg("X=cli")
    .check();
}

#[test]
fn label_forms() {
    Case::new(
        "label_forms",
        "FROM bb\nARG V=1.0\nLABEL version=$V \"quoted key\"=\"quoted value\" multi=\"a \\\n b\"\nLABEL old style\n",
    )
    .check();
}

#[test]
fn build_flag_label() {
    Case::new("build_flag_label", "FROM bb\nLABEL a=1\n")
        .arg("--label")
        .arg("b=2")
        .check();
}

// ---- config instructions -----------------------------------------------------------

#[test]
fn cmd_shell_form() {
    Case::new("cmd_shell_form", "FROM bb\nCMD echo hi there\n").check();
}

#[test]
fn cmd_exec_form() {
    Case::new("cmd_exec_form", "FROM bb\nCMD [\"echo\", \"hi\"]\n").check();
}

#[test]
fn entrypoint_resets_cmd() {
    Case::new(
        "entrypoint_resets_cmd",
        "FROM bb\nCMD [\"x\"]\nENTRYPOINT [\"/bin/echo\"]\n",
    )
    .check();
}

#[test]
fn entrypoint_then_cmd() {
    Case::new(
        "entrypoint_then_cmd",
        "FROM bb\nENTRYPOINT echo run\nCMD [\"arg\"]\n",
    )
    .check();
}

#[test]
fn shell_instruction() {
    Case::new(
        "shell_instruction",
        "FROM bb\nSHELL [\"/bin/sh\", \"-ec\"]\nRUN echo $0 > /shell\nCMD echo x\n",
    )
    // A shell-form CMD goes through the SHELL in force (convert.go `dispatchCmd` calls
    // `withShell(d.image, …)`); buildah 1.28 uses the default `/bin/sh -c`.
    .buildkit(|i| i.set("Cmd", Some(json!(["/bin/sh", "-ec", "echo x"]))))
    .check();
}

#[test]
fn user_forms() {
    Case::new("user_forms", "FROM bb\nUSER daemon:nogroup\n").check();
}

#[test]
fn user_uid_then_run() {
    Case::new(
        "user_uid_then_run",
        "FROM bb\nUSER 1:1\nRUN id -u > /tmp/id && id -g >> /tmp/id\n",
    )
    .check();
}

#[test]
fn volume_forms() {
    Case::new("volume_forms", "FROM bb\nVOLUME /a /b\nVOLUME [\"/c\"]\n").check();
}

#[test]
fn stopsignal() {
    Case::new("stopsignal", "FROM bb\nSTOPSIGNAL SIGKILL\n").check();
}

#[test]
fn healthcheck_cmd() {
    Case::new(
        "healthcheck_cmd",
        "FROM bb\nHEALTHCHECK --interval=5s --timeout=2s --retries=4 --start-period=1s CMD wget -q localhost\n",
    )
    .check();
}

#[test]
fn healthcheck_none() {
    Case::new("healthcheck_none", "FROM bb\nHEALTHCHECK NONE\n").check();
}

#[test]
fn onbuild_recorded() {
    Case::new("onbuild_recorded", "FROM bb\nONBUILD RUN echo later\n").check();
}

#[test]
fn onbuild_runs_in_child() {
    Case::new(
        "onbuild_runs_in_child",
        "FROM bb AS parent\nONBUILD RUN echo triggered > /trig\nFROM parent\nRUN cat /trig > /seen\n",
    )
    .check();
}

#[test]
fn expose_protocols() {
    Case::new(
        "expose_protocols",
        "FROM bb\nARG P=8080\nEXPOSE 80 $P/tcp 53/udp\n",
    )
    .check();
}

#[test]
fn workdir_relative_and_env() {
    Case::new(
        "workdir_relative_and_env",
        "FROM bb\nENV BASE=/srv\nWORKDIR $BASE\nWORKDIR app\nRUN pwd > /pwd\n",
    )
    .check();
}

#[test]
fn maintainer_and_labels() {
    Case::new(
        "maintainer_and_labels",
        "FROM bb\nMAINTAINER someone\nLABEL x=y\n",
    )
    .check();
}

// ---- multi-stage -------------------------------------------------------------------

#[test]
fn multistage_copy_from_named() {
    Case::new(
        "multistage_copy_from_named",
        "FROM bb AS build\nRUN mkdir /out && echo bin > /out/app\nFROM bb\nCOPY --from=build /out/app /usr/local/bin/app\n",
    )
    .check();
}

#[test]
fn multistage_copy_from_index() {
    Case::new(
        "multistage_copy_from_index",
        "FROM bb\nRUN echo zero > /z\nFROM bb\nCOPY --from=0 /z /z0\n",
    )
    .check();
}

#[test]
fn multistage_from_stage() {
    Case::new(
        "multistage_from_stage",
        "FROM bb AS base\nENV FROM_BASE=1\nRUN echo b > /b\nFROM base\nRUN echo c > /c\n",
    )
    .check();
}

#[test]
fn multistage_target() {
    Case::new(
        "multistage_target",
        "FROM bb AS first\nRUN echo 1 > /one\nFROM bb AS second\nRUN echo 2 > /two\n",
    )
    .arg("--target")
    .arg("first")
    .check();
}

#[test]
fn multistage_copy_from_image() {
    Case::new(
        "multistage_copy_from_image",
        "FROM scratch\nCOPY --from=bb /bin/busybox /bb\n",
    )
    // WorkingDir "/" of `FROM scratch`: see divergence_default_path.
    .buildkit(|i| i.set("WorkingDir", Some(json!("/"))))
    .check();
}

#[test]
fn multistage_scratch_files_only() {
    Case::new(
        "multistage_scratch_files_only",
        "FROM bb AS b\nRUN mkdir /o && echo a > /o/a\nFROM scratch\nCOPY --from=b /o/ /\n",
    )
    .buildkit(|i| {
        // Default PATH and WorkingDir: see divergence_default_path.
        i.set(
            "Env",
            Some(json!([
                "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
            ])),
        );
        i.set("WorkingDir", Some(json!("/")));
    })
    .check();
}

// ---- more flags ----------------------------------------------------------------------

#[test]
fn copy_link() {
    Case::new(
        "copy_link",
        "FROM bb\nCOPY --link a /linked/a\nCOPY --link --chmod=700 dir /ld/\n",
    )
    .file("a", "a")
    .file("dir/b", "b")
    // buildah 1.28 has no --link; a linked copy's files are those of a plain copy
    // (Dockerfile reference, COPY --link).
    .buildah_as("FROM bb\nCOPY a /linked/a\nCOPY --chmod=700 dir /ld/\n")
    .check();
}

/// `COPY --exclude` (Dockerfile reference, COPY --exclude): buildah 1.28 does not have
/// it; the same tree without the excluded file.
#[test]
fn copy_exclude() {
    Case::new(
        "copy_exclude",
        "FROM bb\nCOPY --exclude=*.log --exclude=tmp src /s/\n",
    )
    .file("src/keep.txt", "k")
    .file("src/drop.log", "d")
    .file("src/tmp", "t")
    .buildah_as("FROM bb\nCOPY src/keep.txt /s/\n")
    .check();
}

/// `COPY --parents` (Dockerfile reference, COPY --parents): buildah 1.28 does not have
/// it; the same tree written with plain COPYs.
#[test]
fn copy_parents() {
    Case::new(
        "copy_parents",
        "FROM bb\nCOPY --parents ./x/a.txt ./y/./z/b.txt /p/\n",
    )
    .file("x/a.txt", "a")
    .file("y/z/b.txt", "b")
    .buildah_as("FROM bb\nCOPY x/a.txt /p/x/\nCOPY y/z/b.txt /p/z/\n")
    .check();
}

#[test]
fn copy_file_over_existing_file_and_link() {
    Case::new(
        "copy_file_over_existing_file_and_link",
        "FROM bb\nRUN echo old > /f && ln -s /f /l\nCOPY new /f\nCOPY new /l\n",
    )
    .file("new", "new\n")
    // The reference below makes its files 0644 (RUN's umask 022): so must the fixture be,
    // whatever the umask of the test run (under 077 it was 0600 and the case failed).
    .setup(|d| {
        std::fs::set_permissions(d.join("new"), std::fs::Permissions::from_mode(0o644)).unwrap()
    })
    // buildah 1.28 usually gives /f = "new" and /l replaced by a file (what keel gives
    // every time), but under load it sometimes left /f with its old content (seen twice,
    // with and without its layer cache). The reference is that usual result, built from
    // a Dockerfile buildah cannot get wrong. FIXME: check BuildKit's own result for a COPY
    // onto an existing symlink (moby/buildkit dockerfile_test.go) and cite it here.
    .buildah_as("FROM bb\nRUN echo new > /f && echo new > /l\n")
    .check();
}

#[test]
fn copy_dir_symlink_source() {
    Case::new("copy_dir_symlink_source", "FROM bb\nCOPY d /d\n")
        .file("d/real/f", "f")
        .setup(|d| symlink("real", d.join("d/alias")).unwrap())
        .check();
}

#[test]
fn run_mount_bind_from_stage() {
    Case::new(
        "run_mount_bind_from_stage",
        "FROM bb AS s\nRUN echo from-stage > /data\nFROM bb\nRUN --mount=type=bind,from=s,source=/data,target=/m cp /m /got\n",
    )
    .check();
}

#[test]
fn run_mount_cache_uid_mode() {
    Case::new(
        "run_mount_cache_uid_mode",
        "FROM bb\nRUN --mount=type=cache,target=/c,id=diffcase,uid=1,gid=1,mode=0700 stat -c '%u %g %a' /c > /st\n",
    )
    .check();
}

#[test]
fn workdir_then_copy_and_user() {
    Case::new(
        "workdir_then_copy_and_user",
        "FROM bb\nUSER 1:1\nWORKDIR /app\nCOPY --chown=1:1 a .\nUSER root\nRUN touch made-by-root\n",
    )
    .file("a", "a")
    // WORKDIR's directory as BuildKit makes it: see divergence_workdir_created_owned_by_user.
    .buildkit(|i| i.file("app", Some("dir 0755 1:1")))
    .check();
}

#[test]
fn from_arg_and_build_arg() {
    Case::new(
        "from_arg_and_build_arg",
        "ARG IMG=nothing\nFROM ${IMG}\nARG IMG\nRUN echo \"$IMG\" > /img\n",
    )
    .arg("--build-arg")
    .arg("IMG=bb")
    .check();
}

#[test]
fn dockerignore_globstar_and_dirs() {
    Case::new("dockerignore_globstar_and_dirs", "FROM bb\nCOPY . /c/\n")
        .file(".dockerignore", "**/*.o\nbuild\n!build/keep\n# comment\n")
        .file("a.o", "o")
        .file("src/b.o", "o")
        .file("src/b.c", "c")
        .file("build/out", "x")
        .file("build/keep", "k")
        .check();
}

#[test]
fn onbuild_copy_in_child() {
    Case::new(
        "onbuild_copy_in_child",
        "FROM bb AS parent\nONBUILD COPY a /from-onbuild\nFROM parent\nENV DONE=1\n",
    )
    .file("a", "a")
    .check();
}

#[test]
fn healthcheck_exec_form() {
    Case::new(
        "healthcheck_exec_form",
        "FROM bb\nHEALTHCHECK --interval=1m30s CMD [\"/bin/true\"]\n",
    )
    .check();
}

#[test]
fn many_layers_of_whiteouts() {
    Case::new(
        "many_layers_of_whiteouts",
        "FROM bb\nRUN mkdir -p /w/a/b && echo 1 > /w/a/b/f\nRUN rm -rf /w/a && mkdir /w/a && echo 2 > /w/a/g\nRUN rm -rf /w && echo gone > /w\n",
    )
    .check();
}

/// Serves `body` at every path on 127.0.0.1 (one thread, `Connection: close`).
fn serve(body: &'static [u8]) -> String {
    use std::io::{Read, Write};
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", l.local_addr().unwrap());
    std::thread::spawn(move || {
        for mut c in l.incoming().flatten() {
            let mut buf = [0u8; 4096];
            let _ = c.read(&mut buf);
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = c.write_all(head.as_bytes()).and_then(|_| c.write_all(body));
        }
    });
    base
}

/// ADD of a URL: the file keeps its name, mode 0600 (Dockerfile reference, ADD: "If <src>
/// is a remote file URL, the destination will have permissions of 600"), never extracted.
#[test]
fn add_url() {
    let base = serve(b"downloaded\n");
    let df = format!("FROM bb\nADD {base}/dir/tool.tar /dl/\nADD {base}/x /named\n");
    Case::new("add_url", &df).check();
}

/// A COPY into an existing directory leaves its owner and mode alone, also as the next
/// RUN sees it (a layer that left the parent out made it root 0755 under overlay).
#[test]
fn copy_into_sticky_dir_then_run() {
    Case::new(
        "copy_into_sticky_dir_then_run",
        "FROM bb\nRUN mkdir -p /shared && chmod 1777 /shared && chown 1:1 /shared\nCOPY a /shared/\nRUN touch /shared/x && stat -c '%a %u' /shared > /seen\n",
    )
    .file("a", "a")
    .check();
}
