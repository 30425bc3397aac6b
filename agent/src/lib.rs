//! skiff-agent: the device daemon, its client verbs and the `skiff` multi-call binary.
//!
//! - [`board`]    board configurations (`board-configs/*.toml`): target, platform, budgets
//! - [`platform`] image platforms and choosing one from an index
//! - [`reference`] image references with Docker's normalisation
//! - [`registry`] the OCI distribution client (auth, manifests, resumable blobs)
//! - [`store`]    the data root: blobs, snapshots, image records in redb
//! - [`unpack`]   a layer tar → its snapshot, hostile entries refused
//! - [`pull`]     resolve, fetch, verify, unpack, record
//! - [`bundle`]   image config + run options → runtime config.json (Docker's defaults)
//! - [`archive`]  save/load as OCI or Docker image archives
//! - [`merge`]    the copy storage driver (snapshots merged into a real directory)
//! - [`client`]   the client verbs, daemonless on a data root
//!
//! The daemon, supervisor and MQTT link arrive with their issues.

pub mod archive;
pub mod board;
pub mod bundle;
pub mod client;
pub mod merge;
pub mod platform;
pub mod pull;
pub mod reference;
pub mod registry;
pub mod store;
pub mod unpack;

pub const USAGE: &str = "\
usage: skiff [--root DIR] [--config DIR] [--certs-dir DIR]… [--insecure-registry HOST:PORT]…
             [--storage-driver overlay|copy] [--board FILE] COMMAND
  pull [--platform P] [--limit-rate N] [-q] IMAGE   fetch an image (N bytes/s: 500k, 2m)
  images [--digests] [--format json]      list images
  image inspect IMAGE…                    details as JSON
  image prune                             remove blobs and snapshots no image uses
  rmi IMAGE…                              remove images (blobs stay until image prune)
  save -o FILE [--format oci|docker] IMAGE…   write images to an archive
  load -i FILE                            read images from an OCI or Docker archive
  run [--rm] [--platform P] [-e K=V] [-u USER] [-w DIR] [--entrypoint E] [--network host|none] IMAGE [CMD…]
                                          run a container in the foreground
  bundle -o DIR [run flags] IMAGE [CMD…]  write that container as an OCI bundle (config + rootfs)
  runtime …                               the runc-compatible OCI runtime (also as skiff-runc)
  --version                               version, target and commit
--root (or SKIFF_ROOT) is the data root, default /var/lib/skiff; --config (or DOCKER_CONFIG) the
directory of Docker's config.json with registry credentials; --certs-dir (default
/etc/skiff/certs.d, then /etc/docker/certs.d) holds HOST:PORT/ca.crt for private registries;
--board (or SKIFF_BOARD, default /etc/skiff/board.toml if present) names the board config whose
platform multi-arch images are pulled for.
";

/// `skiff <version> (<target>, commit <sha>)`.
pub fn version() -> String {
    format!(
        "skiff {} ({}, commit {})",
        env!("CARGO_PKG_VERSION"),
        env!("SKIFF_TARGET"),
        env!("SKIFF_COMMIT")
    )
}
