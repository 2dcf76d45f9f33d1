//! A plain-HTTP file server on loopback for ADD's URL sources: each path has
//! one reply (a file with or without `Last-Modified`, a status, a redirect, a
//! body cut short, a slow body), and every request is counted.
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Clone, Debug)]
pub enum Reply {
    /// 200 with this body, and `Last-Modified` when given (an HTTP date).
    File(Vec<u8>, Option<&'static str>),
    /// This status, no body.
    Status(u16),
    /// 302 to this path on the same server.
    Redirect(&'static str),
    /// 200 announcing the whole body's length, then only the first `n` bytes.
    Truncated(Vec<u8>, usize),
    /// 200 with the body sent in 4 pieces, `pause` apart.
    Slow(Vec<u8>, Duration),
}

pub struct FileServer {
    /// `http://127.0.0.1:PORT`
    pub base: String,
    routes: Arc<Mutex<HashMap<String, Reply>>>,
    hits: Arc<Mutex<HashMap<String, usize>>>,
}

impl FileServer {
    pub fn start(routes: &[(&str, Reply)]) -> FileServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind file server");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        let routes: Arc<Mutex<HashMap<String, Reply>>> = Arc::new(Mutex::new(
            routes
                .iter()
                .map(|(p, r)| (p.to_string(), r.clone()))
                .collect(),
        ));
        let hits: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
        let (r, h) = (routes.clone(), hits.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let (r, h) = (r.clone(), h.clone());
                std::thread::spawn(move || {
                    let _ = serve(conn, &r, &h);
                });
            }
        });
        FileServer { base, routes, hits }
    }

    /// The URL of `path` (which starts with `/`).
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Replaces the reply of `path`.
    pub fn set(&self, path: &str, reply: Reply) {
        self.routes.lock().unwrap().insert(path.to_string(), reply);
    }

    /// How many requests `path` has had.
    pub fn hits(&self, path: &str) -> usize {
        self.hits.lock().unwrap().get(path).copied().unwrap_or(0)
    }
}

fn serve(
    conn: TcpStream,
    routes: &Mutex<HashMap<String, Reply>>,
    hits: &Mutex<HashMap<String, usize>>,
) -> std::io::Result<()> {
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let path = line.split_whitespace().nth(1).unwrap_or("/").to_string();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h)? == 0 || h == "\r\n" || h == "\n" {
            break;
        }
    }
    *hits.lock().unwrap().entry(path.clone()).or_default() += 1;
    let reply = routes.lock().unwrap().get(&path).cloned();
    let mut out = conn;
    let head = |status: &str, len: usize, extra: &str| {
        format!("HTTP/1.1 {status}\r\nContent-Length: {len}\r\nConnection: close\r\n{extra}\r\n")
    };
    match reply {
        None => out.write_all(head("404 Not Found", 0, "").as_bytes())?,
        Some(Reply::Status(code)) => {
            out.write_all(head(&format!("{code} Status"), 0, "").as_bytes())?
        }
        Some(Reply::Redirect(to)) => {
            out.write_all(head("302 Found", 0, &format!("Location: {to}\r\n")).as_bytes())?
        }
        Some(Reply::File(body, modified)) => {
            let extra = modified
                .map(|m| format!("Last-Modified: {m}\r\n"))
                .unwrap_or_default();
            out.write_all(head("200 OK", body.len(), &extra).as_bytes())?;
            out.write_all(&body)?;
        }
        Some(Reply::Truncated(body, n)) => {
            out.write_all(head("200 OK", body.len(), "").as_bytes())?;
            out.write_all(&body[..n.min(body.len())])?;
        }
        Some(Reply::Slow(body, pause)) => {
            out.write_all(head("200 OK", body.len(), "").as_bytes())?;
            for piece in body.chunks(body.len().div_ceil(4).max(1)) {
                out.flush()?;
                std::thread::sleep(pause);
                out.write_all(piece)?;
            }
        }
    }
    out.flush()
}
