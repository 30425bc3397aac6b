//! Acceptance 4: TLS with a private CA and htpasswd auth, and Bearer token auth: clear
//! failures without the CA or the credentials; success with certs.d and a config.json.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

use skiff_tests::secure_registry::{Auth, PASSWORD, SecureRegistry};
use skiff_tests::{TempDir, images, ok, registry, require_root_and, skiff, stderr};

fn check(auth: Auth) {
    if !require_root_and(&["docker-registry", "skopeo", "openssl", "python3"]) {
        return;
    }
    let Some(_) = registry() else { return };
    let reg = SecureRegistry::start(auth);
    reg.push("busybox", "private/busybox");
    let want = images()
        .into_iter()
        .find(|(r, _)| r.ends_with("/busybox:latest"))
        .unwrap()
        .1;
    let image = format!("{}/private/busybox:latest", reg.host);
    let root = TempDir::new("auth-root");
    let r = root.path();
    let certs = reg.certs.to_str().unwrap().to_string();
    let empty_certs = TempDir::new("no-certs");
    let no_creds = TempDir::new("no-creds");

    // No CA: the certificate is refused, and the message says where the CA goes.
    let o = skiff(
        r,
        &[
            "--certs-dir",
            empty_certs.path().to_str().unwrap(),
            "--config",
            no_creds.path().to_str().unwrap(),
            "pull",
            &image,
        ],
    );
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("certificate is not trusted") && stderr(&o).contains("ca.crt"),
        "{}",
        stderr(&o)
    );

    // The CA but no credentials.
    let o = skiff(
        r,
        &[
            "--certs-dir",
            &certs,
            "--config",
            no_creds.path().to_str().unwrap(),
            "pull",
            &image,
        ],
    );
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("401") || stderr(&o).contains("credentials"),
        "{}",
        stderr(&o)
    );

    // Wrong password.
    let wrong = reg.docker_config("not-the-password");
    let o = skiff(
        r,
        &[
            "--certs-dir",
            &certs,
            "--config",
            wrong.to_str().unwrap(),
            "pull",
            &image,
        ],
    );
    assert!(!o.status.success(), "a wrong password pulled");

    // CA + docker login file: works, same digest as the public copy.
    let good = reg.docker_config(PASSWORD);
    let out = ok(skiff(
        r,
        &[
            "--certs-dir",
            &certs,
            "--config",
            good.to_str().unwrap(),
            "pull",
            "-q",
            &image,
        ],
    ));
    assert_eq!(out.trim(), format!("{image}@{want}"));
    let images: serde_json::Value =
        serde_json::from_str(&ok(skiff(r, &["images", "--format", "json"]))).unwrap();
    assert_eq!(images.as_array().unwrap().len(), 1);
}

#[test]
fn tls_with_htpasswd() {
    check(Auth::Htpasswd);
}

#[test]
fn tls_with_bearer_tokens() {
    check(Auth::Token);
}

/// A registry that wants a client certificate: certs.d's `client.cert` + `client.key`.
#[test]
fn tls_with_a_client_certificate() {
    if !require_root_and(&["docker-registry", "skopeo", "openssl"]) {
        return;
    }
    let Some(_) = registry() else { return };
    let reg = SecureRegistry::start(Auth::ClientCert);
    reg.push("busybox", "private/busybox");
    let image = format!("{}/private/busybox:latest", reg.host);
    let root = TempDir::new("mtls-root");
    let o = skiff(
        root.path(),
        &["--certs-dir", reg.ca_only.to_str().unwrap(), "pull", &image],
    );
    assert!(!o.status.success(), "pulled without a client certificate");
    assert!(
        stderr(&o).contains("wants a client certificate"),
        "{}",
        stderr(&o)
    );
    let out = ok(skiff(
        root.path(),
        &[
            "--certs-dir",
            reg.certs.to_str().unwrap(),
            "pull",
            "-q",
            &image,
        ],
    ));
    let want = images()
        .into_iter()
        .find(|(r, _)| r.ends_with("/busybox:latest"))
        .unwrap()
        .1;
    assert_eq!(out.trim(), format!("{image}@{want}"));
}
