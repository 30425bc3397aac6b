//! The data root: content-addressed blobs, unpacked layer snapshots, container dirs, and the
//! image metadata in redb.
//!
//! ```text
//! ROOT/state.redb              images (reference → record)
//! ROOT/blobs/sha256/<hex>      manifests, configs, compressed layers (verified)
//! ROOT/blobs/ingest/<hex>      a download in progress: only its verified prefix
//! ROOT/snapshots/<chain-id>/   one unpacked layer, shared by every image that has it
//! ROOT/containers/<id>/        bundle, overlay upper/work
//! ```

use std::io;
use std::path::{Path, PathBuf};

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

use crate::platform::Platform;

const IMAGES: TableDefinition<&str, &[u8]> = TableDefinition::new("images");

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerRecord {
    pub digest: String,
    pub diff_id: String,
    pub media_type: String,
    pub size: u64,
}

/// A pulled image, as `images` and `inspect` show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageRecord {
    /// The normalised reference (`docker.io/library/busybox:latest`).
    pub reference: String,
    /// What the reference resolved to: the index for a multi-arch image (Docker's RepoDigest).
    pub repo_digest: String,
    /// The platform manifest that was pulled.
    pub manifest_digest: String,
    /// The image config; its digest is the image id.
    pub config_digest: String,
    pub platform: Platform,
    pub layers: Vec<LayerRecord>,
    /// `chain_ids[i]` names the snapshot of layers 0..=i.
    pub chain_ids: Vec<String>,
    pub pulled: String,
}

impl ImageRecord {
    pub fn size(&self) -> u64 {
        self.layers.iter().map(|l| l.size).sum()
    }
    pub fn id(&self) -> &str {
        self.config_digest.trim_start_matches("sha256:")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("creating the data root {0}")]
    Create(PathBuf, #[source] io::Error),
    #[error("opening {0}")]
    Open(PathBuf, #[source] Box<redb::DatabaseError>),
    #[error("image metadata")]
    Db(#[source] Box<redb::Error>),
    #[error("image record of {0} is unreadable")]
    Record(String, #[source] serde_json::Error),
}

fn db_err(e: impl Into<redb::Error>) -> StoreError {
    StoreError::Db(Box::new(e.into()))
}

pub struct Store {
    pub root: PathBuf,
    db_path: PathBuf,
}

impl Store {
    /// Opens (creating if missing) the data root.
    pub fn open(root: &Path) -> Result<Store, StoreError> {
        for dir in ["blobs/sha256", "blobs/ingest", "snapshots", "containers"] {
            let d = root.join(dir);
            std::fs::create_dir_all(&d).map_err(|e| StoreError::Create(d, e))?;
        }
        let store = Store {
            root: root.to_path_buf(),
            db_path: root.join("state.redb"),
        };
        drop(store.db()?); // create it now, so a bad root fails at once
        Ok(store)
    }

    /// Opens the database for one operation. redb admits one process at a time, and several
    /// daemonless commands may share a root (two pulls at once): wait for the other's commit.
    fn db(&self) -> Result<Database, StoreError> {
        let t0 = std::time::Instant::now();
        loop {
            match Database::create(&self.db_path) {
                Ok(db) => return Ok(db),
                Err(redb::DatabaseError::DatabaseAlreadyOpen)
                    if t0.elapsed() < std::time::Duration::from_secs(60) =>
                {
                    std::thread::sleep(std::time::Duration::from_millis(5));
                }
                Err(e) => return Err(StoreError::Open(self.db_path.clone(), Box::new(e))),
            }
        }
    }

    pub fn blob_path(&self, digest: &str) -> PathBuf {
        self.root
            .join("blobs/sha256")
            .join(digest.trim_start_matches("sha256:"))
    }

    pub fn ingest_path(&self, digest: &str) -> PathBuf {
        self.root
            .join("blobs/ingest")
            .join(digest.trim_start_matches("sha256:"))
    }

    pub fn snapshot_path(&self, chain_id: &str) -> PathBuf {
        self.root
            .join("snapshots")
            .join(chain_id.trim_start_matches("sha256:"))
    }

    pub fn has_blob(&self, digest: &str) -> bool {
        self.blob_path(digest).is_file()
    }

    pub fn read_blob(&self, digest: &str) -> io::Result<Vec<u8>> {
        std::fs::read(self.blob_path(digest))
    }

    /// Records `image` under its reference, replacing an older record (one commit).
    pub fn put_image(&self, image: &ImageRecord) -> Result<(), StoreError> {
        let bytes = serde_json::to_vec(image)
            .map_err(|e| StoreError::Record(image.reference.clone(), e))?;
        let db = self.db()?;
        let tx = db.begin_write().map_err(db_err)?;
        {
            let mut t = tx.open_table(IMAGES).map_err(db_err)?;
            t.insert(image.reference.as_str(), bytes.as_slice())
                .map_err(db_err)?;
        }
        tx.commit().map_err(db_err)
    }

    pub fn remove_image(&self, reference: &str) -> Result<bool, StoreError> {
        let db = self.db()?;
        let tx = db.begin_write().map_err(db_err)?;
        let removed = {
            let mut t = tx.open_table(IMAGES).map_err(db_err)?;
            t.remove(reference).map_err(db_err)?.is_some()
        };
        tx.commit().map_err(db_err)?;
        Ok(removed)
    }

    pub fn images(&self) -> Result<Vec<ImageRecord>, StoreError> {
        let db = self.db()?;
        let tx = db.begin_read().map_err(db_err)?;
        let t = match tx.open_table(IMAGES) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            Err(e) => return Err(db_err(e)),
        };
        let mut out = Vec::new();
        for row in t.iter().map_err(db_err)? {
            let (k, v) = row.map_err(db_err)?;
            let rec = serde_json::from_slice(v.value())
                .map_err(|e| StoreError::Record(k.value().to_string(), e))?;
            out.push(rec);
        }
        Ok(out)
    }

    /// Removes every blob and snapshot no image (and no container dir's `lower` file) refers
    /// to. Returns (blobs, snapshots, bytes) removed. Partial downloads in `ingest` stay: a
    /// later pull resumes them.
    pub fn prune(&self) -> Result<(usize, usize, u64), StoreError> {
        let images = self.images()?;
        let mut blobs = std::collections::HashSet::new();
        let mut snaps = std::collections::HashSet::new();
        for i in &images {
            for d in [&i.repo_digest, &i.manifest_digest, &i.config_digest] {
                blobs.insert(d.trim_start_matches("sha256:").to_string());
            }
            for l in &i.layers {
                blobs.insert(l.digest.trim_start_matches("sha256:").to_string());
            }
            for c in &i.chain_ids {
                snaps.insert(c.trim_start_matches("sha256:").to_string());
            }
        }
        // Snapshots a container's overlay uses right now.
        for entry in std::fs::read_dir(self.root.join("containers"))
            .into_iter()
            .flatten()
            .flatten()
        {
            if let Ok(text) = std::fs::read_to_string(entry.path().join("lower")) {
                snaps.extend(
                    text.lines()
                        .map(|l| l.trim_start_matches("sha256:").to_string()),
                );
            }
        }
        let mut removed = (0, 0, 0u64);
        for entry in std::fs::read_dir(self.root.join("blobs/sha256"))
            .into_iter()
            .flatten()
            .flatten()
        {
            let name = entry.file_name().to_string_lossy().into_owned();
            if !blobs.contains(&name) {
                let size = entry.metadata().map(|m| m.len()).unwrap_or(0);
                if std::fs::remove_file(entry.path()).is_ok() {
                    removed.0 += 1;
                    removed.2 += size;
                }
            }
        }
        for entry in std::fs::read_dir(self.root.join("snapshots"))
            .into_iter()
            .flatten()
            .flatten()
        {
            let name = entry.file_name().to_string_lossy().into_owned();
            if !snaps.contains(&name) && std::fs::remove_dir_all(entry.path()).is_ok() {
                removed.1 += 1;
            }
        }
        Ok(removed)
    }

    pub fn image(&self, reference: &str) -> Result<Option<ImageRecord>, StoreError> {
        Ok(self
            .images()?
            .into_iter()
            .find(|i| i.reference == reference))
    }
}
