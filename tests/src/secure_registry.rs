//! A registry of the test's own: the CNCF distribution registry with TLS from an
//! openssl-made CA, and either htpasswd auth or token auth through `tests/auth/tokenserver.py`.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::TempDir;

pub const USER: &str = "skiffer";
pub const PASSWORD: &str = "s3cret-pass";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Auth {
    Htpasswd,
    Token,
    /// No password: the registry asks for a client certificate signed by the test CA.
    ClientCert,
}

pub struct SecureRegistry {
    /// `127.0.0.1:PORT`.
    pub host: String,
    /// A certs.d-style directory: `certs/127.0.0.1:PORT/ca.crt` (and, for
    /// [`Auth::ClientCert`], `client.cert` + `client.key`).
    pub certs: PathBuf,
    /// The same with the CA only.
    pub ca_only: PathBuf,
    pub dir: TempDir,
    children: Vec<Child>,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn run(cmd: &mut Command) {
    let out = cmd.output().expect("running a setup command");
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn openssl(dir: &Path, args: &[&str]) {
    run(Command::new("openssl").current_dir(dir).args(args));
}

impl SecureRegistry {
    pub fn start(auth: Auth) -> SecureRegistry {
        let dir = TempDir::new("secure-registry");
        let d = dir.path().to_path_buf();
        let port = free_port();
        let host = format!("127.0.0.1:{port}");
        openssl(
            &d,
            &[
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                "ca.key",
                "-out",
                "ca.crt",
                "-days",
                "2",
                "-subj",
                "/CN=skiff-test-ca",
            ],
        );
        openssl(
            &d,
            &[
                "req",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                "server.key",
                "-out",
                "server.csr",
                "-subj",
                "/CN=127.0.0.1",
            ],
        );
        std::fs::write(
            d.join("server.ext"),
            "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n",
        )
        .expect("server.ext");
        openssl(
            &d,
            &[
                "x509",
                "-req",
                "-in",
                "server.csr",
                "-CA",
                "ca.crt",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                "server.crt",
                "-days",
                "2",
                "-extfile",
                "server.ext",
            ],
        );
        let certs = d.join("certs");
        std::fs::create_dir_all(certs.join(&host)).expect("certs dir");
        std::fs::copy(d.join("ca.crt"), certs.join(&host).join("ca.crt")).expect("ca.crt");
        let ca_only = d.join("certs-ca-only");
        std::fs::create_dir_all(ca_only.join(&host)).expect("ca-only dir");
        std::fs::copy(d.join("ca.crt"), ca_only.join(&host).join("ca.crt")).expect("ca.crt");

        let mut children = Vec::new();
        let auth_yaml = match auth {
            Auth::Htpasswd => {
                let hash = Command::new("python3")
                    .args(["-W", "ignore", "-c", &format!("import crypt; print(crypt.crypt({PASSWORD:?}, crypt.mksalt(crypt.METHOD_BLOWFISH)))")])
                    .output()
                    .expect("python3 crypt");
                let hash = String::from_utf8_lossy(&hash.stdout).trim().to_string();
                assert!(hash.starts_with("$2"), "bcrypt hash: {hash}");
                std::fs::write(d.join("htpasswd"), format!("{USER}:{hash}\n")).expect("htpasswd");
                format!(
                    "  htpasswd:\n    realm: skiff-test\n    path: {}/htpasswd\n",
                    d.display()
                )
            }
            Auth::ClientCert => {
                openssl(
                    &d,
                    &[
                        "req",
                        "-newkey",
                        "rsa:2048",
                        "-nodes",
                        "-keyout",
                        "client.key",
                        "-out",
                        "client.csr",
                        "-subj",
                        "/CN=skiff-test-client",
                    ],
                );
                std::fs::write(d.join("client.ext"), "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=clientAuth\n").expect("client.ext");
                openssl(
                    &d,
                    &[
                        "x509",
                        "-req",
                        "-in",
                        "client.csr",
                        "-CA",
                        "ca.crt",
                        "-CAkey",
                        "ca.key",
                        "-CAcreateserial",
                        "-out",
                        "client.cert",
                        "-days",
                        "2",
                        "-extfile",
                        "client.ext",
                    ],
                );
                for f in ["client.cert", "client.key"] {
                    std::fs::copy(d.join(f), certs.join(&host).join(f)).expect("client cert");
                }
                String::new()
            }
            Auth::Token => {
                openssl(
                    &d,
                    &[
                        "req",
                        "-x509",
                        "-newkey",
                        "rsa:2048",
                        "-nodes",
                        "-keyout",
                        "token.key",
                        "-out",
                        "token.crt",
                        "-days",
                        "2",
                        "-subj",
                        "/CN=skiff-test-token",
                    ],
                );
                let tport = free_port();
                let server = Command::new("python3")
                    .arg(crate::workspace().join("tests/auth/tokenserver.py"))
                    .args([
                        &tport.to_string(),
                        &d.join("token.key").display().to_string(),
                        &d.join("token.crt").display().to_string(),
                        USER,
                        PASSWORD,
                        "skiff-test-registry",
                        "skiff-test-issuer",
                    ])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .expect("starting the token server");
                children.push(server);
                wait_port(tport);
                format!(
                    "  token:\n    realm: http://127.0.0.1:{tport}/token\n    service: skiff-test-registry\n    issuer: skiff-test-issuer\n    rootcertbundle: {}/token.crt\n",
                    d.display()
                )
            }
        };
        let client_cas = if auth == Auth::ClientCert {
            format!("    clientcas:\n      - {}/ca.crt\n", d.display())
        } else {
            String::new()
        };
        let auth_section = if auth_yaml.is_empty() {
            String::new()
        } else {
            format!("auth:\n{auth_yaml}")
        };
        let config = format!(
            "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {dir}/data\nhttp:\n  addr: {host}\n  tls:\n    certificate: {dir}/server.crt\n    key: {dir}/server.key\n{client_cas}{auth_section}",
            dir = d.display()
        );
        std::fs::write(d.join("config.yml"), config).expect("config.yml");
        let registry = Command::new("docker-registry")
            .arg("serve")
            .arg(d.join("config.yml"))
            .stdout(std::fs::File::create(d.join("registry.log")).expect("log"))
            .stderr(std::fs::File::create(d.join("registry.err")).expect("log"))
            .spawn()
            .expect("starting docker-registry");
        children.push(registry);
        wait_port(port);
        SecureRegistry {
            host,
            certs,
            ca_only,
            dir,
            children,
        }
    }

    /// Pushes an image from make-images.sh's OCI layout (`busybox`, …) as `REPO:latest`.
    pub fn push(&self, tag: &str, repo: &str) {
        run(Command::new("skopeo")
            .args(["copy", "-q", "--dest-cert-dir"])
            .arg(self.certs.join(&self.host))
            .args(["--dest-creds", &format!("{USER}:{PASSWORD}")])
            .arg(format!(
                "oci:{}:{tag}",
                crate::images_dir().join("oci").display()
            ))
            .arg(format!("docker://{}/{repo}:latest", self.host)));
    }

    /// A Docker config dir whose config.json logs in to this registry (as `docker login`).
    pub fn docker_config(&self, password: &str) -> PathBuf {
        use base64_lite::encode;
        let dir = self.dir.path().join(format!("docker-{password}"));
        std::fs::create_dir_all(&dir).expect("docker config dir");
        let auth = encode(format!("{USER}:{password}").as_bytes());
        std::fs::write(
            dir.join("config.json"),
            format!(r#"{{"auths":{{"{}":{{"auth":"{auth}"}}}}}}"#, self.host),
        )
        .expect("config.json");
        dir
    }
}

/// Standard base64, enough for a config.json (the tests crate avoids another dependency).
mod base64_lite {
    pub fn encode(data: &[u8]) -> String {
        const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut out = String::new();
        for chunk in data.chunks(3) {
            let b = [
                chunk[0],
                *chunk.get(1).unwrap_or(&0),
                *chunk.get(2).unwrap_or(&0),
            ];
            let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
            for i in 0..4 {
                if i <= chunk.len() {
                    out.push(T[((n >> (18 - 6 * i)) & 63) as usize] as char);
                } else {
                    out.push('=');
                }
            }
        }
        out
    }
}

fn wait_port(port: u16) {
    let t0 = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "nothing listens on {port}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

impl Drop for SecureRegistry {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
