//! A small HTTP/1.1 proxy in front of the test registry: it records every request and can
//! inject faults (corrupt blobs, garbage manifests, connections cut mid-body) so tests can see
//! what a client fetched and how it copes.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Logged {
    pub method: String,
    pub path: String,
    pub range: Option<String>,
    /// Body bytes the proxy passed to the client.
    pub sent: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    None,
    /// Flip one byte in every blob body.
    CorruptBlobs,
    /// Replace every manifest body with bytes that are not JSON.
    GarbageManifests,
    /// Close blob responses after this many body bytes, the next `n` times.
    CutBlobsAfter(u64, u32),
    /// Send this many body bytes of a blob, then hang (until the client goes away).
    StallBlobsAfter(u64),
}

pub struct Proxy {
    /// `127.0.0.1:PORT`, usable as a registry host in image references.
    pub addr: String,
    log: Arc<Mutex<Vec<Logged>>>,
    fault: Arc<Mutex<Fault>>,
}

impl Proxy {
    /// A proxy to the registry at `upstream` (`host:port`).
    pub fn start(upstream: &str) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("binding the proxy");
        let addr = listener.local_addr().expect("proxy address").to_string();
        let log = Arc::new(Mutex::new(Vec::new()));
        let fault = Arc::new(Mutex::new(Fault::None));
        let (l, f, up) = (log.clone(), fault.clone(), upstream.to_string());
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let (l, f, up) = (l.clone(), f.clone(), up.clone());
                std::thread::spawn(move || {
                    let _ = serve(conn, &up, &l, &f);
                });
            }
        });
        Proxy { addr, log, fault }
    }

    pub fn set_fault(&self, fault: Fault) {
        *self.fault.lock().expect("fault lock") = fault;
    }

    pub fn log(&self) -> Vec<Logged> {
        self.log.lock().expect("log lock").clone()
    }

    pub fn clear(&self) {
        self.log.lock().expect("log lock").clear();
    }

    /// GETs of blob `digest`.
    pub fn blob_gets(&self, digest: &str) -> Vec<Logged> {
        self.log()
            .into_iter()
            .filter(|r| r.method == "GET" && r.path.ends_with(&format!("/blobs/{digest}")))
            .collect()
    }
}

fn serve(
    mut client: TcpStream,
    upstream: &str,
    log: &Mutex<Vec<Logged>>,
    fault: &Mutex<Fault>,
) -> std::io::Result<()> {
    let mut reader = BufReader::new(client.try_clone()?);
    // One request per connection: every answer carries `Connection: close`.
    {
        let mut head = Vec::new();
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line)? == 0 {
                return Ok(());
            }
            let end = line == "\r\n";
            head.push(line);
            if end {
                break;
            }
        }
        let mut parts = head[0].split_whitespace();
        let (method, path) = (
            parts.next().unwrap_or("").to_string(),
            parts.next().unwrap_or("").to_string(),
        );
        let range = head
            .iter()
            .find(|h| h.to_ascii_lowercase().starts_with("range:"))
            .map(|h| h[6..].trim().to_string());
        let mut up = TcpStream::connect(upstream)?;
        let mut req: String = head
            .iter()
            .filter(|h| !h.to_ascii_lowercase().starts_with("connection:"))
            .cloned()
            .collect();
        req.insert_str(req.len() - 2, "Connection: close\r\n");
        up.write_all(req.as_bytes())?;
        let mut resp = Vec::new();
        up.read_to_end(&mut resp)?;
        let split = resp
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .map_or(resp.len(), |p| p + 4);
        let (rhead, body) = resp.split_at(split);
        let mut body = body.to_vec();
        let mut rhead = String::from_utf8_lossy(rhead).into_owned();
        let f = *fault.lock().expect("fault lock");
        let is_blob = path.contains("/blobs/") && method == "GET";
        let is_manifest = path.contains("/manifests/") && method == "GET";
        let mut cut = None;
        match f {
            Fault::CorruptBlobs if is_blob && !body.is_empty() => {
                let mid = body.len() / 2;
                body[mid] ^= 0xff;
            }
            Fault::GarbageManifests if is_manifest => {
                body = b"this is { not json".to_vec();
                rhead = set_length(&rhead, body.len());
            }
            Fault::CutBlobsAfter(n, times) if is_blob && times > 0 && (body.len() as u64) > n => {
                cut = Some(n);
                *fault.lock().expect("fault lock") = Fault::CutBlobsAfter(n, times - 1);
            }
            _ => {}
        }
        // The client must not reuse this connection: answer with close semantics.
        let rhead = rhead.replace("\r\n\r\n", "\r\nConnection: close\r\n\r\n");
        client.write_all(rhead.as_bytes())?;
        if let Fault::StallBlobsAfter(n) = f
            && is_blob
            && (body.len() as u64) > n
        {
            let n = usize::try_from(n).unwrap_or(0);
            client.write_all(&body[..n])?;
            client.flush()?;
            log.lock().expect("log lock").push(Logged {
                method,
                path,
                range,
                sent: n as u64,
            });
            // Hold the connection open until the client dies.
            let mut sink = [0u8; 1];
            let _ = client.read(&mut sink);
            return Ok(());
        }
        let send = cut.map_or(body.len(), |n| usize::try_from(n).unwrap_or(body.len()));
        client.write_all(&body[..send])?;
        log.lock().expect("log lock").push(Logged {
            method,
            path,
            range,
            sent: send as u64,
        });
        client.flush()?;
        let _ = client.shutdown(std::net::Shutdown::Both);
    }
    Ok(())
}

fn set_length(head: &str, len: usize) -> String {
    head.split("\r\n")
        .map(|l| {
            if l.to_ascii_lowercase().starts_with("content-length:") {
                format!("Content-Length: {len}")
            } else if l.to_ascii_lowercase().starts_with("docker-content-digest:") {
                String::from("X-Removed: digest")
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\r\n")
}
