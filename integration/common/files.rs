//! A plain-HTTP file server on loopback for ADD's URL sources: each path has
//! one reply (a file with or without `Last-Modified`, a status, a redirect, a
//! body cut short, a slow body), and every request is counted. A TLS hello
//! (an `https://` URL pointed at it) is counted too, then the connection is
//! closed unanswered, as some plain-HTTP servers do.
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Clone, Debug)]
pub enum Reply {
    /// 200 with this body, and `Last-Modified` when given (an HTTP date).
    File(Vec<u8>, Option<&'static str>),
    /// This status, no body.
    Status(u16),
    /// 302 to this location: a path on the same server, or any URL.
    Redirect(&'static str),
    /// 200 announcing the whole body's length, then only the first `n` bytes.
    Truncated(Vec<u8>, usize),
    /// 200 with the body sent in 4 pieces, `pause` apart.
    Slow(Vec<u8>, Duration),
    /// 200 as a cloud object store answers a GET: `Last-Modified` and `ETag`.
    Object(Vec<u8>),
    /// 200 with this body and `Content-Type`.
    Typed(Vec<u8>, &'static str),
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

    /// How many connections opened with a TLS hello.
    pub fn tls_hellos(&self) -> usize {
        self.hits(TLS_HELLO)
    }
}

/// The key TLS hellos are counted under: no path looks like it.
const TLS_HELLO: &str = "<tls hello>";

fn serve(
    conn: TcpStream,
    routes: &Mutex<HashMap<String, Reply>>,
    hits: &Mutex<HashMap<String, usize>>,
) -> std::io::Result<()> {
    let mut first = [0u8; 1];
    // 0x16: a TLS handshake record.
    if conn.peek(&mut first)? == 1 && first[0] == 0x16 {
        *hits.lock().unwrap().entry(TLS_HELLO.into()).or_default() += 1;
        // Read the hello before closing, so the client sees EOF, not a reset.
        let mut hello = [0u8; 16 << 10];
        let _ = (&conn).read(&mut hello)?;
        return Ok(());
    }
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    // Decoded as a server would (GCS's client escapes `-` and `.`).
    let path = percent_decode(line.split_whitespace().nth(1).unwrap_or("/"));
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
        Some(Reply::Object(body)) => {
            let extra = "Last-Modified: Mon, 02 Jan 2006 15:04:05 GMT\r\nETag: \"kiln-test\"\r\n";
            out.write_all(head("200 OK", body.len(), extra).as_bytes())?;
            out.write_all(&body)?;
        }
        Some(Reply::Typed(body, content_type)) => {
            let extra = format!("Content-Type: {content_type}\r\n");
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

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        match (
            b[i],
            b.get(i + 1).copied().and_then(hex),
            b.get(i + 2).copied().and_then(hex),
        ) {
            (b'%', Some(h), Some(l)) => {
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            (c, _, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A git repository served over smart HTTP on loopback by `git http-backend`
/// (through Python's CGI server), for ADD's git sources. Its history: `v1`
/// (a file, an executable, a link, a nested directory), then one more commit
/// on `main`.
pub struct GitServer {
    /// `http://127.0.0.1:PORT/cgi-bin/git/r.git`
    pub url: String,
    /// The commit `v1` names.
    pub v1: String,
    /// The bare repository served.
    repo: PathBuf,
    server: std::process::Child,
    _dir: tempfile::TempDir,
}

impl GitServer {
    pub fn start() -> GitServer {
        GitServer::start_with(&[])
    }

    /// As `start`, with `extra` files (name, content) in the first commit.
    pub fn start_with(extra: &[(&str, &str)]) -> GitServer {
        use std::os::unix::fs::PermissionsExt;
        use std::process::Command;
        let git = super::require("git", "apt-get install git");
        let python = super::require("python3", "apt-get install python3");
        let dir = tempfile::tempdir().expect("tempdir");
        // The CGI server runs scripts as nobody: everything must be readable.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let src = dir.path().join("src");
        let run = |args: &[&str]| {
            super::run_ok(
                Command::new(&git)
                    .args([
                        "-c",
                        "user.email=t@t",
                        "-c",
                        "user.name=t",
                        "-c",
                        "init.defaultBranch=main",
                    ])
                    .args(args)
                    .current_dir(dir.path()),
                &format!("git {args:?}"),
            )
        };
        std::fs::create_dir_all(src.join("sub/deep")).unwrap();
        std::fs::write(src.join("a.txt"), "hello\n").unwrap();
        std::fs::write(src.join("run.sh"), "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(src.join("run.sh"), std::fs::Permissions::from_mode(0o755))
            .unwrap();
        std::fs::write(src.join("sub/deep/f"), "deep\n").unwrap();
        std::os::unix::fs::symlink("a.txt", src.join("link")).unwrap();
        super::write_context(&src, extra);
        run(&["init", "-q", "src"]);
        run(&["-C", "src", "add", "-A"]);
        run(&["-C", "src", "commit", "-qm", "one"]);
        run(&["-C", "src", "tag", "v1"]);
        std::fs::write(src.join("b.txt"), "two\n").unwrap();
        run(&["-C", "src", "add", "-A"]);
        run(&["-C", "src", "commit", "-qm", "two"]);
        let v1 = String::from_utf8_lossy(&run(&["-C", "src", "rev-parse", "v1"]).stdout)
            .trim()
            .to_string();
        std::fs::create_dir(dir.path().join("repos")).unwrap();
        run(&["clone", "-q", "--bare", "src", "repos/r.git"]);
        let cgi = dir.path().join("www/cgi-bin");
        std::fs::create_dir_all(&cgi).unwrap();
        std::fs::write(
            cgi.join("git"),
            format!(
                "#!/bin/sh\nexport GIT_PROJECT_ROOT={} GIT_HTTP_EXPORT_ALL=1\nexport GIT_CONFIG_COUNT=1 GIT_CONFIG_KEY_0=safe.directory GIT_CONFIG_VALUE_0='*'\nexec {} http-backend\n",
                dir.path().join("repos").display(),
                git.display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(cgi.join("git"), std::fs::Permissions::from_mode(0o755)).unwrap();
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let server = Command::new(python)
            .args([
                "-m",
                "http.server",
                "--cgi",
                "--bind",
                "127.0.0.1",
                &port.to_string(),
            ])
            .current_dir(dir.path().join("www"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start the git server");
        let url = format!("http://127.0.0.1:{port}/cgi-bin/git/r.git");
        for _ in 0..100 {
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        GitServer {
            url,
            v1,
            repo: dir.path().join("repos/r.git"),
            server,
            _dir: dir,
        }
    }
}

/// A tree entry for [`GitServer::craft_branch`].
pub enum Node {
    Blob(&'static str),
    Tree(Vec<(&'static str, Node)>),
}

impl GitServer {
    /// Makes `branch` a commit of `tree`, written object by object with
    /// `git hash-object` and `git mktree`, which take names (`..`, `.git`) no
    /// work tree could hold: what a hostile server may send.
    pub fn craft_branch(&self, branch: &str, tree: &[(&'static str, Node)]) {
        let id = self.write_tree(tree);
        let commit = self.git(&["commit-tree", &id, "-m", "crafted"], "");
        self.git(
            &["update-ref", &format!("refs/heads/{branch}"), &commit],
            "",
        );
    }

    fn write_tree(&self, tree: &[(&'static str, Node)]) -> String {
        let mut listing = String::new();
        for (name, node) in tree {
            let line = match node {
                Node::Blob(text) => {
                    let id = self.git(&["hash-object", "-w", "--stdin"], text);
                    format!("100644 blob {id}\t{name}\n")
                }
                Node::Tree(entries) => {
                    format!("040000 tree {}\t{name}\n", self.write_tree(entries))
                }
            };
            listing.push_str(&line);
        }
        self.git(&["mktree"], &listing)
    }

    /// Runs git in the served repository with `input` on stdin; its stdout, trimmed.
    fn git(&self, args: &[&str], input: &str) -> String {
        use std::process::{Command, Stdio};
        let mut child = Command::new(super::require("git", "apt-get install git"))
            .args(["-c", "user.email=t@t", "-c", "user.name=t"])
            .args(args)
            .current_dir(&self.repo)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run git");
        child
            .stdin
            .take()
            .expect("git's stdin")
            .write_all(input.as_bytes())
            .expect("write to git");
        let out = child.wait_with_output().expect("wait for git");
        assert!(
            out.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

impl Drop for GitServer {
    fn drop(&mut self) {
        let _ = self.server.kill();
        let _ = self.server.wait();
    }
}
