//! Acceptance 6 (hostile layers, wrong diff_id): each is refused with a clear error or kept
//! inside the image; nothing outside the data root is touched.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

use std::os::unix::fs::MetadataExt;
use std::process::Command;

use skiff_tests::{TempDir, ok, registry, require_root_and, skiff, stderr, workspace};

fn stat(path: &str) -> Option<(u64, u64, u64, i64)> {
    std::fs::symlink_metadata(path)
        .ok()
        .map(|m| (m.ino(), m.nlink(), m.size(), m.mtime()))
}

#[test]
fn hostile_layers_are_refused_or_contained() {
    if !require_root_and(&["skopeo", "python3"]) {
        return;
    }
    let Some(reg) = registry() else { return };
    let layout = TempDir::new("hostile-layout");
    let target = format!("/tmp/skiff-hostile-{}", std::process::id());
    let tags = ok(skiff_tests::run_via_files(
        Command::new("python3")
            .arg(workspace().join("tests/hostile/make-layout.py"))
            .arg(layout.path())
            .arg(&target),
    ));
    let repo = format!("{reg}/skiff-hostile-{}", std::process::id());
    for tag in tags.lines() {
        ok(skiff_tests::run_via_files(
            Command::new("skopeo")
                .args(["copy", "-q", "--dest-tls-verify=false"])
                .arg(format!("oci:{}:{tag}", layout.path().display()))
                .arg(format!("docker://{repo}:{tag}")),
        ));
    }
    let watched = ["/etc/passwd", "/tmp"];
    let before: Vec<_> = watched.iter().map(|p| stat(p)).collect();
    let root = TempDir::new("hostile");
    let r = root.path();
    let cases = [
        ("dotdot", Some("climbs out")),
        ("absolute", None),
        ("symlink", Some("goes through the symlink")),
        ("chain", Some("goes through the symlink")),
        ("hardlink", Some("climbs out")),
        ("hardlink-abs", Some("not a file of this layer")),
        ("replaced-dir", None),
        ("bomb", Some("decompression bomb")),
        ("wrong-diffid", Some("diff_id")),
    ];
    for (tag, refused) in cases {
        let o = skiff(r, &["pull", "-q", &format!("{repo}:{tag}")]);
        match refused {
            Some(why) => {
                assert!(!o.status.success(), "{tag} was accepted");
                assert!(
                    stderr(&o).contains(why),
                    "{tag}: expected {why:?} in {}",
                    stderr(&o)
                );
            }
            None => assert!(o.status.success(), "{tag}: {}", stderr(&o)),
        }
    }
    // Nothing reached the host.
    for suffix in ["dotdot", "absolute", "symlink", "chain", "replaced"] {
        let p = format!("{target}-{suffix}");
        assert!(stat(&p).is_none(), "{p} was created on the host");
    }
    let after: Vec<_> = watched.iter().map(|p| stat(p)).collect();
    assert_eq!(
        before[0], after[0],
        "/etc/passwd changed (inode, links, size or mtime)"
    );
    // The contained ones keep their files inside the data root's snapshots.
    let name = format!("skiff-hostile-{}-replaced", std::process::id());
    let kept = std::fs::read_dir(r.join("snapshots"))
        .unwrap()
        .flatten()
        .any(|e| e.path().join("d").join(&name).is_file());
    assert!(kept, "{name} is not inside the image's snapshot");
    // Refused pulls record no image and leave no half-unpacked snapshot.
    let images: serde_json::Value =
        serde_json::from_str(&ok(skiff(r, &["images", "--format", "json"]))).unwrap();
    let names: Vec<&str> = images
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["reference"].as_str().unwrap())
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
    let leftovers: Vec<_> = std::fs::read_dir(r.join("snapshots"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().contains("tmp"))
        .collect();
    assert!(
        leftovers.is_empty(),
        "half-unpacked snapshots left: {leftovers:?}"
    );
}
