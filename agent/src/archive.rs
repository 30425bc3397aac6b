//! `save` and `load`: images as tar archives for offline devices, in the OCI image layout
//! (`oci-archive`) or Docker's `docker save` format (`docker-archive`). Blobs keep their
//! digests, so an image saved and loaded keeps its id (config digest), and in OCI form its
//! manifest digest too.

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Component, Path, PathBuf};

use serde_json::{Value, json};

use crate::platform::Platform;
use crate::pull::{self, PullError, chain_ids};
use crate::registry::sha256_hex;
use crate::store::{ImageRecord, LayerRecord, Store, StoreError};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Oci,
    Docker,
}

#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("{0}")]
    Io(String, #[source] io::Error),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Pull(#[from] PullError),
    #[error("{0} in the archive is not valid JSON: {1}")]
    Json(String, serde_json::Error),
    #[error(
        "the archive has neither oci-layout nor manifest.json: not an OCI or Docker image archive"
    )]
    Unknown,
    #[error("blob {0} in the archive does not match its digest")]
    Digest(String),
    #[error("the archive entry {0:?} is not a plain relative path")]
    Path(String),
    #[error("{0}")]
    Invalid(String),
}

fn io_err(what: impl Into<String>) -> impl FnOnce(io::Error) -> ArchiveError {
    let what = what.into();
    move |e| ArchiveError::Io(what, e)
}

fn add_bytes<W: Write>(
    tar: &mut tar::Builder<W>,
    path: &str,
    bytes: &[u8],
) -> Result<(), ArchiveError> {
    let mut h = tar::Header::new_gnu();
    h.set_size(bytes.len() as u64);
    h.set_mode(0o644);
    h.set_mtime(0);
    h.set_cksum();
    tar.append_data(&mut h, path, bytes)
        .map_err(io_err(format!("writing {path}")))
}

fn add_file<W: Write>(
    tar: &mut tar::Builder<W>,
    path: &str,
    file: &Path,
) -> Result<(), ArchiveError> {
    let mut f = File::open(file).map_err(io_err(format!("opening {}", file.display())))?;
    let len = f
        .metadata()
        .map_err(io_err(format!("reading {}", file.display())))?
        .len();
    let mut h = tar::Header::new_gnu();
    h.set_size(len);
    h.set_mode(0o644);
    h.set_mtime(0);
    h.set_cksum();
    tar.append_data(&mut h, path, &mut f)
        .map_err(io_err(format!("writing {path}")))
}

fn hex(d: &str) -> &str {
    d.trim_start_matches("sha256:")
}

/// Writes `images` to `out` as one archive.
pub fn save(
    store: &Store,
    images: &[ImageRecord],
    format: Format,
    out: impl Write,
) -> Result<(), ArchiveError> {
    let mut tar = tar::Builder::new(out);
    match format {
        Format::Oci => {
            let mut manifests = Vec::new();
            let mut written = std::collections::HashSet::new();
            for img in images {
                let manifest = store
                    .read_blob(&img.manifest_digest)
                    .map_err(io_err("reading a manifest"))?;
                let media = serde_json::from_slice::<Value>(&manifest)
                    .ok()
                    .and_then(|m| m["mediaType"].as_str().map(str::to_string))
                    .unwrap_or_else(|| "application/vnd.oci.image.manifest.v1+json".into());
                let tag = img
                    .reference
                    .rsplit_once(':')
                    .map(|(_, t)| t)
                    .unwrap_or("latest");
                manifests.push(json!({
                    "mediaType": media,
                    "digest": img.manifest_digest,
                    "size": manifest.len(),
                    "annotations": {
                        "org.opencontainers.image.ref.name": tag,
                        "io.containerd.image.name": img.reference,
                    },
                }));
                let blobs = [&img.manifest_digest, &img.config_digest]
                    .into_iter()
                    .chain(img.layers.iter().map(|l| &l.digest));
                for d in blobs {
                    if written.insert(d.clone()) {
                        add_file(
                            &mut tar,
                            &format!("blobs/sha256/{}", hex(d)),
                            &store.blob_path(d),
                        )?;
                    }
                }
            }
            add_bytes(&mut tar, "oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#)?;
            let index = json!({"schemaVersion": 2, "manifests": manifests});
            add_bytes(&mut tar, "index.json", index.to_string().as_bytes())?;
        }
        Format::Docker => {
            let mut entries = Vec::new();
            let mut written = std::collections::HashSet::new();
            for img in images {
                let config_name = format!("{}.json", hex(&img.config_digest));
                if written.insert(config_name.clone()) {
                    add_file(&mut tar, &config_name, &store.blob_path(&img.config_digest))?;
                }
                let mut layers = Vec::new();
                for l in &img.layers {
                    // docker-archive layers are the uncompressed diffs: their digest is the diff_id.
                    let name = format!("{}/layer.tar", hex(&l.diff_id));
                    if written.insert(name.clone()) {
                        let tmp = store.ingest_path(&l.diff_id).with_extension("save");
                        decompress_to(&store.blob_path(&l.digest), &tmp)?;
                        let r = add_file(&mut tar, &name, &tmp);
                        let _ = std::fs::remove_file(&tmp);
                        r?;
                    }
                    layers.push(name);
                }
                entries.push(
                    json!({"Config": config_name, "RepoTags": [img.reference], "Layers": layers}),
                );
            }
            add_bytes(
                &mut tar,
                "manifest.json",
                Value::Array(entries).to_string().as_bytes(),
            )?;
        }
    }
    tar.into_inner()
        .and_then(|mut w| w.flush())
        .map_err(io_err("finishing the archive"))
}

fn decompress_to(blob: &Path, out: &Path) -> Result<(), ArchiveError> {
    let f = File::open(blob).map_err(io_err(format!("opening {}", blob.display())))?;
    let mut r = std::io::BufReader::new(f);
    let head = std::io::BufRead::fill_buf(&mut r)
        .map_err(io_err("reading a layer"))?
        .to_vec();
    let mut reader: Box<dyn Read> =
        if head.starts_with(&[0x1f, 0x8b]) {
            Box::new(flate2::read::MultiGzDecoder::new(r))
        } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Box::new(ruzstd::decoding::StreamingDecoder::new(r).map_err(|e| {
                ArchiveError::Io("reading a zstd layer".into(), io::Error::other(e))
            })?)
        } else {
            Box::new(r)
        };
    let mut w = File::create(out).map_err(io_err(format!("creating {}", out.display())))?;
    io::copy(&mut reader, &mut w).map_err(io_err("decompressing a layer"))?;
    Ok(())
}

/// Loads every image of the archive `input`; returns their records.
pub fn load(store: &Store, input: impl Read) -> Result<Vec<ImageRecord>, ArchiveError> {
    let tmp = store
        .root
        .join("blobs/ingest")
        .join(format!("load-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).map_err(io_err(format!("creating {}", tmp.display())))?;
    let result = extract(input, &tmp).and_then(|()| {
        if tmp.join("oci-layout").exists() {
            load_oci(store, &tmp)
        } else if tmp.join("manifest.json").exists() {
            load_docker(store, &tmp)
        } else {
            Err(ArchiveError::Unknown)
        }
    });
    let _ = std::fs::remove_dir_all(&tmp);
    result
}

/// Extracts regular files and directories only, at plain relative paths.
fn extract(input: impl Read, dest: &Path) -> Result<(), ArchiveError> {
    let mut ar = tar::Archive::new(input);
    for entry in ar.entries().map_err(io_err("reading the archive"))? {
        let mut entry = entry.map_err(io_err("reading the archive"))?;
        let path = entry
            .path()
            .map_err(io_err("reading the archive"))?
            .into_owned();
        if path
            .components()
            .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir))
        {
            return Err(ArchiveError::Path(path.display().to_string()));
        }
        let target = dest.join(&path);
        match entry.header().entry_type() {
            tar::EntryType::Directory => {
                std::fs::create_dir_all(&target)
                    .map_err(io_err(format!("creating {}", target.display())))?;
            }
            tar::EntryType::Regular => {
                if let Some(p) = target.parent() {
                    std::fs::create_dir_all(p)
                        .map_err(io_err(format!("creating {}", p.display())))?;
                }
                let mut f = File::create(&target)
                    .map_err(io_err(format!("creating {}", target.display())))?;
                io::copy(&mut entry, &mut f)
                    .map_err(io_err(format!("writing {}", target.display())))?;
            }
            tar::EntryType::Symlink => {
                // docker save links identical layers; keep the link only if it stays inside.
                let link = entry
                    .link_name()
                    .ok()
                    .flatten()
                    .map(|l| l.into_owned())
                    .unwrap_or_default();
                if link.is_absolute() {
                    return Err(ArchiveError::Path(link.display().to_string()));
                }
                let resolved = target.parent().unwrap_or(dest).join(&link);
                if let Some(p) = target.parent() {
                    std::fs::create_dir_all(p)
                        .map_err(io_err(format!("creating {}", p.display())))?;
                }
                if resolved.canonicalize().is_ok_and(|r| r.starts_with(dest)) {
                    std::fs::copy(&resolved, &target)
                        .map_err(io_err(format!("copying {}", link.display())))?;
                }
            }
            _ => {}
        }
    }
    Ok(())
}

fn read_json(path: &Path) -> Result<Value, ArchiveError> {
    let bytes = std::fs::read(path).map_err(io_err(format!("reading {}", path.display())))?;
    serde_json::from_slice(&bytes).map_err(|e| ArchiveError::Json(path.display().to_string(), e))
}

/// Moves `file` into the store as a blob after checking it hashes to `digest` (or, with no
/// digest given, under its own hash). Returns (digest, size).
fn import_blob(
    store: &Store,
    file: &Path,
    digest: Option<&str>,
) -> Result<(String, u64), ArchiveError> {
    let mut f = File::open(file).map_err(io_err(format!("opening {}", file.display())))?;
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    let mut buf = vec![0u8; 1 << 16];
    let mut size = 0u64;
    loop {
        let n = f
            .read(&mut buf)
            .map_err(io_err(format!("reading {}", file.display())))?;
        if n == 0 {
            break;
        }
        ctx.update(&buf[..n]);
        size += n as u64;
    }
    let got = format!("sha256:{}", crate::registry::hex(ctx.finish().as_ref()));
    if digest.is_some_and(|d| d != got) {
        return Err(ArchiveError::Digest(digest.unwrap_or_default().to_string()));
    }
    let dest = store.blob_path(&got);
    if !dest.exists() {
        std::fs::rename(file, &dest)
            .or_else(|_| std::fs::copy(file, &dest).map(drop))
            .map_err(io_err(format!("storing {got}")))?;
    }
    Ok((got, size))
}

fn platform_of(config: &Value) -> Platform {
    Platform::new(
        config["os"].as_str().unwrap_or("linux"),
        config["architecture"].as_str().unwrap_or("amd64"),
        config["variant"].as_str(),
    )
}

fn diff_ids(config: &Value) -> Vec<String> {
    config["rootfs"]["diff_ids"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|d| d.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

fn record(
    store: &Store,
    reference: String,
    repo_digest: String,
    manifest_digest: String,
    config_digest: String,
    config: &Value,
    layers: Vec<LayerRecord>,
) -> Result<ImageRecord, ArchiveError> {
    let ids = diff_ids(config);
    if ids.len() != layers.len() {
        return Err(ArchiveError::Invalid(format!(
            "{reference}: {} diff_ids for {} layers",
            ids.len(),
            layers.len()
        )));
    }
    let chains = chain_ids(&ids);
    for (l, c) in layers.iter().zip(&chains) {
        pull::unpack_layer(store, &l.digest, l.size, &l.diff_id, c)?;
    }
    let rec = ImageRecord {
        reference,
        repo_digest,
        manifest_digest,
        config_digest,
        platform: platform_of(config),
        layers,
        chain_ids: chains,
        pulled: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
    };
    store.put_image(&rec)?;
    Ok(rec)
}

fn normalize(name: &str) -> String {
    name.parse::<crate::reference::Reference>()
        .map(|r| r.whole())
        .unwrap_or_else(|_| format!("localhost/{name}"))
}

fn load_oci(store: &Store, dir: &Path) -> Result<Vec<ImageRecord>, ArchiveError> {
    let index = read_json(&dir.join("index.json"))?;
    let blob = |d: &str| dir.join("blobs/sha256").join(hex(d));
    let mut out = Vec::new();
    for m in index["manifests"].as_array().cloned().unwrap_or_default() {
        let digest = m["digest"].as_str().unwrap_or_default().to_string();
        let manifest = read_json(&blob(&digest))?;
        if manifest.get("manifests").is_some() {
            return Err(ArchiveError::Invalid(
                "nested image indexes in archives are not supported yet".into(),
            ));
        }
        let name = m["annotations"]["io.containerd.image.name"]
            .as_str()
            .map(str::to_string)
            .or_else(|| {
                m["annotations"]["org.opencontainers.image.ref.name"]
                    .as_str()
                    .map(|t| format!("localhost/loaded:{t}"))
            })
            .unwrap_or_else(|| format!("localhost/loaded:{}", &hex(&digest)[..12]));
        let config_digest = manifest["config"]["digest"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let config = read_json(&blob(&config_digest))?;
        let ids = diff_ids(&config);
        let mut layers = Vec::new();
        for (i, l) in manifest["layers"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .enumerate()
        {
            let d = l["digest"].as_str().unwrap_or_default();
            let (d, size) = import_blob(store, &blob(d), Some(d))?;
            layers.push(LayerRecord {
                digest: d,
                diff_id: ids.get(i).cloned().unwrap_or_default(),
                media_type: l["mediaType"].as_str().unwrap_or_default().to_string(),
                size,
            });
        }
        import_blob(store, &blob(&config_digest), Some(&config_digest))?;
        import_blob(store, &blob(&digest), Some(&digest))?;
        out.push(record(
            store,
            normalize(&name),
            digest.clone(),
            digest,
            config_digest,
            &config,
            layers,
        )?);
    }
    Ok(out)
}

fn load_docker(store: &Store, dir: &Path) -> Result<Vec<ImageRecord>, ArchiveError> {
    let manifest = read_json(&dir.join("manifest.json"))?;
    let mut out = Vec::new();
    for entry in manifest.as_array().cloned().unwrap_or_default() {
        let config_path: PathBuf = dir.join(entry["Config"].as_str().unwrap_or_default());
        let config = read_json(&config_path)?;
        let config_bytes = std::fs::read(&config_path).map_err(io_err("reading the config"))?;
        let ids = diff_ids(&config);
        let mut layers = Vec::new();
        let mut descs = Vec::new();
        for (i, l) in entry["Layers"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .enumerate()
        {
            let path = dir.join(l.as_str().unwrap_or_default());
            let gz = std::fs::read(&path)
                .map(|b| b.starts_with(&[0x1f, 0x8b]))
                .unwrap_or(false);
            let (d, size) = import_blob(store, &path, None)?;
            let media = if gz {
                "application/vnd.docker.image.rootfs.diff.tar.gzip"
            } else {
                "application/vnd.docker.image.rootfs.diff.tar"
            };
            descs.push(json!({"mediaType": media, "size": size, "digest": d}));
            layers.push(LayerRecord {
                digest: d,
                diff_id: ids.get(i).cloned().unwrap_or_default(),
                media_type: media.to_string(),
                size,
            });
        }
        let config_digest = format!("sha256:{}", sha256_hex(&config_bytes));
        pull::save_blob(store, &config_digest, &config_bytes)?;
        // docker-archive has no manifest: make the schema-2 manifest a registry would hold.
        let m = json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
            "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "size": config_bytes.len(), "digest": config_digest},
            "layers": descs,
        })
        .to_string();
        let manifest_digest = format!("sha256:{}", sha256_hex(m.as_bytes()));
        pull::save_blob(store, &manifest_digest, m.as_bytes())?;
        let tags: Vec<String> = entry["RepoTags"]
            .as_array()
            .map(|t| {
                t.iter()
                    .filter_map(|x| x.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        let names = if tags.is_empty() {
            vec![format!("localhost/loaded:{}", &hex(&config_digest)[..12])]
        } else {
            tags
        };
        for name in names {
            out.push(record(
                store,
                normalize(&name),
                manifest_digest.clone(),
                manifest_digest.clone(),
                config_digest.clone(),
                &config,
                layers.clone(),
            )?);
        }
    }
    Ok(out)
}
