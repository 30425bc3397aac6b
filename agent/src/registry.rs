//! An OCI distribution client (sync): manifests and blobs, anonymous, Basic and Bearer auth
//! (tokens cached per scope), HTTPS with the Mozilla roots or the CAs in
//! `certs.d/HOST:PORT/*.crt` and the client certificate `NAME.cert` + `NAME.key` there (as Docker
//! reads them), plain HTTP for hosts listed as insecure
//! and for loopback registries that do not speak TLS (as dockerd allows). Blob reads resume
//! from an offset with `Range`.

use std::collections::HashMap;
use std::io::Read;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use crate::reference::Reference;
use base64::Engine;

/// Media types a pull accepts for a manifest.
pub const MANIFEST_TYPES: [&str; 4] = [
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.docker.distribution.manifest.v2+json",
];

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("{url}: {source}")]
    Http {
        url: String,
        #[source]
        source: Box<ureq::Error>,
    },
    #[error("{url}: HTTP {status}{detail}")]
    Status {
        url: String,
        status: u16,
        detail: String,
    },
    #[error("{url}: authentication failed (HTTP 401): {detail}")]
    Unauthorized { url: String, detail: String },
    #[error("{0}: manifest unknown (no such tag or digest)")]
    NotFound(String),
    #[error("{url}: unsupported authentication challenge {challenge:?}")]
    Challenge { url: String, challenge: String },
    #[error("token from {url}: {detail}")]
    Token { url: String, detail: String },
    #[error("reading the response of {url}")]
    Body {
        url: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{url}: the manifest is {got}, but {want} was asked for")]
    DigestMismatch {
        url: String,
        want: String,
        got: String,
    },
    #[error(
        "{url}: the registry's TLS certificate is not trusted ({detail}); put its CA at {hint}/ca.crt"
    )]
    Certificate {
        url: String,
        detail: String,
        hint: String,
    },
    #[error("reading the CA certificates in {0}")]
    Ca(PathBuf, #[source] std::io::Error),
    #[error("{url}: the registry wants a client certificate; put NAME.cert and NAME.key in {hint}")]
    ClientCertificate { url: String, hint: String },
}

/// Username and password for one registry host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

/// Docker's `config.json` `auths`, as `docker login` writes them.
#[derive(Debug, Clone, Default)]
pub struct AuthConfig {
    pub hosts: HashMap<String, Credentials>,
}

impl AuthConfig {
    /// Parses a Docker `config.json`; entries without inline `auth` are skipped.
    pub fn parse(json: &[u8]) -> Result<AuthConfig, serde_json::Error> {
        let v: serde_json::Value = serde_json::from_slice(json)?;
        let mut hosts = HashMap::new();
        if let Some(auths) = v["auths"].as_object() {
            for (host, entry) in auths {
                let decoded = entry["auth"]
                    .as_str()
                    .and_then(|a| base64::engine::general_purpose::STANDARD.decode(a).ok())
                    .and_then(|b| String::from_utf8(b).ok());
                let creds = match (
                    decoded,
                    entry["username"].as_str(),
                    entry["password"].as_str(),
                ) {
                    (Some(d), _, _) => d
                        .split_once(':')
                        .map(|(u, p)| (u.to_string(), p.to_string())),
                    (None, Some(u), Some(p)) => Some((u.to_string(), p.to_string())),
                    _ => None,
                };
                if let Some((username, password)) = creds {
                    let host = host
                        .trim_start_matches("https://")
                        .trim_start_matches("http://")
                        .trim_end_matches('/')
                        .trim_end_matches("/v1")
                        .to_string();
                    hosts.insert(host, Credentials { username, password });
                }
            }
        }
        Ok(AuthConfig { hosts })
    }
}

#[derive(Debug, Clone, Default)]
pub struct ClientOptions {
    /// Hosts (`host:port`) reached over plain HTTP although not on loopback.
    pub insecure: Vec<String>,
    pub auth: AuthConfig,
    /// Directories holding `HOST:PORT/*.crt` CA files, searched in order.
    pub certs_dirs: Vec<PathBuf>,
}

pub struct Client {
    agent: ureq::Agent,
    opts: ClientOptions,
    /// Bearer tokens by `host + scope`.
    tokens: Mutex<HashMap<String, String>>,
    /// Per host: the scheme it answers on and the agent (own CAs or the default).
    hosts: Mutex<HashMap<String, (&'static str, ureq::Agent)>>,
}

/// A manifest as the registry served it.
pub struct Fetched {
    pub bytes: Vec<u8>,
    pub media_type: String,
    pub digest: String,
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(ring::digest::digest(&ring::digest::SHA256, bytes).as_ref())
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn is_loopback(host: &str) -> bool {
    let name = host.rsplit_once(':').map_or(host, |(h, p)| {
        if p.chars().all(|c| c.is_ascii_digit()) {
            h
        } else {
            host
        }
    });
    let name = name.trim_start_matches('[').trim_end_matches(']');
    name == "localhost" || name.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// What certs.d holds for one host: extra CAs (`*.crt`) and a client certificate
/// (`NAME.cert` with `NAME.key`), as Docker reads them.
#[derive(Default)]
struct HostTls {
    cas: Vec<ureq::tls::Certificate<'static>>,
    client: Option<ureq::tls::ClientCert>,
}

fn agent(host: Option<&HostTls>) -> ureq::Agent {
    let mut tls = ureq::tls::TlsConfig::builder();
    if let Some(h) = host {
        if !h.cas.is_empty() {
            tls = tls.root_certs(ureq::tls::RootCerts::new_with_certs(&h.cas));
        }
        tls = tls.client_cert(h.client.clone());
    }
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_connect(Some(Duration::from_secs(15)))
        .tls_config(tls.build())
        .build()
        .into()
}

impl Client {
    pub fn new(opts: ClientOptions) -> Client {
        Client {
            agent: agent(None),
            opts,
            tokens: Mutex::new(HashMap::new()),
            hosts: Mutex::new(HashMap::new()),
        }
    }

    /// The TLS material certs.d has for `host` (the first directory that has any).
    fn host_tls(&self, host: &str) -> Result<Option<HostTls>, RegistryError> {
        let pem_items =
            |path: &std::path::Path| -> Result<Vec<ureq::tls::PemItem<'static>>, RegistryError> {
                let pem = std::fs::read(path)
                    .map_err(|err| RegistryError::Ca(path.to_path_buf(), err))?;
                Ok(ureq::tls::parse_pem(&pem).flatten().collect())
            };
        for dir in &self.opts.certs_dirs {
            let d = dir.join(host);
            let Ok(entries) = std::fs::read_dir(&d) else {
                continue;
            };
            let mut tls = HostTls::default();
            for e in entries.flatten() {
                let path = e.path();
                match path.extension().and_then(|x| x.to_str()) {
                    Some("crt") => {
                        for item in pem_items(&path)? {
                            if let ureq::tls::PemItem::Certificate(c) = item {
                                tls.cas.push(c);
                            }
                        }
                    }
                    Some("cert") => {
                        let chain: Vec<_> = pem_items(&path)?
                            .into_iter()
                            .filter_map(|i| match i {
                                ureq::tls::PemItem::Certificate(c) => Some(c),
                                _ => None,
                            })
                            .collect();
                        let key = pem_items(&path.with_extension("key"))?
                            .into_iter()
                            .find_map(|i| match i {
                                ureq::tls::PemItem::PrivateKey(k) => Some(k),
                                _ => None,
                            });
                        if let Some(key) = key {
                            tls.client = Some(ureq::tls::ClientCert::new_with_certs(&chain, key));
                        }
                    }
                    _ => {}
                }
            }
            if !tls.cas.is_empty() || tls.client.is_some() {
                return Ok(Some(tls));
            }
        }
        Ok(None)
    }

    /// Scheme and agent for `host`: https with its own CAs when certs.d has them; http for
    /// insecure hosts; for loopback, https unless the registry turns out not to speak TLS.
    fn route(&self, host: &str) -> Result<(&'static str, ureq::Agent), RegistryError> {
        if let Some(r) = self.hosts.lock().ok().and_then(|h| h.get(host).cloned()) {
            return Ok(r);
        }
        let route = match self.host_tls(host)? {
            Some(tls) => ("https", agent(Some(&tls))),
            None if self.opts.insecure.iter().any(|h| h == host) => ("http", self.agent.clone()),
            None if is_loopback(host) => {
                let probe = self.agent.get(format!("https://{host}/v2/")).call();
                match probe {
                    Ok(_) => ("https", self.agent.clone()),
                    // A TLS server whose certificate we do not trust: https, and the real
                    // request will say so.
                    Err(e)
                        if matches!(tls_error(&e), Some(rustls::Error::InvalidCertificate(_))) =>
                    {
                        ("https", self.agent.clone())
                    }
                    // Plain HTTP answered the handshake, or nothing answered at all.
                    Err(_) => ("http", self.agent.clone()),
                }
            }
            None => ("https", self.agent.clone()),
        };
        if let Ok(mut h) = self.hosts.lock() {
            h.insert(host.to_string(), route.clone());
        }
        Ok(route)
    }

    /// `SCHEME://HOST`.
    pub fn base(&self, host: &str) -> Result<String, RegistryError> {
        Ok(format!("{}://{host}", self.route(host)?.0))
    }

    fn http_err(&self, host: &str, url: &str, e: ureq::Error) -> RegistryError {
        if let Some(rustls::Error::AlertReceived(
            rustls::AlertDescription::CertificateRequired
            | rustls::AlertDescription::BadCertificate,
        )) = tls_error(&e)
        {
            let hint = self.opts.certs_dirs.first().map_or_else(
                || format!("certs.d/{host}"),
                |d| d.join(host).display().to_string(),
            );
            return RegistryError::ClientCertificate {
                url: url.to_string(),
                hint,
            };
        }
        if let Some(rustls::Error::InvalidCertificate(c)) = tls_error(&e) {
            let hint = self.opts.certs_dirs.first().map_or_else(
                || format!("certs.d/{host}"),
                |d| d.join(host).display().to_string(),
            );
            return RegistryError::Certificate {
                url: url.to_string(),
                detail: format!("{c:?}"),
                hint,
            };
        }
        RegistryError::Http {
            url: url.to_string(),
            source: Box::new(e),
        }
    }

    fn host(r: &Reference) -> String {
        r.resolve_registry().to_string()
    }

    /// GET with auth: on 401 the challenge is answered once (Basic or a Bearer token).
    fn get(
        &self,
        host: &str,
        repo: &str,
        url: &str,
        headers: &[(&str, String)],
    ) -> Result<ureq::http::Response<ureq::Body>, RegistryError> {
        let scope = format!("repository:{repo}:pull");
        let key = format!("{host} {scope}");
        let mut auth = self.tokens.lock().ok().and_then(|t| t.get(&key).cloned());
        let agent = self.route(host)?.1;
        for attempt in 0..2 {
            let mut req = agent.get(url);
            for (k, v) in headers {
                req = req.header(*k, v);
            }
            if let Some(a) = &auth {
                req = req.header("Authorization", a);
            }
            let resp = req.call().map_err(|e| self.http_err(host, url, e))?;
            if resp.status() != 401 || attempt == 1 {
                if resp.status() == 401 {
                    return Err(RegistryError::Unauthorized {
                        url: url.to_string(),
                        detail: if self.opts.auth.hosts.contains_key(host) {
                            "the credentials were refused".into()
                        } else {
                            format!("no credentials for {host} (docker login, or --config DIR)")
                        },
                    });
                }
                return Ok(resp);
            }
            let challenge = resp
                .headers()
                .get("www-authenticate")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string();
            let answer = self.answer(host, &scope, url, &challenge)?;
            if let Ok(mut t) = self.tokens.lock() {
                t.insert(key.clone(), answer.clone());
            }
            auth = Some(answer);
        }
        Err(RegistryError::Unauthorized {
            url: url.to_string(),
            detail: "no answer to the challenge".into(),
        })
    }

    fn basic(&self, host: &str) -> Option<String> {
        self.opts.hosts_creds(host).map(|c| {
            let raw = format!("{}:{}", c.username, c.password);
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(raw)
            )
        })
    }

    /// The Authorization header value for a `WWW-Authenticate` challenge.
    fn answer(
        &self,
        host: &str,
        scope: &str,
        url: &str,
        challenge: &str,
    ) -> Result<String, RegistryError> {
        let (scheme, params) = challenge.split_once(' ').unwrap_or((challenge, ""));
        match scheme.to_ascii_lowercase().as_str() {
            "basic" => self.basic(host).ok_or_else(|| RegistryError::Unauthorized {
                url: url.to_string(),
                detail: format!(
                    "{host} wants a username and password (docker login, or --config DIR)"
                ),
            }),
            "bearer" => {
                let p = parse_challenge(params);
                let realm = p.get("realm").ok_or_else(|| RegistryError::Challenge {
                    url: url.to_string(),
                    challenge: challenge.to_string(),
                })?;
                let mut token_url = format!(
                    "{realm}?scope={}",
                    p.get("scope").map_or(scope, |s| s.as_str())
                );
                if let Some(service) = p.get("service") {
                    token_url.push_str(&format!("&service={service}"));
                }
                // The token server may sit behind the same private CA.
                let agent = match self.host_tls(host)? {
                    Some(tls) => agent(Some(&tls)),
                    None => self.agent.clone(),
                };
                let mut req = agent.get(&token_url);
                if let Some(b) = self.basic(host) {
                    req = req.header("Authorization", &b);
                }
                let mut resp = req.call().map_err(|e| RegistryError::Http {
                    url: token_url.clone(),
                    source: Box::new(e),
                })?;
                if resp.status() != 200 {
                    return Err(RegistryError::Token {
                        url: token_url,
                        detail: format!("HTTP {}", resp.status()),
                    });
                }
                let body = resp
                    .body_mut()
                    .read_to_vec()
                    .map_err(|e| RegistryError::Http {
                        url: token_url.clone(),
                        source: Box::new(e),
                    })?;
                let v: serde_json::Value =
                    serde_json::from_slice(&body).map_err(|e| RegistryError::Token {
                        url: token_url.clone(),
                        detail: e.to_string(),
                    })?;
                let token = v["token"]
                    .as_str()
                    .or_else(|| v["access_token"].as_str())
                    .ok_or_else(|| RegistryError::Token {
                        url: token_url.clone(),
                        detail: "no token in the answer".into(),
                    })?;
                Ok(format!("Bearer {token}"))
            }
            _ => Err(RegistryError::Challenge {
                url: url.to_string(),
                challenge: challenge.to_string(),
            }),
        }
    }

    /// Fetches the manifest `reference` names (by digest if it has one, else by tag).
    pub fn manifest(&self, reference: &Reference) -> Result<Fetched, RegistryError> {
        let what = reference
            .digest()
            .or(reference.tag())
            .unwrap_or("latest")
            .to_string();
        self.manifest_by(reference, &what)
    }

    /// Fetches manifest `what` (a tag or digest) of `reference`'s repository.
    pub fn manifest_by(&self, reference: &Reference, what: &str) -> Result<Fetched, RegistryError> {
        let host = Self::host(reference);
        let repo = reference.repository();
        let url = format!("{}/v2/{repo}/manifests/{what}", self.base(&host)?);
        let mut resp = self.get(&host, repo, &url, &[("Accept", MANIFEST_TYPES.join(", "))])?;
        match resp.status().as_u16() {
            200 => {}
            404 => return Err(RegistryError::NotFound(format!("{host}/{repo}:{what}"))),
            s => {
                return Err(RegistryError::Status {
                    url,
                    status: s,
                    detail: String::new(),
                });
            }
        }
        let media_type = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_string();
        let bytes = resp
            .body_mut()
            .with_config()
            .limit(4 << 20)
            .read_to_vec()
            .map_err(|e| RegistryError::Http {
                url: url.clone(),
                source: Box::new(e),
            })?;
        let digest = format!("sha256:{}", sha256_hex(&bytes));
        if what.starts_with("sha256:") && what != digest {
            return Err(RegistryError::DigestMismatch {
                url,
                want: what.to_string(),
                got: digest,
            });
        }
        Ok(Fetched {
            bytes,
            media_type,
            digest,
        })
    }

    /// A reader over blob `digest` from byte `offset` on. Returns where the stream really
    /// starts: `offset` when the registry honoured the range, 0 when it sent the whole blob.
    pub fn blob(
        &self,
        reference: &Reference,
        digest: &str,
        offset: u64,
    ) -> Result<(Box<dyn Read + Send>, u64), RegistryError> {
        let host = Self::host(reference);
        let repo = reference.repository();
        let url = format!("{}/v2/{repo}/blobs/{digest}", self.base(&host)?);
        let headers: Vec<(&str, String)> = if offset > 0 {
            vec![("Range", format!("bytes={offset}-"))]
        } else {
            Vec::new()
        };
        let resp = self.get(&host, repo, &url, &headers)?;
        let start = match resp.status().as_u16() {
            200 => 0,
            206 => offset,
            404 => {
                return Err(RegistryError::Status {
                    url,
                    status: 404,
                    detail: " (blob unknown)".into(),
                });
            }
            s => {
                return Err(RegistryError::Status {
                    url,
                    status: s,
                    detail: String::new(),
                });
            }
        };
        let reader = resp.into_body().into_with_config().limit(u64::MAX).reader();
        Ok((Box::new(reader), start))
    }
}

impl ClientOptions {
    fn hosts_creds(&self, host: &str) -> Option<&Credentials> {
        self.auth.hosts.get(host).or_else(|| {
            (host == "registry-1.docker.io" || host == "index.docker.io")
                .then(|| {
                    self.auth
                        .hosts
                        .get("index.docker.io")
                        .or_else(|| self.auth.hosts.get("docker.io"))
                })
                .flatten()
        })
    }
}

/// The rustls error behind a ureq error (ureq reports handshake failures as I/O errors).
fn tls_error(e: &ureq::Error) -> Option<&rustls::Error> {
    match e {
        ureq::Error::Rustls(r) => Some(r),
        ureq::Error::Io(io) => io.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()),
        _ => None,
    }
}

/// `realm="…",service="…",scope="…"` → map.
fn parse_challenge(params: &str) -> HashMap<String, String> {
    let mut out = HashMap::new();
    let mut rest = params.trim();
    while !rest.is_empty() {
        let Some((key, after)) = rest.split_once('=') else {
            break;
        };
        let key = key
            .trim()
            .trim_start_matches(',')
            .trim()
            .to_ascii_lowercase();
        let (value, next) = if let Some(quoted) = after.strip_prefix('"') {
            match quoted.find('"') {
                Some(end) => (&quoted[..end], &quoted[end + 1..]),
                None => (quoted, ""),
            }
        } else {
            match after.find(',') {
                Some(end) => (&after[..end], &after[end..]),
                None => (after, ""),
            }
        };
        out.insert(key, value.to_string());
        rest = next.trim_start_matches(',').trim();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges_parse() {
        let p = parse_challenge(
            r#"realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull,push""#,
        );
        assert_eq!(p["realm"], "https://auth.example/token");
        assert_eq!(p["service"], "registry.example");
        assert_eq!(p["scope"], "repository:a/b:pull,push");
    }

    #[test]
    fn schemes() {
        let c = Client::new(ClientOptions {
            insecure: vec!["registry.example:5000".into()],
            ..ClientOptions::default()
        });
        // Nothing listens on port 9 of loopback: plain HTTP (the error comes with the request).
        assert_eq!(c.base("127.0.0.1:9").unwrap(), "http://127.0.0.1:9");
        assert_eq!(
            c.base("registry.example:5000").unwrap(),
            "http://registry.example:5000"
        );
        assert_eq!(c.base("other.example").unwrap(), "https://other.example");
        assert!(is_loopback("localhost:5000") && is_loopback("[::1]:5000"));
        assert!(!is_loopback("10.0.0.1:5000"));
    }

    #[test]
    fn docker_config_auths() {
        let cfg = AuthConfig::parse(br#"{"auths":{"reg.example:5000":{"auth":"dXNlcjpwYXNz"},"https://index.docker.io/v1/":{"username":"u","password":"p"}}}"#).unwrap();
        assert_eq!(
            cfg.hosts["reg.example:5000"],
            Credentials {
                username: "user".into(),
                password: "pass".into()
            }
        );
        assert_eq!(cfg.hosts["index.docker.io"].username, "u");
    }
}
