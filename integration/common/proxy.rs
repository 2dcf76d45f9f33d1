//! A fault-injecting HTTP proxy on loopback, in front of the real registry.
//! Each request gets its own upstream connection (`Connection: close`), so rules
//! can answer, delay, reset or corrupt single requests by method and path.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Clone, Debug)]
pub enum Fault {
    /// Answer with this status (and `Retry-After` seconds) without asking upstream.
    Status(u16, Option<u64>),
    /// Close the connection without an answer.
    Reset,
    /// Wait, then forward.
    Delay(Duration),
    /// Forward, but flip one byte of the response body.
    Corrupt,
    /// Answer 200 with this content type and body (a forged manifest, say).
    Body(&'static str, Vec<u8>),
    /// Answer 401 with a Bearer challenge naming this token realm.
    Challenge(String),
    /// Forward the headers and half the body, then send nothing for this long.
    Stall(Duration),
    /// Answer with this status and a JSON body (a registry's `errors` list).
    Reply(u16, &'static str),
}

#[derive(Clone, Debug)]
pub struct Rule {
    pub method: &'static str,
    pub path_contains: String,
    pub fault: Fault,
    /// How many matching requests get the fault.
    pub times: usize,
}

pub struct FaultProxy {
    pub host: String,
    rules: Arc<Mutex<Vec<Rule>>>,
    /// `METHOD path -> what happened`, one line per request.
    pub log: Arc<Mutex<Vec<String>>>,
}

impl FaultProxy {
    pub fn start(upstream: &str) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        let host = listener.local_addr().expect("addr").to_string();
        let rules: Arc<Mutex<Vec<Rule>>> = Arc::default();
        let log: Arc<Mutex<Vec<String>>> = Arc::default();
        let (r, l, up) = (rules.clone(), log.clone(), upstream.to_string());
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let (r, l, up) = (r.clone(), l.clone(), up.clone());
                std::thread::spawn(move || {
                    let _ = handle(conn, &up, &r, &l);
                });
            }
        });
        FaultProxy { host, rules, log }
    }

    pub fn add(&self, method: &'static str, path_contains: &str, fault: Fault, times: usize) {
        self.rules.lock().unwrap().push(Rule {
            method,
            path_contains: path_contains.to_string(),
            fault,
            times,
        });
    }

    /// Faults not yet delivered.
    pub fn pending(&self) -> Vec<Rule> {
        self.rules
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.times > 0)
            .cloned()
            .collect()
    }

    pub fn count(&self, needle: &str) -> usize {
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains(needle))
            .count()
    }
}

fn handle(
    client: TcpStream,
    upstream: &str,
    rules: &Mutex<Vec<Rule>>,
    log: &Mutex<Vec<String>>,
) -> std::io::Result<()> {
    let mut reader = BufReader::new(client.try_clone()?);
    let mut head = Vec::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let end = line == "\r\n";
        if !line.to_ascii_lowercase().starts_with("connection:") && !end {
            head.push(line);
        }
        if end {
            break;
        }
    }
    let request_line = head.first().cloned().unwrap_or_default();
    let mut parts = request_line.split_whitespace();
    let (method, path) = (
        parts.next().unwrap_or("").to_string(),
        parts.next().unwrap_or("").to_string(),
    );
    let fault = {
        let mut rules = rules.lock().unwrap();
        rules
            .iter_mut()
            .find(|r| r.times > 0 && r.method == method && path.contains(&r.path_contains))
            .map(|r| {
                r.times -= 1;
                r.fault.clone()
            })
    };
    log.lock()
        .unwrap()
        .push(format!("{method} {path} -> {fault:?}"));
    let mut client_w = client.try_clone()?;
    match &fault {
        Some(Fault::Status(code, retry)) => {
            let extra = retry
                .map(|s| format!("Retry-After: {s}\r\n"))
                .unwrap_or_default();
            write!(
                client_w,
                "HTTP/1.1 {code} Injected\r\nContent-Length: 0\r\n{extra}Connection: close\r\n\r\n"
            )?;
            let _ = client_w.shutdown(Shutdown::Both);
            return Ok(());
        }
        Some(Fault::Reply(code, body)) => {
            write!(
                client_w,
                "HTTP/1.1 {code} Injected\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            )?;
            let _ = client_w.shutdown(Shutdown::Both);
            return Ok(());
        }
        Some(Fault::Body(content_type, body)) => {
            write!(
                client_w,
                "HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            )?;
            if method != "HEAD" {
                client_w.write_all(body)?;
            }
            let _ = client_w.shutdown(Shutdown::Both);
            return Ok(());
        }
        Some(Fault::Challenge(realm)) => {
            write!(
                client_w,
                "HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Bearer realm=\"{realm}\",service=\"test\"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            )?;
            let _ = client_w.shutdown(Shutdown::Both);
            return Ok(());
        }
        Some(Fault::Reset) => {
            let _ = client_w.shutdown(Shutdown::Both);
            return Ok(());
        }
        Some(Fault::Delay(d)) => std::thread::sleep(*d),
        _ => {}
    }
    let mut up = TcpStream::connect(upstream)?;
    let mut req = head.concat();
    req.push_str("Connection: close\r\n\r\n");
    up.write_all(req.as_bytes())?;
    // Request body (if any) flows on while the response comes back.
    let mut up_w = up.try_clone()?;
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut reader, &mut up_w);
        let _ = up_w.shutdown(Shutdown::Write);
    });
    let mut response = Vec::new();
    up.read_to_end(&mut response)?;
    if let Some(Fault::Corrupt) = fault {
        if let Some(body) = response
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .map(|p| p + 4)
        {
            if body < response.len() {
                let last = response.len() - 1;
                response[last] ^= 0xff;
            }
        }
    }
    if let Some(Fault::Stall(quiet)) = fault {
        let body = response
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .map_or(0, |p| p + 4);
        client_w.write_all(&response[..body + (response.len() - body) / 2])?;
        client_w.flush()?;
        std::thread::sleep(quiet);
        let _ = client_w.shutdown(Shutdown::Both);
        return Ok(());
    }
    client_w.write_all(&response)?;
    let _ = client_w.shutdown(Shutdown::Both);
    Ok(())
}
