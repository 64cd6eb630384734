//! The slug as an image: the stack's run image plus one layer holding `/app` (the
//! compiled app, with the merged Procfile) and `/keel/launch` (the launcher). The layer
//! is packed like every keel layer (sorted, mtimes clamped to `SOURCE_DATE_EPOCH` or 0),
//! so the same slug gives the same bytes; the image goes through `image::commit_image`
//! (via `build::exec::commit`), the one writer of configs and manifests.
use std::collections::BTreeMap;
use std::path::Path;

use super::release::{self, Release};
use super::{BuildpackError, Fetched, Plan};
use crate::build::exec::State;
use crate::image::StoredLayer;
use crate::store::{ImageRecord, Store};
use crate::sys::hostfs;

/// Labels every buildpack image carries.
pub const LABEL_BUILDPACKS: &str = "io.keel.buildpacks";
pub const LABEL_PROCESSES: &str = "io.keel.processes";
pub const LABEL_STACK: &str = "io.keel.stack";

/// The launcher's path in the image.
pub const LAUNCHER: &str = "/keel/launch";

/// The record of which buildpacks made the image, as the label holds it (JSON).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct UsedBuildpack {
    #[serde(flatten)]
    pub fetched: Fetched,
    /// What its `bin/detect` called the app.
    pub detected: String,
}

/// The image's Env: the run image's, then the buildpacks' `config_vars`, then the
/// user's config vars (`--env`), a later key replacing an earlier one.
pub fn image_env(
    base: &[String],
    config_vars: &BTreeMap<String, String>,
    user: &BTreeMap<String, String>,
) -> Vec<String> {
    let mut out: Vec<String> = base.to_vec();
    for (k, v) in config_vars.iter().chain(user) {
        let entry = format!("{k}={v}");
        match out
            .iter()
            .position(|e| e.split('=').next() == Some(k.as_str()))
        {
            Some(i) => out[i] = entry,
            None => out.push(entry),
        }
    }
    out
}

/// Packs `app` (the compiled BUILD_DIR, the merged Procfile written into it) and the
/// launcher into one layer.
fn pack(store: &Store, app: &Path, rel: &Release) -> Result<StoredLayer, BuildpackError> {
    use std::os::unix::fs::PermissionsExt;
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| BuildpackError::Io {
            path: path.clone(),
            source,
        }
    };
    let procfile = app.join("Procfile");
    hostfs::write(&procfile, release::procfile_text(&rel.processes)).map_err(io(&procfile))?;
    let staging = hostfs::scratch_dir_in(&store.tmp_dir(), "slug").map_err(io(&store.tmp_dir()))?;
    let (tree, empty) = (staging.path().join("tree"), staging.path().join("empty"));
    let keel = tree.join("keel");
    for d in [&keel, &empty] {
        hostfs::create_dir_all(d).map_err(io(d))?;
    }
    let launch = keel.join("launch");
    hostfs::write(&launch, super::shipped::LAUNCHER).map_err(io(&launch))?;
    let dirs = [(&tree, 0o755), (&keel, 0o755), (&launch, 0o755)];
    for (p, mode) in dirs {
        hostfs::set_permissions(p, std::fs::Permissions::from_mode(mode)).map_err(io(p))?;
    }
    // The app moves in (same filesystem): the slug is not copied again.
    hostfs::rename(app, tree.join("app")).map_err(io(app))?;
    let changes = crate::layer::diff::diff_trees(&empty, &tree)?;
    let epoch = crate::image::reproducible_time()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let mut blob = store.blob_writer()?;
    let opts = crate::layer::pack::PackOptions {
        epoch: Some(epoch),
        ..Default::default()
    };
    crate::layer::pack::pack(&changes, &tree, &mut blob, &opts)?;
    let (digest, size) = blob.commit(None)?;
    Ok(StoredLayer::uncompressed(digest, size))
}

/// Stores the image: run image + slug layer, the launcher as Entrypoint (`web` by
/// default), config vars as Env, the buildpacks and process types as labels; tagged
/// `plan.name`.
pub fn commit(
    store: &Store,
    plan: &Plan,
    run_image: &State,
    app: &Path,
    rel: &Release,
    used: &[(Fetched, String)],
) -> Result<ImageRecord, BuildpackError> {
    let layer = pack(store, app, rel)?;
    let mut state = run_image.clone();
    let cfg = &mut state.config.config;
    cfg.env = Some(image_env(cfg.env_list(), &rel.config_vars, &plan.env));
    cfg.entrypoint = Some(vec![LAUNCHER.to_string()]);
    cfg.cmd = Some(vec!["web".to_string()]);
    cfg.working_dir = Some("/app".to_string());
    if rel.processes.contains_key("web") {
        // The launcher's default PORT; `keel run -P` publishes it.
        let exposed = cfg.exposed_ports.get_or_insert_with(Default::default);
        exposed.insert("5000/tcp".into(), Default::default());
    }
    let used: Vec<UsedBuildpack> = used
        .iter()
        .map(|(f, d)| UsedBuildpack {
            fetched: f.clone(),
            detected: d.clone(),
        })
        .collect();
    let labels = vec![
        (
            LABEL_BUILDPACKS.to_string(),
            serde_json::to_string(&used).unwrap_or_default(),
        ),
        (
            LABEL_PROCESSES.to_string(),
            rel.processes.keys().cloned().collect::<Vec<_>>().join(","),
        ),
        (LABEL_STACK.to_string(), plan.stack.clone()),
    ];
    let names =
        crate::reference::ImageRef::parse(&plan.name).map_err(|e| BuildpackError::Image {
            image: plan.name.clone(),
            why: e.to_string(),
        })?;
    let created_by = format!(
        "keel buildpack build ({})",
        used.iter()
            .map(|u| u.fetched.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    );
    state.config.rootfs.diff_ids.push(layer.diff_id.to_string());
    state.layers.push(layer);
    state.config.history.push(crate::image::config::History {
        created_by: Some(created_by),
        ..Default::default()
    });
    let created = crate::image::rfc3339(crate::image::reproducible_time());
    Ok(crate::build::exec::commit(
        store,
        &state,
        &created,
        &labels,
        std::slice::from_ref(&names),
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_config_vars_win_over_buildpacks_over_the_run_image() {
        let base = vec!["PATH=/usr/bin:/bin".to_string(), "LANG=C".to_string()];
        let bp: BTreeMap<String, String> = [
            ("LANG".to_string(), "C.UTF-8".to_string()),
            ("A".into(), "bp".into()),
        ]
        .into();
        let user: BTreeMap<String, String> = [("A".to_string(), "user".to_string())].into();
        assert_eq!(
            image_env(&base, &bp, &user),
            ["PATH=/usr/bin:/bin", "LANG=C.UTF-8", "A=user"]
        );
    }
}
