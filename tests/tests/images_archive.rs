//! Acceptance 9: save/load round trips with podman and skopeo; digests stay.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

use std::process::Command;

use skiff_tests::{TempDir, ok, registry, require_root_and, run_via_files, skiff, stderr};

fn inspect(root: &std::path::Path, image: &str) -> serde_json::Value {
    let v: serde_json::Value =
        serde_json::from_str(&ok(skiff(root, &["image", "inspect", image]))).unwrap();
    v[0].clone()
}

#[test]
fn docker_format_loads_into_podman_with_the_same_id() {
    if !require_root_and(&["podman"]) {
        return;
    }
    let Some(reg) = registry() else { return };
    let root = TempDir::new("save-docker");
    let r = root.path();
    let image = format!("{reg}/busybox-app:latest");
    ok(skiff(r, &["pull", "-q", &image]));
    let archive = r.join("app-docker.tar");
    ok(skiff(
        r,
        &[
            "save",
            "-o",
            archive.to_str().unwrap(),
            "--format",
            "docker",
            &image,
        ],
    ));
    let tag = format!("localhost/skiff-save-test-{}:latest", std::process::id());
    // podman loads it; retag under a name of our own so other tests' images are untouched.
    let loaded = ok(run_via_files(
        Command::new("podman")
            .args(["load", "-q", "-i"])
            .arg(&archive),
    ));
    assert!(loaded.contains("busybox-app"), "{loaded}");
    ok(run_via_files(
        Command::new("podman").args(["tag", &image, &tag]),
    ));
    let id = ok(run_via_files(
        Command::new("podman").args(["image", "inspect", "--format", "{{.Id}}", &tag]),
    ));
    assert_eq!(
        format!("sha256:{}", id.trim()),
        inspect(r, &image)["Id"],
        "the image id stays"
    );
    let _ = run_via_files(Command::new("podman").args(["rmi", &tag]));
}

#[test]
fn oci_format_copies_with_skopeo_keeping_the_manifest_digest() {
    if !require_root_and(&["skopeo"]) {
        return;
    }
    let Some(reg) = registry() else { return };
    let root = TempDir::new("save-oci");
    let r = root.path();
    let image = format!("{reg}/busybox-app:latest");
    ok(skiff(r, &["pull", "-q", &image]));
    let archive = r.join("app-oci.tar");
    ok(skiff(r, &["save", "-o", archive.to_str().unwrap(), &image]));
    let out = r.join("copied");
    ok(run_via_files(
        Command::new("skopeo")
            .args(["copy", "-q"])
            .arg(format!("oci-archive:{}", archive.display()))
            .arg(format!("dir:{}", out.display())),
    ));
    let manifest = std::fs::read(out.join("manifest.json")).unwrap();
    let digest = ok(run_via_files(
        Command::new("sha256sum").arg(out.join("manifest.json")),
    ));
    assert_eq!(
        format!("sha256:{}", &digest[..64]),
        inspect(r, &image)["ManifestDigest"]
    );
    assert!(!manifest.is_empty());
    // And skiff loads its own archive into a fresh root, same digests.
    let other = TempDir::new("load-oci");
    ok(skiff(
        other.path(),
        &["load", "-i", archive.to_str().unwrap()],
    ));
    let a = inspect(r, &image);
    let b = inspect(other.path(), &image);
    assert_eq!(
        (a["Id"].clone(), a["ManifestDigest"].clone()),
        (b["Id"].clone(), b["ManifestDigest"].clone())
    );
    let hello = ok(skiff(other.path(), &["run", "--rm", &image]));
    assert!(hello.contains("hello"), "{hello}");
}

#[test]
fn a_skopeo_docker_archive_loads_and_runs() {
    if !require_root_and(&["skopeo"]) {
        return;
    }
    let Some(reg) = registry() else { return };
    let dir = TempDir::new("docker-archive");
    let archive = dir.path().join("busybox.tar");
    ok(run_via_files(
        Command::new("skopeo")
            .args(["copy", "-q", "--src-tls-verify=false"])
            .arg(format!("docker://{reg}/busybox:latest"))
            .arg(format!(
                "docker-archive:{}:skiff-archive-test:v1",
                archive.display()
            )),
    ));
    let root = TempDir::new("load-docker");
    let r = root.path();
    let out = ok(skiff(r, &["load", "-i", archive.to_str().unwrap()]));
    assert!(
        out.contains("docker.io/library/skiff-archive-test:v1"),
        "{out}"
    );
    let public = TempDir::new("load-docker-public");
    ok(skiff(
        public.path(),
        &["pull", "-q", &format!("{reg}/busybox:latest")],
    ));
    assert_eq!(
        inspect(r, "skiff-archive-test:v1")["Id"],
        inspect(public.path(), &format!("{reg}/busybox:latest"))["Id"],
        "the image id (config digest) stays"
    );
    assert_eq!(
        ok(skiff(
            r,
            &["run", "--rm", "skiff-archive-test:v1", "echo", "ok"]
        )),
        "ok\n"
    );

    // Garbage is refused and loads nothing.
    let junk = dir.path().join("junk.tar");
    std::fs::write(&junk, b"definitely not a tar archive, far too short").unwrap();
    let o = skiff(r, &["load", "-i", junk.to_str().unwrap()]);
    assert!(!o.status.success());
    assert!(!stderr(&o).is_empty());
    let images: serde_json::Value =
        serde_json::from_str(&ok(skiff(r, &["images", "--format", "json"]))).unwrap();
    assert_eq!(images.as_array().unwrap().len(), 1);
}
