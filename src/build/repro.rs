//! Explaining a reproducibility failure: the first thing that differs between two builds
//! of the same inputs — a layer entry (path, metadata or content) or a config field.
use std::collections::BTreeMap;
use std::io::Read;

use crate::store::{ImageRecord, Store, StoreError};

/// path → (type, mode, uid, gid, mtime, size, link, content digest) of a layer's entries.
fn entries(
    store: &Store,
    rec: &ImageRecord,
    i: usize,
) -> Result<BTreeMap<String, String>, StoreError> {
    let l = &rec.manifest.layers()[i];
    let f = store.open_blob(l.digest())?;
    let r = crate::layer::decompressed(f).map_err(|e| StoreError::BadDocument {
        what: "layer",
        digest: l.digest().clone(),
        why: e.to_string(),
    })?;
    let mut out = BTreeMap::new();
    let mut ar = tar::Archive::new(r);
    let bad = |e: std::io::Error| StoreError::BadDocument {
        what: "layer",
        digest: l.digest().clone(),
        why: e.to_string(),
    };
    for e in ar.entries().map_err(bad)? {
        let mut e = e.map_err(bad)?;
        let h = e.header().clone();
        let path = String::from_utf8_lossy(&e.path_bytes()).into_owned();
        let link = e
            .link_name_bytes()
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default();
        let mut body = Vec::new();
        e.read_to_end(&mut body).map_err(bad)?;
        out.insert(
            path,
            format!(
                "type={:?} mode={:o} uid={} gid={} mtime={} size={} link={link} content={}",
                h.entry_type(),
                h.mode().unwrap_or(0),
                h.uid().unwrap_or(0),
                h.gid().unwrap_or(0),
                h.mtime().unwrap_or(0),
                body.len(),
                crate::digest::of_bytes(&body)
            ),
        );
    }
    Ok(out)
}

/// A one-line description of the first difference between two images.
pub fn first_difference(
    sa: &Store,
    a: &ImageRecord,
    sb: &Store,
    b: &ImageRecord,
) -> Result<String, StoreError> {
    let (la, lb) = (a.manifest.layers(), b.manifest.layers());
    if la.len() != lb.len() {
        return Ok(format!(
            "the builds made {} and {} layers",
            la.len(),
            lb.len()
        ));
    }
    for i in 0..la.len() {
        if la[i].digest() == lb[i].digest() {
            continue;
        }
        let (ea, eb) = (entries(sa, a, i)?, entries(sb, b, i)?);
        for (path, va) in &ea {
            match eb.get(path) {
                None => return Ok(format!("layer {i}: {path} is only in the first build")),
                Some(vb) if vb != va => {
                    return Ok(format!("layer {i}: {path} differs: {va} vs {vb}"))
                }
                _ => {}
            }
        }
        if let Some(p) = eb.keys().find(|p| !ea.contains_key(*p)) {
            return Ok(format!("layer {i}: {p} is only in the second build"));
        }
        return Ok(format!(
            "layer {i}: same entries, different order or tar headers"
        ));
    }
    let ca: serde_json::Value = sa.read_json("config", a.id())?;
    let cb: serde_json::Value = sb.read_json("config", b.id())?;
    for k in ["created", "config", "history", "rootfs"] {
        if ca[k] != cb[k] {
            return Ok(format!("config field {k} differs: {} vs {}", ca[k], cb[k]));
        }
    }
    Ok("the manifests differ".into())
}
