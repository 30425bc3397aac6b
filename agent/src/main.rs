//! The `skiff` multi-call binary. The role is chosen from argv0 and the first argument before
//! any thread exists: the runtime role (`skiff runtime …`, or this file invoked as `skiff-runc`)
//! must stay single-threaded because it clones container processes. Client verbs run
//! daemonless on a data root.

use std::path::PathBuf;
use std::process::ExitCode;

use skiff_agent::client::{self, Context, StorageDriver};
use skiff_agent::platform::Platform;
use skiff_agent::registry::{AuthConfig, ClientOptions};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let argv0 = args
        .first()
        .map(|a| a.rsplit('/').next().unwrap_or(a).to_string())
        .unwrap_or_default();
    let code = if argv0 == "skiff-runc" {
        skiff_runtime::cli::main(&args[1..])
    } else {
        match args.get(1).map(String::as_str) {
            Some("runtime") => skiff_runtime::cli::main(&args[2..]),
            Some("--version" | "-V" | "version") => {
                println!("{}", skiff_agent::version());
                0
            }
            Some("--help" | "-h" | "help") | None => {
                print!("{}", skiff_agent::USAGE);
                i32::from(args.len() < 2) * 2
            }
            Some(_) => client_main(&args[1..]),
        }
    };
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}

/// Global flags, then the verb.
fn client_main(args: &[String]) -> i32 {
    let mut root = std::env::var_os("SKIFF_ROOT").map(PathBuf::from);
    let mut config_dir = std::env::var_os("DOCKER_CONFIG").map(PathBuf::from);
    let mut insecure = Vec::new();
    let mut certs_dirs = Vec::new();
    let mut storage = std::env::var("SKIFF_STORAGE_DRIVER").ok();
    let mut board = std::env::var_os("SKIFF_BOARD").map(PathBuf::from);
    let mut i = 0;
    while i < args.len() {
        let (flag, inline) = match args[i].split_once('=') {
            Some((f, v)) => (f.to_string(), Some(v.to_string())),
            None => (args[i].clone(), None),
        };
        if !matches!(
            flag.as_str(),
            "--root"
                | "--config"
                | "--insecure-registry"
                | "--certs-dir"
                | "--storage-driver"
                | "--board"
        ) {
            break;
        }
        let value = match inline {
            Some(v) => v,
            None => {
                i += 1;
                match args.get(i) {
                    Some(v) => v.clone(),
                    None => {
                        eprintln!("skiff: {flag} needs a value");
                        return 2;
                    }
                }
            }
        };
        match flag.as_str() {
            "--root" => root = Some(PathBuf::from(value)),
            "--config" => config_dir = Some(PathBuf::from(value)),
            "--certs-dir" => certs_dirs.push(PathBuf::from(value)),
            "--storage-driver" => storage = Some(value),
            "--board" => board = Some(PathBuf::from(value)),
            _ => insecure.push(value),
        }
        i += 1;
    }
    let Some((verb, rest)) = args[i..].split_first() else {
        eprint!("{}", skiff_agent::USAGE);
        return 2;
    };
    let config_dir =
        config_dir.or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".docker")));
    let auth = match config_dir.map(|d| d.join("config.json")) {
        Some(path) if path.exists() => match std::fs::read(&path).map(|b| AuthConfig::parse(&b)) {
            Ok(Ok(a)) => a,
            Ok(Err(e)) => {
                eprintln!("skiff: {}: {e}", path.display());
                return 2;
            }
            Err(e) => {
                eprintln!("skiff: reading {}: {e}", path.display());
                return 2;
            }
        },
        _ => AuthConfig::default(),
    };
    let storage = match storage.as_deref() {
        None | Some("overlay" | "overlayfs" | "overlay2") => StorageDriver::Overlay,
        Some("copy" | "vfs") => StorageDriver::Copy,
        Some(other) => {
            eprintln!("skiff: --storage-driver {other:?}: use overlay or copy");
            return 2;
        }
    };
    // The board's platform is the default for multi-arch images; else the host's.
    let board = board.or_else(|| {
        let default = PathBuf::from("/etc/skiff/board.toml");
        default.exists().then_some(default)
    });
    let platform = match board {
        Some(path) => match skiff_agent::board::BoardConfig::load(&path) {
            Ok(b) => b.image_platform(),
            Err(e) => {
                eprintln!("skiff: {}", skiff_runtime::container::error_chain(&e));
                return 2;
            }
        },
        None => Platform::host(),
    };
    let ctx = Context {
        storage,
        root: root.unwrap_or_else(|| PathBuf::from("/var/lib/skiff")),
        registry: ClientOptions {
            insecure,
            auth,
            certs_dirs: if certs_dirs.is_empty() {
                vec![
                    PathBuf::from("/etc/skiff/certs.d"),
                    PathBuf::from("/etc/docker/certs.d"),
                ]
            } else {
                certs_dirs
            },
        },
        platform,
        exe: std::env::current_exe().unwrap_or_else(|_| PathBuf::from("/proc/self/exe")),
    };
    match client::main(&ctx, verb, rest) {
        Ok(code) => code,
        Err(client::Failure(msg)) => {
            eprintln!("skiff {verb}: {msg}");
            1
        }
    }
}
