//! A stand-in botserver for the CI path test (no botserver binary can be built here): a real executable that
//! serves `GET /api/health` on 127.0.0.1:5858 with the status and version baked into its own file's last bytes
//! (`GBO-TEST health=NNN version=V`, appended by the test), so two builds really differ and a broken build is a
//! different file, as `gbo-ci deploy` sees real releases. Arguments (`--noconsole`) are accepted and ignored.

use std::io::{Read, Write};
use std::net::TcpListener;

fn trailer() -> (u16, String) {
    let bytes = std::fs::read("/proc/self/exe").unwrap_or_default();
    let tail = String::from_utf8_lossy(&bytes[bytes.len().saturating_sub(256)..]).into_owned();
    let found = tail.rsplit("GBO-TEST ").next().unwrap_or_default();
    let mut health = 500;
    let mut version = "unknown".to_string();
    for field in found.split_whitespace() {
        if let Some(v) = field.strip_prefix("health=") {
            health = v.parse().unwrap_or(500);
        } else if let Some(v) = field.strip_prefix("version=") {
            version = v.to_string();
        }
    }
    (health, version)
}

fn main() {
    let (health, version) = trailer();
    let port = std::env::var("GBOT_PORT").ok().and_then(|p| p.parse().ok()).unwrap_or(5858u16);
    let listener = TcpListener::bind(("127.0.0.1", port)).expect("bind");
    println!("botserver {version} listening on {port}, health {health}");
    for stream in listener.incoming() {
        let Ok(mut stream) = stream else { continue };
        let mut request = [0u8; 1024];
        let n = stream.read(&mut request).unwrap_or(0);
        let line = String::from_utf8_lossy(&request[..n]);
        let status = if line.starts_with("GET /api/health") { health } else { 200 };
        let body = format!("{version}\n");
        let _ =
            write!(stream, "HTTP/1.0 {status} X\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len());
    }
}
