//! Pulling an image: resolve the reference (choosing a platform from an index), fetch config
//! and layers into the content store with digests verified while streaming, unpack each layer
//! into its snapshot (diff_id verified), and record the image last, in one commit — a pull
//! killed at any point leaves no image visible, only reusable blobs and snapshots.

use std::fs::File;
use std::io::{self, Read, Seek, Write};
use std::os::fd::AsRawFd;
use std::path::Path;

use crate::reference::Reference;
use serde::Deserialize;

use crate::platform::Platform;
use crate::registry::{Client, RegistryError, hex};
use crate::store::{ImageRecord, LayerRecord, Store, StoreError};
use crate::unpack::{self, Limits, UnpackError};

#[derive(Debug, thiserror::Error)]
pub enum PullError {
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{what} {digest}: not valid JSON: {source}")]
    Json {
        what: &'static str,
        digest: String,
        source: serde_json::Error,
    },
    #[error("{0}: unsupported manifest media type {1:?}")]
    MediaType(String, String),
    #[error("{reference}: no image for {want} in the index (it has: {have})")]
    NoPlatform {
        reference: String,
        want: String,
        have: String,
    },
    #[error("{reference} is a single-platform image for {have}, not the requested {want}")]
    WrongPlatform {
        reference: String,
        have: String,
        want: String,
    },
    #[error("the image config lists {diff_ids} diff_ids for {layers} layers")]
    LayerCount { diff_ids: usize, layers: usize },
    #[error("blob {digest}: downloaded content has digest sha256:{got}, size {size}")]
    BlobDigest {
        digest: String,
        got: String,
        size: u64,
    },
    #[error("layer {digest}: its content has diff_id {got}, but the image config says {want}")]
    DiffId {
        digest: String,
        want: String,
        got: String,
    },
    #[error("layer {digest}")]
    Unpack {
        digest: String,
        #[source]
        source: UnpackError,
    },
    #[error(
        "not enough disk space in {path}: the pull needs about {needed} bytes, {free} are free"
    )]
    NoSpace {
        path: String,
        needed: u64,
        free: u64,
    },
    #[error("{0}")]
    Io(String, #[source] io::Error),
}

/// A content descriptor in a manifest or index.
#[derive(Debug, Deserialize)]
pub struct Descriptor {
    #[serde(rename = "mediaType", default)]
    media_type: String,
    digest: String,
    #[serde(default)]
    size: u64,
    platform: Option<DescPlatform>,
}

#[derive(Debug, Deserialize)]
pub struct DescPlatform {
    os: String,
    architecture: String,
    variant: Option<String>,
}

/// An image manifest or index (OCI or Docker schema 2), as far as a pull reads it.
#[derive(Debug, Deserialize)]
pub struct Manifest {
    #[serde(rename = "mediaType", default)]
    media_type: Option<String>,
    config: Option<Descriptor>,
    #[serde(default)]
    layers: Vec<Descriptor>,
    manifests: Option<Vec<Descriptor>>,
}

#[derive(Deserialize)]
struct ConfigHead {
    #[serde(default)]
    os: String,
    #[serde(default)]
    architecture: String,
    variant: Option<String>,
    rootfs: RootFs,
}

#[derive(Deserialize)]
struct RootFs {
    diff_ids: Vec<String>,
}

/// What a pull reports as it goes.
pub enum Event<'a> {
    Resolved {
        digest: &'a str,
        platform: &'a Platform,
    },
    Warning(String),
    /// Bytes of a layer on disk so far (every 256 KiB or so).
    Downloading {
        digest: &'a str,
        have: u64,
        total: u64,
    },
    LayerExists {
        digest: &'a str,
    },
    LayerFetched {
        digest: &'a str,
        bytes: u64,
    },
    LayerUnpacked {
        digest: &'a str,
    },
}

pub struct PullOptions<'a> {
    /// Explicit `--platform`; otherwise `default_platform`.
    pub platform: Option<Platform>,
    pub default_platform: Platform,
    pub progress: &'a (dyn Fn(Event) + Sync),
    /// `--limit-rate`: bytes per second for the whole pull (all layers together).
    pub limit_rate: Option<Throttle>,
}

/// Keeps the bytes fetched by every layer thread under a rate.
pub struct Throttle {
    rate: u64,
    state: std::sync::Mutex<(std::time::Instant, u64)>,
}

impl Throttle {
    pub fn new(bytes_per_second: u64) -> Throttle {
        Throttle {
            rate: bytes_per_second.max(1),
            state: std::sync::Mutex::new((std::time::Instant::now(), 0)),
        }
    }

    /// Accounts `n` more bytes and sleeps until they are within the rate.
    fn took(&self, n: u64) {
        let wait = {
            let Ok(mut s) = self.state.lock() else { return };
            s.1 += n;
            let due = std::time::Duration::from_secs_f64(s.1 as f64 / self.rate as f64);
            due.saturating_sub(s.0.elapsed())
        };
        if !wait.is_zero() {
            std::thread::sleep(wait);
        }
    }
}

/// Parses manifest or index bytes (what `pull` does with what a registry sends).
pub fn parse_manifest(bytes: &[u8]) -> Result<Manifest, PullError> {
    parse(bytes, "manifest", "(input)")
}

fn parse<T: for<'de> Deserialize<'de>>(
    bytes: &[u8],
    what: &'static str,
    digest: &str,
) -> Result<T, PullError> {
    serde_json::from_slice(bytes).map_err(|source| PullError::Json {
        what,
        digest: digest.to_string(),
        source,
    })
}

const MANIFEST_MEDIA: [&str; 2] = [
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
];

pub fn pull(
    store: &Store,
    client: &Client,
    reference: &Reference,
    opts: &PullOptions,
) -> Result<ImageRecord, PullError> {
    let name = reference.whole();
    let top = client.manifest(reference)?;
    let mut head: Manifest = parse(&top.bytes, "manifest", &top.digest)?;
    let index = head.manifests.take();
    let is_index = index.is_some();
    let want = opts
        .platform
        .clone()
        .unwrap_or_else(|| opts.default_platform.clone());
    let (manifest, manifest_bytes, manifest_digest, mut platform) = match index {
        Some(list) => {
            let platforms: Vec<Platform> = list
                .iter()
                .map(|d| match &d.platform {
                    Some(p) => Platform::new(&p.os, &p.architecture, p.variant.as_deref()),
                    None => Platform::new("unknown", "unknown", None),
                })
                .collect();
            let i = want.best(&platforms).ok_or_else(|| PullError::NoPlatform {
                reference: name.clone(),
                want: want.to_string(),
                have: platforms
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", "),
            })?;
            let m = client.manifest_by(reference, &list[i].digest)?;
            save_blob(store, &top.digest, &top.bytes)?;
            let manifest: Manifest = parse(&m.bytes, "manifest", &m.digest)?;
            (manifest, m.bytes, m.digest, platforms[i].clone())
        }
        // A single manifest: already parsed.
        None => (head, top.bytes.clone(), top.digest.clone(), want.clone()),
    };
    let mt = manifest.media_type.clone().unwrap_or_default();
    if !mt.is_empty() && !MANIFEST_MEDIA.contains(&mt.as_str()) {
        return Err(PullError::MediaType(name, mt));
    }
    let config_desc = manifest
        .config
        .as_ref()
        .ok_or_else(|| PullError::MediaType(name.clone(), "a manifest without config".into()))?;
    check_space(store, &manifest.layers)?;
    let config = fetch_small(store, client, reference, &config_desc.digest)?;
    let head_cfg: ConfigHead = parse(&config, "image config", &config_desc.digest)?;
    let image_platform = Platform::new(
        &head_cfg.os,
        &head_cfg.architecture,
        head_cfg.variant.as_deref(),
    );
    if !is_index {
        if image_platform.score(&want).is_none() && want.score(&image_platform).is_none() {
            if opts.platform.is_some() {
                return Err(PullError::WrongPlatform {
                    reference: name,
                    have: image_platform.to_string(),
                    want: want.to_string(),
                });
            }
            (opts.progress)(Event::Warning(format!(
                "{name} is an image for {image_platform}, not this machine's {want}"
            )));
        }
        platform = image_platform;
    }
    (opts.progress)(Event::Resolved {
        digest: &manifest_digest,
        platform: &platform,
    });
    let diff_ids = head_cfg.rootfs.diff_ids;
    if diff_ids.len() != manifest.layers.len() {
        return Err(PullError::LayerCount {
            diff_ids: diff_ids.len(),
            layers: manifest.layers.len(),
        });
    }
    let chain_ids = chain_ids(&diff_ids);

    // Layers in parallel, a few at a time.
    let jobs: Vec<(usize, &Descriptor)> = manifest.layers.iter().enumerate().collect();
    let results: Vec<Result<(), PullError>> = std::thread::scope(|s| {
        let mut out = Vec::new();
        for chunk in jobs.chunks(3) {
            let handles: Vec<_> = chunk
                .iter()
                .map(|(i, d)| {
                    let (chain, diff) = (&chain_ids[*i], &diff_ids[*i]);
                    s.spawn(move || layer(store, client, reference, d, diff, chain, opts))
                })
                .collect();
            for h in handles {
                out.push(h.join().unwrap_or_else(|_| {
                    Err(PullError::Io(
                        "a layer thread panicked".into(),
                        io::Error::other("panic"),
                    ))
                }));
            }
        }
        out
    });
    for r in results {
        r?;
    }
    save_blob(store, &manifest_digest, &manifest_bytes)?;
    let record = ImageRecord {
        reference: name,
        repo_digest: reference.digest().map(str::to_string).unwrap_or(top.digest),
        manifest_digest,
        config_digest: config_desc.digest.clone(),
        platform,
        layers: manifest
            .layers
            .iter()
            .zip(&diff_ids)
            .map(|(d, diff)| LayerRecord {
                digest: d.digest.clone(),
                diff_id: diff.clone(),
                media_type: d.media_type.clone(),
                size: d.size,
            })
            .collect(),
        chain_ids,
        pulled: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
    };
    store.put_image(&record)?;
    Ok(record)
}

/// `chain[0] = diff[0]`, `chain[i] = sha256(chain[i-1] + " " + diff[i])`.
pub fn chain_ids(diff_ids: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for d in diff_ids {
        let next = match out.last() {
            None => d.clone(),
            Some(prev) => format!(
                "sha256:{}",
                crate::registry::sha256_hex(format!("{prev} {d}").as_bytes())
            ),
        };
        out.push(next);
    }
    out
}

fn free_bytes(path: &Path) -> Option<u64> {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).ok()?;
    // SAFETY: statvfs fills the struct; c is a valid C string.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    (unsafe { libc::statvfs(c.as_ptr(), &mut st) } == 0)
        .then(|| st.f_bavail as u64 * st.f_frsize as u64)
}

/// Refuses before the first blob byte when the missing layers (compressed, plus about twice
/// that unpacked) will not fit.
fn check_space(store: &Store, layers: &[Descriptor]) -> Result<(), PullError> {
    let needed: u64 = layers
        .iter()
        .filter(|d| !store.has_blob(&d.digest))
        .map(|d| d.size.saturating_mul(3))
        .sum();
    if let Some(free) = free_bytes(&store.root)
        && needed > free
    {
        return Err(PullError::NoSpace {
            path: store.root.display().to_string(),
            needed,
            free,
        });
    }
    Ok(())
}

pub fn save_blob(store: &Store, digest: &str, bytes: &[u8]) -> Result<(), PullError> {
    let path = store.blob_path(digest);
    if path.is_file() {
        return Ok(());
    }
    let tmp = store.ingest_path(digest).with_extension("small");
    std::fs::write(&tmp, bytes)
        .and_then(|()| std::fs::rename(&tmp, &path))
        .map_err(|e| PullError::Io(format!("writing {}", path.display()), e))
}

/// A config (small blob): from the store, or fetched, verified and stored.
fn fetch_small(
    store: &Store,
    client: &Client,
    reference: &Reference,
    digest: &str,
) -> Result<Vec<u8>, PullError> {
    if let Ok(b) = store.read_blob(digest) {
        return Ok(b);
    }
    let (mut r, _) = client.blob(reference, digest, 0)?;
    let mut bytes = Vec::new();
    r.by_ref()
        .take(16 << 20)
        .read_to_end(&mut bytes)
        .map_err(|e| PullError::Io(format!("reading blob {digest}"), e))?;
    let got = crate::registry::sha256_hex(&bytes);
    if format!("sha256:{got}") != digest {
        return Err(PullError::BlobDigest {
            digest: digest.to_string(),
            got,
            size: bytes.len() as u64,
        });
    }
    save_blob(store, digest, &bytes)?;
    Ok(bytes)
}

fn layer(
    store: &Store,
    client: &Client,
    reference: &Reference,
    d: &Descriptor,
    diff_id: &str,
    chain: &str,
    opts: &PullOptions,
) -> Result<(), PullError> {
    fetch_blob(store, client, reference, d, opts)?;
    if unpack_layer(store, &d.digest, d.size, diff_id, chain)? {
        (opts.progress)(Event::LayerUnpacked { digest: &d.digest });
    }
    Ok(())
}

/// Unpacks stored blob `digest` into the snapshot of `chain` unless it exists, checking that
/// its content hashes to `diff_id`. Returns whether it unpacked anything.
pub fn unpack_layer(
    store: &Store,
    digest: &str,
    size: u64,
    diff_id: &str,
    chain: &str,
) -> Result<bool, PullError> {
    let snap = store.snapshot_path(chain);
    if snap.is_dir() {
        return Ok(false);
    }
    let tmp = snap.with_extension(format!(
        "tmp-{}-{}",
        std::process::id(),
        crate::registry::hex(&diff_id.as_bytes()[7..11])
    ));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp)
        .map_err(|e| PullError::Io(format!("creating {}", tmp.display()), e))?;
    let blob = File::open(store.blob_path(digest))
        .map_err(|e| PullError::Io(format!("opening blob {digest}"), e))?;
    let result = unpack::unpack(blob, &tmp, Limits::for_size(size));
    let got = match result {
        Ok(g) => g,
        Err(source) => {
            let _ = std::fs::remove_dir_all(&tmp);
            return Err(PullError::Unpack {
                digest: digest.to_string(),
                source,
            });
        }
    };
    if got != diff_id {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(PullError::DiffId {
            digest: digest.to_string(),
            want: diff_id.to_string(),
            got,
        });
    }
    match std::fs::rename(&tmp, &snap) {
        Ok(()) => {}
        // Another pull unpacked the same layer first: theirs is as good as ours.
        Err(_) if snap.is_dir() => {
            let _ = std::fs::remove_dir_all(&tmp);
        }
        Err(e) => return Err(PullError::Io(format!("renaming {}", tmp.display()), e)),
    }
    Ok(true)
}

/// Downloads blob `d` into the store unless present, resuming an interrupted download from its
/// verified prefix. The ingest file is locked, so concurrent pulls fetch a shared blob once.
fn fetch_blob(
    store: &Store,
    client: &Client,
    reference: &Reference,
    d: &Descriptor,
    opts: &PullOptions,
) -> Result<(), PullError> {
    if store.has_blob(&d.digest) {
        (opts.progress)(Event::LayerExists { digest: &d.digest });
        return Ok(());
    }
    let ingest = store.ingest_path(&d.digest);
    let io_err = |what: &str, e| PullError::Io(format!("{what} {}", ingest.display()), e);
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&ingest)
        .map_err(|e| io_err("opening", e))?;
    // SAFETY: flock on an fd we own; blocks until a concurrent pull of this blob is done.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } < 0 {
        return Err(io_err("locking", io::Error::last_os_error()));
    }
    if store.has_blob(&d.digest) {
        let _ = std::fs::remove_file(&ingest);
        (opts.progress)(Event::LayerExists { digest: &d.digest });
        return Ok(());
    }
    // Re-hash the verified prefix a killed or cut download left.
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    let mut have = 0u64;
    {
        let mut buf = vec![0u8; 1 << 16];
        file.rewind().map_err(|e| io_err("reading", e))?;
        loop {
            let n = file.read(&mut buf).map_err(|e| io_err("reading", e))?;
            if n == 0 {
                break;
            }
            ctx.update(&buf[..n]);
            have += n as u64;
        }
    }
    let mut fetched = 0u64;
    let mut attempts = 0;
    while have < d.size || d.size == 0 {
        attempts += 1;
        let (mut body, start) = client.blob(reference, &d.digest, have)?;
        if start != have {
            // The registry ignored the range: start over.
            file.set_len(0).map_err(|e| io_err("truncating", e))?;
            ctx = ring::digest::Context::new(&ring::digest::SHA256);
            have = 0;
        }
        file.seek(io::SeekFrom::Start(have))
            .map_err(|e| io_err("seeking", e))?;
        let mut buf = vec![0u8; 1 << 16];
        let cut = loop {
            match body.read(&mut buf) {
                Ok(0) => break None,
                Ok(n) => {
                    file.write_all(&buf[..n])
                        .map_err(|e| io_err("writing", e))?;
                    ctx.update(&buf[..n]);
                    have += n as u64;
                    fetched += n as u64;
                    if let Some(t) = &opts.limit_rate {
                        t.took(n as u64);
                    }
                    if have / (256 << 10) != (have - n as u64) / (256 << 10) {
                        (opts.progress)(Event::Downloading {
                            digest: &d.digest,
                            have,
                            total: d.size,
                        });
                    }
                }
                Err(e) => break Some(e),
            }
        };
        match cut {
            None => break,
            Some(_) if attempts < 5 => continue, // resume from `have`
            Some(e) => return Err(io_err("downloading", e)),
        }
    }
    let got = hex(ctx.finish().as_ref());
    if format!("sha256:{got}") != d.digest || (d.size != 0 && have != d.size) {
        drop(file);
        let _ = std::fs::remove_file(&ingest);
        return Err(PullError::BlobDigest {
            digest: d.digest.clone(),
            got,
            size: have,
        });
    }
    file.sync_all().map_err(|e| io_err("syncing", e))?;
    std::fs::rename(&ingest, store.blob_path(&d.digest)).map_err(|e| io_err("storing", e))?;
    (opts.progress)(Event::LayerFetched {
        digest: &d.digest,
        bytes: fetched,
    });
    Ok(())
}
