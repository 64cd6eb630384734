//! Session 10: the history a build writes and the layers it makes, compared with BuildKit's
//! (buildah 1.28 writes the legacy builder's `/bin/sh -c #(nop) …` texts, so every case
//! here states BuildKit's history itself, citing where BuildKit makes it:
//! moby/buildkit `frontend/dockerfile/dockerfile2llb/convert.go`, the `dispatchX`
//! functions and `commitToHistory`). The file trees and configs are still buildah's.
use sha2::{Digest as _, Sha256};

use crate::image::Image;
use crate::Case;

/// The tree line of a root-owned 0644 file holding `content`.
fn file_line(content: &str) -> String {
    let sum = hex::encode(Sha256::digest(content.as_bytes()));
    format!("file 0644 0:0 {} sha256:{}", content.len(), &sum[..16])
}

/// RUN's history lists the ARGs in scope first: `RUN |N K=V … cmd` (convert.go
/// `runCommandString`): every ARG the stage declared, and those of the stage it is based
/// on (`dispatchState.init` copies `buildArgs`), once each in the order first declared,
/// with the value the step sees, unquoted (dockerfile_history_test.go
/// `testExportedHistoryFlattenArgs`: `RUN |2 foo=bar2 bar=123`). Each ARG writes its own
/// entry, `ARG K=V` with the value it took (`dispatchArg`). And a stage based on a stage
/// inherits its ARGs (Dockerfile reference, ARG: "automatically inherited by other stages
/// based on that stage"), which buildah 1.28 does not: its `/child.txt` lacks `$B`.
#[test]
fn divergence_history_run_build_args() {
    Case::new(
        "divergence_history_run_build_args",
        "FROM bb AS base\nARG A=1\nARG B\nENV E=env\nRUN echo \"$A $B $E\" > /base.txt\nFROM base\nARG A=2\nARG D=\"x y\"\nRUN echo \"$A $B $D\" > /child.txt\n",
    )
    .arg("--build-arg")
    .arg("B=bee")
    .history()
    .buildkit(|i: &mut Image| {
        i.file("child.txt", Some(&file_line("2 bee x y\n")));
        i.set_history(&[
            "ARG A=1 [empty_layer]",
            "ARG B=bee [empty_layer]",
            "ENV E=env [empty_layer]",
            "RUN |2 A=1 B=bee /bin/sh -c echo \"$A $B $E\" > /base.txt # buildkit",
            "ARG A=2 [empty_layer]",
            "ARG D=x y [empty_layer]",
            "RUN |3 A=2 B=bee D=x y /bin/sh -c echo \"$A $B $D\" > /child.txt # buildkit",
        ]);
    })
    .check();
}

/// Each metadata instruction's text is made from the instruction after processing, in
/// Go's formatting of the values BuildKit keeps: `ENV`/`LABEL` `k=v` expanded and
/// unquoted (`KeyValuePair.String`), `EXPOSE %v` of the parsed ports, the words sorted as
/// written (`parseExpose`; `testExportedHistory`: `EXPOSE [1234/udp 2375/tcp 5000/tcp]`),
/// `VOLUME %v`, `SHELL %v`, `CMD %q`/`ENTRYPOINT %q` of the argv after SHELL,
/// `HEALTHCHECK %+v` of the config (convert_test.go `TestDispatchHealthcheckHistory`),
/// `WORKDIR` the absolute path; ONBUILD writes none (`dispatchOnbuild`). COPY shows
/// `--chown`/`--chmod` expanded (convert_copy.go `dispatchCopy`).
#[test]
fn divergence_history_metadata_instructions() {
    Case::new(
        "divergence_history_metadata_instructions",
        r#"FROM bb
MAINTAINER someone <a@b>
ARG V=1.0
ENV A=x B="y z" C=$V
LABEL "l1"="v 1" l2=$V
EXPOSE 8080 53/udp 7000-7001
VOLUME /data /logs
WORKDIR app
USER nobody
STOPSIGNAL SIGTERM
SHELL ["/bin/sh", "-ec"]
CMD echo "hi"
ENTRYPOINT ["/bin/echo", "a\tb"]
HEALTHCHECK --interval=1m30s --retries=3 CMD wget -q localhost || exit 1
ONBUILD RUN echo later
ARG M=0640
COPY --chown=1:2 --chmod=$M a /a
"#,
    )
    .file("a", "a")
    .history()
    .buildkit(|i: &mut Image| {
        // Where buildah 1.28 differs in the image itself: it makes WORKDIR's directory
        // as the USER set after it (BuildKit's `llb.Mkdir` takes the user at the step:
        // none, root), runs shell-form CMD through `/bin/sh -c` whatever SHELL says
        // (`withShell` takes the image's Shell) and keeps a port range as one key
        // (`dispatchExpose`: one key per port).
        i.file("app", Some("dir 0755 0:0"));
        i.set("Cmd", Some(serde_json::json!(["/bin/sh", "-ec", "echo \"hi\""])));
        i.set(
            "ExposedPorts",
            Some(serde_json::json!({"53/udp": {}, "7000/tcp": {}, "7001/tcp": {}, "8080/tcp": {}})),
        );
        i.set_history(&[
            "MAINTAINER someone <a@b> [empty_layer]",
            "ARG V=1.0 [empty_layer]",
            "ENV A=x B=y z C=1.0 [empty_layer]",
            "LABEL l1=v 1 l2=1.0 [empty_layer]",
            "EXPOSE [53/udp 7000/tcp 7001/tcp 8080/tcp] [empty_layer]",
            "VOLUME [/data /logs] [empty_layer]",
            "WORKDIR /app",
            "USER nobody [empty_layer]",
            "STOPSIGNAL SIGTERM [empty_layer]",
            "SHELL [/bin/sh -ec] [empty_layer]",
            r#"CMD ["/bin/sh" "-ec" "echo \"hi\""] [empty_layer]"#,
            r#"ENTRYPOINT ["/bin/echo" "a\tb"] [empty_layer]"#,
            "HEALTHCHECK {Test:[CMD-SHELL wget -q localhost || exit 1] Interval:1m30s Timeout:0s StartPeriod:0s StartInterval:0s Retries:3} [empty_layer]",
            "ARG M=0640 [empty_layer]",
            "COPY --chown=1:2 --chmod=0640 a /a # buildkit",
        ]);
    })
    .check();
}

/// A step that changes nothing still makes a layer, the empty tar: BuildKit commits
/// every RUN, COPY/ADD and WORKDIR (`commitToHistory` with `withLayer`), and its image
/// exporter keeps an empty diff as a layer (`exporter/containerimage/writer.go`
/// `normalizeLayersAndHistory` drops no layer; only a WORKDIR of `/` has none). keel
/// used to write no layer and mark the entry `empty_layer`.
#[test]
fn divergence_history_step_changing_nothing() {
    Case::new(
        "divergence_history_step_changing_nothing",
        "FROM bb\nRUN true\nCOPY empty/ /etc/\nWORKDIR /etc\nWORKDIR /\n",
    )
    .file("empty/", "")
    .history()
    .buildkit(|i: &mut Image| {
        i.set_history(&[
            "RUN /bin/sh -c true # buildkit",
            "COPY empty/ /etc/ # buildkit",
            "WORKDIR /etc",
            "WORKDIR / [empty_layer]",
        ]);
    })
    .check();
}

/// The empty layer is the same blob every time: an image with steps that change nothing
/// builds to the same digest twice (`--check-reproducible`: two scratch roots, no cache),
/// and the layer is the 1024-byte empty tar whose diff_id BuildKit's empty layers carry.
#[test]
fn empty_layer_is_reproducible() {
    if !crate::ready() {
        return;
    }
    let k = crate::common::Keel::new();
    k.ok(&["bootstrap", "busybox", "bb"]);
    let tmp = tempfile::tempdir().unwrap();
    let ctx = tmp.path();
    std::fs::write(ctx.join("Dockerfile"), "FROM bb\nRUN true\nWORKDIR /etc\n").unwrap();
    let dir = ctx.to_str().unwrap();
    k.ok(&["build", "-q", "--check-reproducible", dir]);
    k.ok(&["build", "-q", "-t", "e", dir]);
    let v: serde_json::Value = serde_json::from_str(&k.ok(&["inspect", "e"])).unwrap();
    let ids = v[0]["Config"]["rootfs"]["diff_ids"].as_array().unwrap();
    let empty = "sha256:5f70bf18a086007016e948b04aed3b82103a36bea41755b6cddfaf10ace3c6ef";
    assert_eq!(ids[ids.len() - 2], empty);
    assert_eq!(ids[ids.len() - 1], empty);
}
