//! The client verbs (`pull`, `images`, `rmi`, `image inspect`, `run`) in daemonless mode:
//! they work directly on a data root (`--root DIR` / `SKIFF_ROOT`). Containers are started by
//! exec'ing this same binary's runtime role; nothing here forks inside an async runtime.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::reference::Reference;

use crate::archive;
use crate::bundle::{self, ImageJson, Network, RunSpec};
use crate::platform::Platform;
use crate::pull::{self, Event, PullOptions};
use crate::registry::{Client, ClientOptions};
use crate::store::{ImageRecord, Store};

/// Settings every verb shares, decided by `main` (flags and environment).
pub struct Context {
    pub root: PathBuf,
    pub registry: ClientOptions,
    /// The platform images are pulled for unless `--platform` says otherwise.
    pub platform: Platform,
    /// This binary, for starting the runtime.
    pub exe: PathBuf,
    pub storage: StorageDriver,
}

/// How a container's rootfs is made from its image's snapshots.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StorageDriver {
    /// An overlayfs mount: snapshots as lower layers, a per-container upper dir.
    Overlay,
    /// A real copy (for kernels or filesystems without overlayfs).
    Copy,
}

#[derive(Debug)]
pub struct Failure(pub String);

impl<E: std::error::Error> From<E> for Failure {
    fn from(e: E) -> Self {
        Failure(skiff_runtime::container::error_chain(&e))
    }
}

/// Minimal flag parsing: `--flag value`, `--flag=value`, switches; stops at the first
/// positional when `stop` (so `run IMAGE CMD --flags` leaves CMD's flags alone).
struct Args {
    values: Vec<(String, String)>,
    switches: Vec<String>,
    rest: Vec<String>,
}

fn parse(args: &[String], with_value: &[&str], switches: &[&str]) -> Result<Args, Failure> {
    let mut out = Args {
        values: Vec::new(),
        switches: Vec::new(),
        rest: Vec::new(),
    };
    let mut i = 0;
    while i < args.len() {
        let a = &args[i];
        if !a.starts_with('-') || a == "-" {
            out.rest.extend(args[i..].iter().cloned());
            break;
        }
        if a == "--" {
            out.rest.extend(args[i + 1..].iter().cloned());
            break;
        }
        let (name, inline) = match a.split_once('=') {
            Some((n, v)) => (n.to_string(), Some(v.to_string())),
            None => (a.clone(), None),
        };
        if with_value.contains(&name.as_str()) {
            let v = match inline {
                Some(v) => v,
                None => {
                    i += 1;
                    args.get(i)
                        .cloned()
                        .ok_or_else(|| Failure(format!("{name} needs a value")))?
                }
            };
            out.values.push((name, v));
        } else if switches.contains(&name.as_str()) {
            out.switches.push(name);
        } else {
            return Err(Failure(format!("unknown flag {a}")));
        }
        i += 1;
    }
    Ok(out)
}

impl Args {
    fn value(&self, names: &[&str]) -> Option<&str> {
        self.values
            .iter()
            .rev()
            .find(|(n, _)| names.contains(&n.as_str()))
            .map(|(_, v)| v.as_str())
    }
    fn values(&self, names: &[&str]) -> Vec<String> {
        self.values
            .iter()
            .filter(|(n, _)| names.contains(&n.as_str()))
            .map(|(_, v)| v.clone())
            .collect()
    }
    fn has(&self, names: &[&str]) -> bool {
        self.switches.iter().any(|s| names.contains(&s.as_str()))
    }
}

pub fn reference(s: &str) -> Result<Reference, Failure> {
    s.parse::<Reference>()
        .map_err(|e| Failure(format!("invalid image reference {s:?}: {e}")))
}

fn short(digest: &str) -> &str {
    let hex = digest.trim_start_matches("sha256:");
    &hex[..hex.len().min(12)]
}

/// Runs client verb `verb` with `args`; returns the exit code.
pub fn main(ctx: &Context, verb: &str, args: &[String]) -> Result<i32, Failure> {
    match verb {
        "pull" => {
            let a = parse(args, &["--platform", "--limit-rate"], &["-q", "--quiet"])?;
            let [name] = a.rest.as_slice() else {
                return Err(Failure("pull takes one image reference".into()));
            };
            let platform = a.value(&["--platform"]).map(str::parse).transpose()?;
            let rate = match a.value(&["--limit-rate"]) {
                Some(v) => Some(parse_size(v).ok_or_else(|| {
                    Failure(format!(
                        "--limit-rate {v:?}: bytes per second, e.g. 500k or 2m"
                    ))
                })?),
                None => None,
            };
            let store = Store::open(&ctx.root)?;
            let quiet = a.has(&["-q", "--quiet"]);
            let rec = do_pull(ctx, &store, &reference(name)?, platform, quiet, rate)?;
            println!("{}@{}", rec.reference, rec.repo_digest);
            Ok(0)
        }
        "images" => {
            let a = parse(args, &["--format"], &["--digests", "-q", "--quiet"])?;
            let store = Store::open(&ctx.root)?;
            let mut images = store.images()?;
            images.sort_by(|a, b| a.reference.cmp(&b.reference));
            if a.value(&["--format"]) == Some("json") {
                println!("{}", serde_json::to_string(&images)?);
            } else if a.has(&["-q", "--quiet"]) {
                for i in &images {
                    println!("{}", short(i.id()));
                }
            } else {
                let digests = a.has(&["--digests"]);
                let mut out = String::from(if digests {
                    "REPOSITORY\tTAG\tDIGEST\tIMAGE ID\tPLATFORM\tSIZE\n"
                } else {
                    "REPOSITORY\tTAG\tIMAGE ID\tPLATFORM\tSIZE\n"
                });
                for i in &images {
                    let r = reference(&i.reference)?;
                    let repo = format!("{}/{}", r.registry(), r.repository());
                    let tag = r.tag().unwrap_or("<none>");
                    let d = if digests {
                        format!("{}\t", i.repo_digest)
                    } else {
                        String::new()
                    };
                    out.push_str(&format!(
                        "{repo}\t{tag}\t{d}{}\t{}\t{}\n",
                        short(i.id()),
                        i.platform,
                        i.size()
                    ));
                }
                print!("{out}");
            }
            Ok(0)
        }
        "rmi" => {
            let a = parse(args, &[], &["-f", "--force"])?;
            if a.rest.is_empty() {
                return Err(Failure("rmi takes image references".into()));
            }
            let store = Store::open(&ctx.root)?;
            let mut code = 0;
            for name in &a.rest {
                let r = reference(name)?.whole();
                if store.remove_image(&r)? {
                    println!("Untagged: {r}");
                } else {
                    eprintln!("skiff rmi: no such image: {name}");
                    code = 1;
                }
            }
            Ok(code)
        }
        "image" => match args.split_first() {
            Some((sub, _)) if sub == "prune" => {
                let store = Store::open(&ctx.root)?;
                let (blobs, snaps, bytes) = store.prune()?;
                println!(
                    "Deleted {blobs} blobs and {snaps} snapshots, reclaimed {bytes} bytes of blobs"
                );
                Ok(0)
            }
            Some((sub, rest)) if sub == "inspect" => {
                let store = Store::open(&ctx.root)?;
                let mut out = Vec::new();
                for name in rest {
                    let r = reference(name)?.whole();
                    let rec = store
                        .image(&r)?
                        .ok_or_else(|| Failure(format!("no such image: {name}")))?;
                    out.push(inspect(&store, &rec)?);
                }
                println!("{}", serde_json::to_string_pretty(&out)?);
                Ok(0)
            }
            _ => Err(Failure(
                "usage: skiff image inspect IMAGE… | skiff image prune".into(),
            )),
        },
        "save" => {
            let a = parse(args, &["-o", "--output", "--format"], &[])?;
            let out = a
                .value(&["-o", "--output"])
                .ok_or_else(|| Failure("save needs -o FILE".into()))?;
            let format = match a.value(&["--format"]).unwrap_or("oci") {
                "oci" | "oci-archive" => archive::Format::Oci,
                "docker" | "docker-archive" => archive::Format::Docker,
                other => return Err(Failure(format!("--format {other:?}: use oci or docker"))),
            };
            if a.rest.is_empty() {
                return Err(Failure("save takes image references".into()));
            }
            let store = Store::open(&ctx.root)?;
            let mut images = Vec::new();
            for name in &a.rest {
                let r = reference(name)?.whole();
                images.push(
                    store
                        .image(&r)?
                        .ok_or_else(|| Failure(format!("no such image: {name}")))?,
                );
            }
            let tmp = format!("{out}.skiff-tmp");
            let file =
                std::fs::File::create(&tmp).map_err(|e| Failure(format!("creating {tmp}: {e}")))?;
            let result = archive::save(&store, &images, format, std::io::BufWriter::new(file));
            match result {
                Ok(()) => std::fs::rename(&tmp, out)
                    .map_err(|e| Failure(format!("renaming {tmp}: {e}")))?,
                Err(e) => {
                    let _ = std::fs::remove_file(&tmp);
                    return Err(e.into());
                }
            }
            Ok(0)
        }
        "load" => {
            let a = parse(args, &["-i", "--input"], &["-q", "--quiet"])?;
            let input = a
                .value(&["-i", "--input"])
                .ok_or_else(|| Failure("load needs -i FILE".into()))?;
            let file =
                std::fs::File::open(input).map_err(|e| Failure(format!("opening {input}: {e}")))?;
            let store = Store::open(&ctx.root)?;
            for rec in archive::load(&store, std::io::BufReader::new(file))? {
                println!("Loaded image: {} ({})", rec.reference, rec.config_digest);
            }
            Ok(0)
        }
        "run" => run(ctx, args, false),
        "bundle" => run(ctx, args, true),
        other => {
            eprint!("skiff: unknown command {other:?}\n{}", crate::USAGE);
            Ok(2)
        }
    }
}

fn inspect(store: &Store, rec: &ImageRecord) -> Result<serde_json::Value, Failure> {
    let config: serde_json::Value = serde_json::from_slice(&store.read_blob(&rec.config_digest)?)?;
    let r = reference(&rec.reference)?;
    Ok(serde_json::json!({
        "Id": rec.config_digest,
        "RepoTags": [rec.reference],
        "RepoDigests": [format!("{}/{}@{}", r.registry(), r.repository(), rec.repo_digest)],
        "ManifestDigest": rec.manifest_digest,
        "Platform": rec.platform.to_string(),
        "Os": rec.platform.os,
        "Architecture": rec.platform.architecture,
        "Variant": rec.platform.variant,
        "Size": rec.size(),
        "Layers": rec.layers,
        "Config": config["config"],
        "Created": config["created"],
    }))
}

/// `1500`, `500k`, `2m`, `1g` (powers of 1024).
fn parse_size(v: &str) -> Option<u64> {
    let v = v.trim().to_ascii_lowercase();
    let (num, mult) = match v.chars().last()? {
        'k' => (&v[..v.len() - 1], 1u64 << 10),
        'm' => (&v[..v.len() - 1], 1 << 20),
        'g' => (&v[..v.len() - 1], 1 << 30),
        _ => (v.as_str(), 1),
    };
    num.parse::<u64>().ok().map(|n| n * mult).filter(|n| *n > 0)
}

fn do_pull(
    ctx: &Context,
    store: &Store,
    r: &Reference,
    platform: Option<Platform>,
    quiet: bool,
    limit_rate: Option<u64>,
) -> Result<ImageRecord, Failure> {
    let client = Client::new(ctx.registry.clone());
    // SAFETY: isatty only inspects fd 2.
    let tty = unsafe { libc::isatty(2) } == 1;
    let bars = std::sync::Mutex::new(Progress::default());
    let progress = move |e: Event| {
        if quiet {
            return;
        }
        if tty && let Ok(mut b) = bars.lock() {
            b.update(&e);
            return;
        }
        let line = match e {
            Event::Resolved { digest, platform } => format!("resolved {digest} ({platform})"),
            Event::Warning(w) => format!("warning: {w}"),
            Event::Downloading { .. } => return,
            Event::LayerExists { digest } => format!("{}: already present", short(digest)),
            Event::LayerFetched { digest, bytes } => {
                format!("{}: downloaded {bytes} bytes", short(digest))
            }
            Event::LayerUnpacked { digest } => format!("{}: unpacked", short(digest)),
        };
        let _ = writeln!(std::io::stderr(), "{line}");
    };
    let opts = PullOptions {
        platform,
        default_platform: ctx.platform.clone(),
        progress: &progress,
        limit_rate: limit_rate.map(pull::Throttle::new),
    };
    Ok(pull::pull(store, &client, r, &opts)?)
}

/// One line per layer, redrawn in place on a terminal.
#[derive(Default)]
struct Progress {
    layers: Vec<(String, String)>,
    drawn: usize,
}

impl Progress {
    fn set(&mut self, digest: &str, status: String) {
        let key = short(digest).to_string();
        match self.layers.iter_mut().find(|(k, _)| *k == key) {
            Some(l) => l.1 = status,
            None => self.layers.push((key, status)),
        }
    }

    fn update(&mut self, e: &Event) {
        let mut err = std::io::stderr().lock();
        match e {
            Event::Resolved { digest, platform } => {
                let _ = writeln!(err, "resolved {digest} ({platform})");
                return;
            }
            Event::Warning(w) => {
                let _ = writeln!(err, "warning: {w}");
                return;
            }
            Event::Downloading {
                digest,
                have,
                total,
            } => {
                let width = 30u64;
                let done = if *total > 0 {
                    (have * width / total).min(width)
                } else {
                    0
                };
                let bar: String = (0..width)
                    .map(|i| if i < done { '=' } else { ' ' })
                    .collect();
                self.set(
                    digest,
                    format!(
                        "[{bar}] {:.1}/{:.1} MiB",
                        *have as f64 / 1048576.0,
                        *total as f64 / 1048576.0
                    ),
                );
            }
            Event::LayerExists { digest } => self.set(digest, "already present".into()),
            Event::LayerFetched { digest, bytes } => {
                self.set(digest, format!("downloaded {bytes} bytes"))
            }
            Event::LayerUnpacked { digest } => self.set(digest, "unpacked".into()),
        }
        // Back to the first layer line, then redraw them all.
        if self.drawn > 0 {
            let _ = write!(err, "\x1b[{}A", self.drawn);
        }
        for (k, status) in &self.layers {
            let _ = writeln!(err, "\x1b[2K{k}: {status}");
        }
        self.drawn = self.layers.len();
    }
}

fn random_id() -> String {
    let mut b = [0u8; 32];
    use ring::rand::SecureRandom;
    let _ = ring::rand::SystemRandom::new().fill(&mut b);
    crate::registry::hex(&b)
}

/// The container's rootfs as the copy driver makes it.
fn copy_rootfs(store: &Store, image: &ImageRecord, dir: &Path) -> Result<PathBuf, Failure> {
    let rootfs = dir.join("rootfs");
    std::fs::create_dir_all(&rootfs)
        .map_err(|e| Failure(format!("creating {}: {e}", rootfs.display())))?;
    for chain in &image.chain_ids {
        let snap = store.snapshot_path(chain);
        crate::merge::apply(&snap, &rootfs).map_err(|e| {
            Failure(format!(
                "copying layer {} into {}: {e}",
                snap.display(),
                rootfs.display()
            ))
        })?;
    }
    Ok(rootfs)
}

fn mount_overlay(store: &Store, image: &ImageRecord, dir: &Path) -> Result<PathBuf, Failure> {
    let (upper, work, merged) = (dir.join("upper"), dir.join("work"), dir.join("rootfs"));
    for d in [&upper, &work, &merged] {
        std::fs::create_dir_all(d)
            .map_err(|e| Failure(format!("creating {}: {e}", d.display())))?;
    }
    let lower: Vec<String> = image
        .chain_ids
        .iter()
        .rev()
        .map(|c| store.snapshot_path(c).display().to_string())
        .collect();
    let data = format!(
        "lowerdir={},upperdir={},workdir={}",
        lower.join(":"),
        upper.display(),
        work.display()
    );
    let c = |s: &str| std::ffi::CString::new(s).map_err(|_| Failure(format!("bad path in {s:?}")));
    let (src, target, fs, opts) = (
        c("overlay")?,
        c(&merged.display().to_string())?,
        c("overlay")?,
        c(&data)?,
    );
    // SAFETY: all pointers are NUL-terminated strings that outlive the call.
    let rc = unsafe {
        libc::mount(
            src.as_ptr(),
            target.as_ptr(),
            fs.as_ptr(),
            0,
            opts.as_ptr().cast(),
        )
    };
    if rc < 0 {
        return Err(Failure(format!(
            "mounting the container's overlay on {}: {}",
            merged.display(),
            std::io::Error::last_os_error()
        )));
    }
    Ok(merged)
}

fn umount(path: &Path) {
    if let Ok(c) = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()) {
        // SAFETY: c is a valid C string.
        unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
    }
}

fn run_spec(a: &Args, id: &str, cmd: &[String], network: Network) -> RunSpec {
    RunSpec {
        hostname: id[..12].to_string(),
        cmd: cmd.to_vec(),
        entrypoint: a.value(&["--entrypoint"]).map(|e| {
            if e.is_empty() {
                Vec::new()
            } else {
                vec![e.to_string()]
            }
        }),
        env: a.values(&["-e", "--env"]),
        user: a.value(&["-u", "--user"]).map(str::to_string),
        workdir: a.value(&["-w", "--workdir"]).map(str::to_string),
        network,
        tty: false,
        etc_files: None,
    }
}

/// `run`, or with `bundle_mode` the `bundle -o DIR` verb: the same container made into a
/// self-contained OCI bundle (config.json and a copied rootfs) instead of run.
fn run(ctx: &Context, args: &[String], bundle_mode: bool) -> Result<i32, Failure> {
    let a = parse(
        args,
        &[
            "-o",
            "--output",
            "--platform",
            "-e",
            "--env",
            "--entrypoint",
            "-u",
            "--user",
            "-w",
            "--workdir",
            "--network",
            "--net",
            "--name",
        ],
        &[
            "--rm",
            "-t",
            "--tty",
            "-i",
            "--interactive",
            "-it",
            "-d",
            "--detach",
        ],
    )?;
    if a.has(&["-d", "--detach"]) {
        return Err(Failure(
            "run --detach needs the daemon (not in daemonless mode yet)".into(),
        ));
    }
    let (image_name, cmd) = a
        .rest
        .split_first()
        .ok_or_else(|| Failure("run takes an image".into()))?;
    let r = reference(image_name)?;
    let platform: Option<Platform> = a.value(&["--platform"]).map(str::parse).transpose()?;
    let store = Store::open(&ctx.root)?;
    let image = match store.image(&r.whole())? {
        Some(i)
            if platform
                .as_ref()
                .is_none_or(|p| p.score(&i.platform).is_some()) =>
        {
            i
        }
        _ => do_pull(ctx, &store, &r, platform, false, None)?,
    };
    let network = match a.value(&["--network", "--net"]).unwrap_or("host") {
        "none" => Network::None,
        "host" => Network::Host,
        "bridge" | "default" => {
            eprintln!(
                "skiff run: warning: bridge networking is not there yet; using the host's network"
            );
            Network::Host
        }
        other => return Err(Failure(format!("--network {other:?}: use host or none"))),
    };
    let image_json: ImageJson = serde_json::from_slice(&store.read_blob(&image.config_digest)?)?;
    let id = random_id();
    if bundle_mode {
        let out = PathBuf::from(
            a.value(&["-o", "--output"])
                .ok_or_else(|| Failure("bundle needs -o DIR".into()))?,
        );
        if out.exists() {
            return Err(Failure(format!("{} exists already", out.display())));
        }
        let rootfs = copy_rootfs(&store, &image, &out)?;
        let mut spec = run_spec(&a, &id, cmd, network);
        bundle::write_etc_files(&out, &spec.hostname, network)?;
        spec.etc_files = Some(out.clone());
        let config = bundle::config(&image_json.config, &spec, &rootfs)?;
        std::fs::write(out.join("config.json"), serde_json::to_vec_pretty(&config)?)?;
        return Ok(0);
    }
    let dir = store.root.join("containers").join(&id);
    let rootfs = match ctx.storage {
        StorageDriver::Overlay => mount_overlay(&store, &image, &dir)?,
        StorageDriver::Copy => copy_rootfs(&store, &image, &dir)?,
    };
    let mut spec = run_spec(&a, &id, cmd, network);
    bundle::write_etc_files(&dir, &spec.hostname, network)
        .map_err(|e| Failure(format!("writing /etc files for the container: {e}")))?;
    spec.etc_files = Some(dir.clone());
    let result = bundle::config(&image_json.config, &spec, &rootfs)
        .map_err(Failure::from)
        .and_then(|config| {
            std::fs::write(dir.join("config.json"), serde_json::to_vec_pretty(&config)?)?;
            let status = Command::new(&ctx.exe)
                .arg("runtime")
                .arg("--root")
                .arg(ctx.root.join("runtime"))
                .args(["run", "--bundle"])
                .arg(&dir)
                .arg(&id)
                .status()
                .map_err(|e| Failure(format!("starting the runtime {}: {e}", ctx.exe.display())))?;
            use std::os::unix::process::ExitStatusExt;
            Ok(status
                .code()
                .unwrap_or_else(|| 128 + status.signal().unwrap_or(0)))
        });
    if ctx.storage == StorageDriver::Overlay {
        umount(&rootfs);
    }
    if a.has(&["--rm"]) || result.is_err() {
        let _ = std::fs::remove_dir_all(&dir);
    }
    result
}
