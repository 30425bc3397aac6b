//! Images: pull every test image, dedup of shared layers, run like podman, bad input.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

use std::process::Command;

use skiff_tests::proxy::{Fault, Proxy};
use skiff_tests::{TempDir, ok, registry, require_root_and, run_via_files, skiff, stderr, stdout};

/// Acceptance 1: every image in images.json pulls, and the digest it resolves to matches.
#[test]
fn every_test_image_pulls_with_its_digest() {
    if !require_root_and(&[]) {
        return;
    }
    let Some(_) = registry() else { return };
    let root = TempDir::new("pull-all");
    for (reference, digest) in skiff_tests::images() {
        let out = ok(skiff(root.path(), &["pull", "-q", &reference]));
        assert_eq!(out.trim(), format!("{reference}@{digest}"), "{reference}");
    }
    let images: serde_json::Value =
        serde_json::from_str(&ok(skiff(root.path(), &["images", "--format", "json"]))).unwrap();
    assert_eq!(
        images.as_array().unwrap().len(),
        skiff_tests::images().len()
    );
    // The zstd image unpacks to the same files as the gzip one: same diff_ids.
    let by_ref = |r: &str| {
        images
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["reference"].as_str().unwrap().ends_with(r))
            .unwrap()
            .clone()
    };
    assert_eq!(
        by_ref("/busybox-zstd:latest")["chain_ids"],
        by_ref("/busybox:latest")["chain_ids"]
    );
    // A multi-arch index records the index digest and, separately, the manifest pulled.
    let multi = by_ref("/busybox-multiarch:latest");
    assert_ne!(multi["repo_digest"], multi["manifest_digest"]);
}

/// Acceptance 2: after busybox, pulling busybox-app fetches none of the shared base layer.
#[test]
fn shared_layers_are_fetched_once() {
    if !require_root_and(&[]) {
        return;
    }
    let Some(upstream) = registry() else { return };
    let proxy = Proxy::start(&upstream);
    let root = TempDir::new("dedup");
    let base = {
        let meta: serde_json::Value = serde_json::from_slice(
            &std::fs::read(skiff_tests::images_dir().join("images.json")).unwrap(),
        )
        .unwrap();
        meta["shared_base_layer"].as_str().unwrap().to_string()
    };
    ok(skiff(
        root.path(),
        &["pull", &format!("{}/busybox:latest", proxy.addr)],
    ));
    assert_eq!(
        proxy.blob_gets(&base).len(),
        1,
        "busybox fetches its layer once"
    );
    proxy.clear();
    ok(skiff(
        root.path(),
        &["pull", &format!("{}/busybox-app:latest", proxy.addr)],
    ));
    assert!(
        proxy.blob_gets(&base).is_empty(),
        "busybox-app refetched the shared layer: {:?}",
        proxy.log()
    );
    let blob_gets = proxy
        .log()
        .into_iter()
        .filter(|r| r.path.contains("/blobs/"))
        .count();
    assert_eq!(blob_gets, 2, "config + app layer only: {:?}", proxy.log());
}

/// Acceptance 3: `run --rm` of busybox-app prints what podman prints; foreign platforms run
/// under binfmt. Both storage drivers (overlay, copy) pass the same checks.
#[test]
fn run_matches_podman_and_runs_foreign_platforms() {
    if !require_root_and(&["podman"]) {
        return;
    }
    let Some(reg) = registry() else { return };
    let app = format!("{reg}/busybox-app:latest");
    let extra = skiff_tests::podman_args();
    let theirs = ok(run_via_files(
        Command::new("podman")
            .args(["run", "--rm", "--tls-verify=false"])
            .args(&extra)
            .arg(&app),
    ));
    assert!(theirs.contains("hello"), "{theirs}");
    for driver in ["overlay", "copy"] {
        let root = TempDir::new(&format!("run-{driver}"));
        let run = |args: &[&str]| {
            let mut all = vec!["--storage-driver", driver, "run", "--rm"];
            all.extend_from_slice(args);
            skiff(root.path(), &all)
        };
        let ours = run(&[&app]);
        assert!(ours.status.success(), "{driver}: {}", stderr(&ours));
        assert_eq!(stdout(&ours), theirs, "{driver}");
        // Whiteouts applied: the app layer deleted /etc/motd and emptied /var/lib/demo.
        let ls = ok(run(&[
            &app,
            "sh",
            "-c",
            "ls /etc/motd /var/lib/demo/ 2>&1; true",
        ]));
        assert!(ls.contains("No such file"), "{driver}: {ls}");
        assert!(!ls.contains("old.txt"), "{driver}: {ls}");

        // Foreign platforms under qemu-user binfmt.
        let multi = format!("{reg}/busybox-multiarch:latest");
        for (platform, machine) in [("linux/arm64", "aarch64"), ("linux/arm/v7", "armv7l")] {
            let out = ok(run(&["--platform", platform, &multi, "uname", "-m"]));
            assert_eq!(out.trim(), machine, "{driver} {platform}");
        }
        // /etc/hostname, /etc/hosts and /etc/resolv.conf come from skiff, as from Docker.
        let etc = ok(run(&[
            &app,
            "sh",
            "-c",
            "test \"$(cat /etc/hostname)\" = \"$(hostname)\" && grep -q localhost /etc/hosts && test -f /etc/resolv.conf && echo ok",
        ]));
        assert_eq!(etc, "ok\n", "{driver}");
        // Exit codes pass through, and --rm leaves no container behind.
        let code = run(&[&app, "sh", "-c", "exit 3"]);
        assert_eq!(code.status.code(), Some(3), "{driver}");
        assert_eq!(
            std::fs::read_dir(root.path().join("containers"))
                .unwrap()
                .count(),
            0,
            "{driver}"
        );
    }
}

/// Acceptance 6 (part): corrupted blobs, non-JSON manifests and missing tags fail clearly
/// and leave no image.
#[test]
fn bad_registry_answers_fail_clearly_and_leave_nothing() {
    if !require_root_and(&[]) {
        return;
    }
    let Some(upstream) = registry() else { return };
    let proxy = Proxy::start(&upstream);
    let root = TempDir::new("bad-registry");
    let r = root.path();
    let busybox = format!("{}/busybox:latest", proxy.addr);

    proxy.set_fault(Fault::CorruptBlobs);
    let o = skiff(r, &["pull", &busybox]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("digest"), "{}", stderr(&o));
    proxy.set_fault(Fault::GarbageManifests);
    let o = skiff(r, &["pull", &busybox]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("not valid JSON"), "{}", stderr(&o));
    proxy.set_fault(Fault::None);
    let o = skiff(r, &["pull", &format!("{}/busybox:no-such-tag", proxy.addr)]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("manifest unknown"), "{}", stderr(&o));
    let o = skiff(r, &["pull", "Not A Reference"]);
    assert!(
        stderr(&o).contains("invalid image reference"),
        "{}",
        stderr(&o)
    );

    let images: serde_json::Value =
        serde_json::from_str(&ok(skiff(r, &["images", "--format", "json"]))).unwrap();
    assert_eq!(images, serde_json::json!([]), "no image recorded");
    let blobs: Vec<_> = std::fs::read_dir(r.join("blobs/sha256"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    let layer = "f3a903d6661cff61aa267f66a657eb828250d013446052b9a2ebeea5cc343952";
    assert!(
        !blobs.iter().any(|b| b.to_str() == Some(layer)),
        "a corrupt blob was kept"
    );
    // And a clean pull afterwards works.
    ok(skiff(r, &["pull", &busybox]));
}

/// Acceptance 5 (part): a connection cut mid-blob resumes with Range; the total fetched stays
/// within 1.05 × the blob size.
#[test]
fn a_cut_download_resumes() {
    if !require_root_and(&[]) {
        return;
    }
    let Some(upstream) = registry() else { return };
    let proxy = Proxy::start(&upstream);
    let root = TempDir::new("resume");
    let layer = "sha256:f3a903d6661cff61aa267f66a657eb828250d013446052b9a2ebeea5cc343952";
    let size = 1_031_740u64;
    proxy.set_fault(Fault::CutBlobsAfter(300_000, 2));
    ok(skiff(
        root.path(),
        &["pull", &format!("{}/busybox:latest", proxy.addr)],
    ));
    let gets = proxy.blob_gets(layer);
    assert_eq!(gets.len(), 3, "two cuts, two resumes: {gets:?}");
    assert_eq!(gets[1].range.as_deref(), Some("bytes=300000-"));
    assert_eq!(gets[2].range.as_deref(), Some("bytes=600000-"));
    let total: u64 = gets.iter().map(|g| g.sent).sum();
    assert!(
        total as f64 <= size as f64 * 1.05,
        "fetched {total} bytes of a {size}-byte blob"
    );
}

/// Acceptance 5 (kill -9): the next pull resumes the killed download with `Range: bytes=K-`.
#[test]
fn a_killed_pull_resumes_from_its_verified_prefix() {
    if !require_root_and(&[]) {
        return;
    }
    let Some(upstream) = registry() else { return };
    let proxy = Proxy::start(&upstream);
    let root = TempDir::new("killed");
    let layer = "sha256:f3a903d6661cff61aa267f66a657eb828250d013446052b9a2ebeea5cc343952";
    proxy.set_fault(Fault::StallBlobsAfter(400_000));
    let mut child = Command::new(skiff_tests::skiff_bin())
        .arg("--root")
        .arg(root.path())
        .args(["pull", "-q", &format!("{}/busybox:latest", proxy.addr)])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let ingest = root
        .path()
        .join("blobs/ingest")
        .join(layer.trim_start_matches("sha256:"));
    let t0 = std::time::Instant::now();
    while std::fs::metadata(&ingest).map(|m| m.len()).unwrap_or(0) < 400_000 {
        assert!(
            t0.elapsed() < std::time::Duration::from_secs(20),
            "the download never got going"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let images: serde_json::Value =
        serde_json::from_str(&ok(skiff(root.path(), &["images", "--format", "json"]))).unwrap();
    assert_eq!(
        images,
        serde_json::json!([]),
        "a killed pull shows no image"
    );
    proxy.set_fault(Fault::None);
    ok(skiff(
        root.path(),
        &["pull", "-q", &format!("{}/busybox:latest", proxy.addr)],
    ));
    let gets = proxy.blob_gets(layer);
    let resumed = gets.last().unwrap();
    let k: u64 = resumed
        .range
        .as_deref()
        .and_then(|r| r.strip_prefix("bytes="))
        .and_then(|r| r.trim_end_matches('-').parse().ok())
        .unwrap_or(0);
    assert_eq!(k, 400_000, "resumed with {:?}", resumed.range);
}

/// Acceptance 7: an 8 MiB tmpfs data root refuses a larger pull before fetching any blob.
#[test]
fn a_small_disk_refuses_a_large_pull_up_front() {
    if !require_root_and(&["skopeo", "python3"]) {
        return;
    }
    let Some(upstream) = registry() else { return };
    let image = skiff_tests::push_generated_image(&upstream, "--big", "big");
    let proxy = Proxy::start(&upstream);
    let root = skiff_tests::SmallDisk::new("tmpfs-root", "8m");
    let via_proxy = image.replacen(&upstream, &proxy.addr, 1);
    let o = skiff(root.path(), &["pull", &via_proxy]);
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(
        err.contains("not enough disk space")
            && err.contains("needs about")
            && err.contains("are free"),
        "{err}"
    );
    let blob_gets = proxy
        .log()
        .into_iter()
        .filter(|r| r.path.contains("/blobs/"))
        .count();
    assert_eq!(
        blob_gets,
        0,
        "no blob is fetched before the check: {:?}",
        proxy.log()
    );
}

/// Acceptance 8: rmi busybox-app then image prune: the app layer goes, the shared base stays.
#[test]
fn rmi_and_prune_keep_shared_layers() {
    if !require_root_and(&[]) {
        return;
    }
    let Some(reg) = registry() else { return };
    let root = TempDir::new("prune");
    let r = root.path();
    let (base, app) = (
        format!("{reg}/busybox:latest"),
        format!("{reg}/busybox-app:latest"),
    );
    ok(skiff(r, &["pull", "-q", &base]));
    ok(skiff(r, &["pull", "-q", &app]));
    let app_layer = "7148851f233e02eff73f5514fb32c76a5570c24d6fb56738d59f9d16b04a03e8";
    let base_layer = "f3a903d6661cff61aa267f66a657eb828250d013446052b9a2ebeea5cc343952";
    let blob = |d: &str| r.join("blobs/sha256").join(d).exists();
    assert!(blob(app_layer) && blob(base_layer));
    let snapshots = || std::fs::read_dir(r.join("snapshots")).unwrap().count();
    assert_eq!(snapshots(), 2);
    ok(skiff(r, &["rmi", &app]));
    let pruned = ok(skiff(r, &["image", "prune"]));
    assert!(
        pruned.contains("Deleted 3 blobs and 1 snapshots"),
        "{pruned}"
    );
    assert!(!blob(app_layer), "the app layer stayed");
    assert!(blob(base_layer), "the shared base went");
    assert_eq!(snapshots(), 1);
    // busybox still runs; a second prune finds nothing.
    ok(skiff(r, &["run", "--rm", &base, "true"]));
    assert!(ok(skiff(r, &["image", "prune"])).contains("Deleted 0 blobs and 0 snapshots"));
    let o = skiff(r, &["rmi", &app]);
    assert!(!o.status.success() && stderr(&o).contains("no such image"));
}

/// `--limit-rate` holds the download under the rate (a lower bound on the time, never an
/// upper one: this is behaviour, not a benchmark).
#[test]
fn limit_rate_slows_the_download() {
    if !require_root_and(&[]) {
        return;
    }
    let Some(reg) = registry() else { return };
    let root = TempDir::new("rate");
    let t0 = std::time::Instant::now();
    ok(skiff(
        root.path(),
        &[
            "pull",
            "-q",
            "--limit-rate",
            "512k",
            &format!("{reg}/busybox:latest"),
        ],
    ));
    // 1,031,740 bytes at 512 KiB/s take at least 1.9 s.
    assert!(
        t0.elapsed() >= std::time::Duration::from_millis(1900),
        "{:?}",
        t0.elapsed()
    );
    let bad = skiff(
        root.path(),
        &[
            "pull",
            "--limit-rate",
            "fast",
            &format!("{reg}/busybox:latest"),
        ],
    );
    assert!(stderr(&bad).contains("--limit-rate"), "{}", stderr(&bad));
}

/// Two pulls at once on one data root, sharing a layer: both images arrive, the shared layer
/// is fetched once.
#[test]
fn concurrent_pulls_fetch_a_shared_layer_once() {
    if !require_root_and(&[]) {
        return;
    }
    let Some(upstream) = registry() else { return };
    let proxy = Proxy::start(&upstream);
    let root = TempDir::new("concurrent");
    let base = "sha256:f3a903d6661cff61aa267f66a657eb828250d013446052b9a2ebeea5cc343952";
    let spawn = |image: &str| {
        Command::new(skiff_tests::skiff_bin())
            .arg("--root")
            .arg(root.path())
            .args(["pull", "-q", &format!("{}/{image}", proxy.addr)])
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap()
    };
    let (mut a, mut b) = (spawn("busybox:latest"), spawn("busybox-app:latest"));
    assert!(a.wait().unwrap().success() && b.wait().unwrap().success());
    assert_eq!(proxy.blob_gets(base).len(), 1, "{:?}", proxy.log());
    let images: serde_json::Value =
        serde_json::from_str(&ok(skiff(root.path(), &["images", "--format", "json"]))).unwrap();
    assert_eq!(images.as_array().unwrap().len(), 2);
}

/// Without --platform, a board config decides which image of an index is pulled.
#[test]
fn the_board_platform_is_the_default() {
    if !require_root_and(&[]) {
        return;
    }
    let Some(reg) = registry() else { return };
    let root = TempDir::new("board");
    let board = skiff_tests::workspace().join("board-configs/rpi4.toml");
    let out = ok(skiff(
        root.path(),
        &[
            "--board",
            board.to_str().unwrap(),
            "run",
            "--rm",
            &format!("{reg}/busybox-multiarch:latest"),
            "uname",
            "-m",
        ],
    ));
    assert_eq!(out.trim(), "aarch64");
    let bad = skiff(root.path(), &["--board", "/nonexistent.toml", "images"]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(
        stderr(&bad).contains("/nonexistent.toml"),
        "{}",
        stderr(&bad)
    );
}

/// A single-platform image is pulled whatever its platform, with a warning; an explicit
/// --platform it does not match is an error.
#[test]
fn single_platform_images_warn_or_refuse() {
    if !require_root_and(&[]) {
        return;
    }
    let Some(reg) = registry() else { return };
    let root = TempDir::new("single-platform");
    let arm = format!("{reg}/busybox:arm64");
    let o = skiff(root.path(), &["pull", &arm]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("warning") && stderr(&o).contains("linux/arm64"),
        "{}",
        stderr(&o)
    );
    let o = skiff(root.path(), &["pull", "--platform", "linux/arm/v7", &arm]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("not the requested linux/arm/v7"),
        "{}",
        stderr(&o)
    );
    let o = skiff(
        root.path(),
        &[
            "pull",
            "--platform",
            "linux/s390x",
            &format!("{reg}/busybox-multiarch:latest"),
        ],
    );
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("no image for linux/s390x"),
        "{}",
        stderr(&o)
    );
}

/// A disk that fills up while a layer unpacks (the compressed size promised it would fit):
/// a clear error, no image, no half snapshot; the verified blob stays for the next try.
#[test]
fn a_disk_filling_up_during_unpack_loses_nothing() {
    if !require_root_and(&["skopeo", "python3"]) {
        return;
    }
    let Some(upstream) = registry() else { return };
    let image = skiff_tests::push_generated_image(&upstream, "--zeros", "zeros");
    let root = skiff_tests::SmallDisk::new("full-disk", "8m");
    let o = skiff(root.path(), &["pull", &image]);
    let images = skiff(root.path(), &["images", "--format", "json"]);
    let snapshots: Vec<_> = std::fs::read_dir(root.path().join("snapshots"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    let blobs = std::fs::read_dir(root.path().join("blobs/sha256"))
        .unwrap()
        .count();
    drop(root);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("No space left on device"),
        "{}",
        stderr(&o)
    );
    assert_eq!(stdout(&images).trim(), "[]", "no image recorded");
    assert!(
        snapshots.is_empty(),
        "half-unpacked snapshot left: {snapshots:?}"
    );
    assert!(
        blobs >= 1,
        "the verified layer blob is kept for the next try"
    );
}
