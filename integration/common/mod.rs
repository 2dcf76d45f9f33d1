//! Test harness: a real registry (Debian's docker-registry, distribution 2.8) on a
//! free loopback port, a real Docker engine client, hand-made base images, and a
//! reader that flattens a pushed image back into entries.
#![allow(dead_code)]

use kiln::image::model::manifest_for;
use kiln::image::spec::{Descriptor, ImageConfig, Manifest, MT_DOCKER_LAYER, MT_DOCKER_MANIFEST};
use kiln::image::ManifestFormat;
use kiln::image::{Digest, Reference};
use kiln::layer::writer::{EntryBody, EntryMeta, LayerWriter};
use kiln::registry::auth::Keychain;
use kiln::registry::{Registry, RegistryOptions};
use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Fails (never skips) with how to get a missing component.
pub fn require(bin: &str, how: &str) -> PathBuf {
    let path = std::env::var("PATH").unwrap_or_default();
    let dirs = ["/usr/bin", "/usr/sbin", "/usr/local/bin", "/bin"]
        .into_iter()
        .map(str::to_string)
        .chain(path.split(':').map(str::to_string));
    for dir in dirs {
        let p = Path::new(&dir).join(bin);
        if p.exists() {
            return p;
        }
    }
    panic!("{bin} is not installed: {how}");
}

/// A registry process serving from a temp dir; killed on drop.
pub struct TestRegistry {
    pub host: String,
    /// Where it keeps blobs and manifests.
    pub storage: PathBuf,
    child: Child,
    _dir: tempfile::TempDir,
}

/// How a test registry listens: address, Basic auth, TLS certificate and key.
#[derive(Default)]
pub struct RegistrySpec<'a> {
    /// `IP:PORT`; default a free port on 127.0.0.1.
    pub addr: Option<String>,
    pub auth: Option<(&'a str, &'a str)>,
    pub tls: Option<(&'a Path, &'a Path)>,
    /// Storage shared with another registry process (default: its own).
    pub storage: Option<PathBuf>,
    /// Run inside this network namespace (`ip netns exec`).
    pub netns: Option<&'a str>,
    /// Accept manifests whose foreign layers name `urls` (distribution refuses them
    /// unless told which URLs to allow).
    pub foreign_urls: bool,
    /// With `tls`: require client certificates signed by this CA (mutual TLS).
    pub client_ca: Option<&'a Path>,
}

impl TestRegistry {
    pub fn start() -> TestRegistry {
        Self::start_spec(RegistrySpec::default())
    }

    /// A registry that demands Basic auth for `user:password` (htpasswd, bcrypt).
    pub fn start_with_auth(user: &str, password: &str) -> TestRegistry {
        Self::start_spec(RegistrySpec {
            auth: Some((user, password)),
            ..Default::default()
        })
    }

    pub fn start_spec(spec: RegistrySpec<'_>) -> TestRegistry {
        let bin = require(
            "docker-registry",
            "apt-get install docker-registry (Debian's distribution 2.8); .ci/run does this",
        );
        let addr = spec.addr.clone().unwrap_or_else(|| {
            let port = TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .expect("free port")
                .port();
            format!("127.0.0.1:{port}")
        });
        let dir = tempfile::tempdir().expect("tempdir");
        let cfg = dir.path().join("config.yml");
        let auth_section = match spec.auth {
            Some((user, password)) => {
                let htpasswd = require(
                    "htpasswd",
                    "apt-get install apache2-utils; .ci/run does this",
                );
                let out = Command::new(htpasswd)
                    .args(["-Bbn", user, password])
                    .output()
                    .expect("htpasswd");
                assert!(out.status.success(), "htpasswd failed");
                let file = dir.path().join("htpasswd");
                std::fs::write(&file, &out.stdout).expect("write htpasswd");
                format!(
                    "auth:\n  htpasswd:\n    realm: kiln-test\n    path: {}\n",
                    file.display()
                )
            }
            None => String::new(),
        };
        let tls_section = match spec.tls {
            Some((cert, key)) => format!(
                "  tls:\n    certificate: {}\n    key: {}\n{}",
                cert.display(),
                key.display(),
                spec.client_ca
                    .map(|ca| format!("    clientcas:\n      - {}\n", ca.display()))
                    .unwrap_or_default()
            ),
            None => String::new(),
        };
        let validation = if spec.foreign_urls {
            "validation:\n  manifests:\n    urls:\n      allow:\n        - ^https?://\n"
        } else {
            ""
        };
        let storage = spec
            .storage
            .clone()
            .unwrap_or_else(|| dir.path().join("data"));
        std::fs::write(
            &cfg,
            format!(
                "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n{auth_section}{validation}http:\n  addr: {addr}\n{tls_section}",
                storage.display()
            ),
        )
        .expect("write registry config");
        let mut cmd = match spec.netns {
            Some(ns) => {
                let mut c = Command::new(require("ip", "apt-get install iproute2"));
                c.args(["netns", "exec", ns]).arg(&bin);
                c
            }
            None => Command::new(&bin),
        };
        let child = cmd
            .arg("serve")
            .arg(&cfg)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start docker-registry");
        let mut reg = TestRegistry {
            host: addr.clone(),
            child,
            storage,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        let listening = || match spec.netns {
            // Not reachable from here: ask inside the namespace.
            Some(ns) => Command::new("ip")
                .args(["netns", "exec", ns, "bash", "-c"])
                .arg(format!("exec 3<>/dev/tcp/{}", addr.replace(':', "/")))
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success()),
            None => std::net::TcpStream::connect(&addr).is_ok(),
        };
        while !listening() {
            if Instant::now() >= deadline || reg.child.try_wait().ok().flatten().is_some() {
                panic!("docker-registry did not listen on {addr} within 20 s");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        reg.host = addr;
        reg
    }

    /// The registry under another name (one that `map_host` points at it).
    pub fn named(&self, name: &str) -> String {
        let port = self.host.rsplit_once(':').expect("host:port").1;
        format!("{name}:{port}")
    }

    pub fn reference(&self, repo_tag: &str) -> Reference {
        Reference::parse(&format!("{}/{repo_tag}", self.host)).expect("reference")
    }
}

impl Drop for TestRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// The harness's own client; it trusts the test registries' made-up certificates.
pub fn client() -> Registry {
    Registry::new(
        RegistryOptions {
            retries: 2,
            skip_tls_verify_pull: true,
            skip_tls_verify_push: true,
            ..Default::default()
        },
        Keychain::default(),
    )
    .expect("registry client")
}

/// Points `name` at `ip` in /etc/hosts (the tests run as root), once; Kiln and the
/// Docker engine both resolve through it.
pub fn map_host(name: &str, ip: &str) {
    let line = format!("{ip} {name}");
    let file = std::fs::OpenOptions::new()
        .read(true)
        .append(true)
        .open("/etc/hosts")
        .unwrap_or_else(|e| {
            panic!("/etc/hosts: {e}: these tests map registry names and must run as root (CI does)")
        });
    file.lock().expect("lock /etc/hosts");
    let text = std::fs::read_to_string("/etc/hosts").expect("read /etc/hosts");
    let present = text.lines().any(|l| {
        let mut words = l.split_whitespace();
        words.next() == Some(ip) && words.any(|w| w == name)
    });
    if !present {
        let needs_newline = !text.is_empty() && !text.ends_with('\n');
        let mut f = &file;
        std::io::Write::write_all(
            &mut f,
            format!("{}{line}\n", if needs_newline { "\n" } else { "" }).as_bytes(),
        )
        .expect("append to /etc/hosts");
    }
    let _ = file.unlock();
}

/// One entry of a hand-made layer.
#[derive(Clone, Debug)]
pub enum E {
    Dir(&'static str, u32),
    File(&'static str, u32, Vec<u8>),
    Owned(&'static str, u32, u64, u64, Vec<u8>),
    Link(&'static str, &'static str),
    Hard(&'static str, &'static str),
    /// A host file copied in (busybox).
    Host(&'static str, u32, PathBuf),
}

/// Writes a layer blob from entries (in the given order) and returns its path.
pub fn make_layer(dir: &Path, name: &str, entries: &[E]) -> kiln::layer::writer::LayerFile {
    let mut w = LayerWriter::create(&dir.join(name), 6).expect("layer writer");
    for e in entries {
        let m = |mode: u32| EntryMeta {
            mode,
            uid: 0,
            gid: 0,
            mtime: 1_700_000_000,
            xattrs: Vec::new(),
        };
        let (path, meta, body) = match e {
            E::Dir(p, mode) => (p.to_string(), m(*mode), EntryBody::Dir),
            E::File(p, mode, b) => (p.to_string(), m(*mode), EntryBody::Bytes(b.clone())),
            E::Owned(p, mode, u, g, b) => (
                p.to_string(),
                EntryMeta {
                    uid: *u,
                    gid: *g,
                    ..m(*mode)
                },
                EntryBody::Bytes(b.clone()),
            ),
            E::Link(p, t) => (p.to_string(), m(0o777), EntryBody::Symlink(t.to_string())),
            E::Hard(p, t) => (p.to_string(), m(0o755), EntryBody::Hardlink(t.to_string())),
            E::Host(p, mode, src) => {
                let size = std::fs::metadata(src).expect("host file").len();
                (
                    p.to_string(),
                    m(*mode),
                    EntryBody::File {
                        source: src.clone(),
                        size,
                    },
                )
            }
        };
        w.append(&path, &meta, &body).expect("append");
    }
    w.finish().expect("finish layer")
}

/// Pushes an image made of the given layers with a minimal config; returns its digest.
pub fn push_image(
    reg: &TestRegistry,
    repo_tag: &str,
    layers: &[kiln::layer::writer::LayerFile],
    config_extra: serde_json::Value,
) -> String {
    let plain: Vec<PushLayer<'_>> = layers
        .iter()
        .map(|file| PushLayer {
            file,
            media_type: MT_DOCKER_LAYER,
            urls: None,
        })
        .collect();
    push_image_layers(reg, repo_tag, &plain, config_extra)
}

/// A layer to push with its media type; a layer with `urls` is foreign and its
/// blob is not uploaded.
pub struct PushLayer<'a> {
    pub file: &'a kiln::layer::writer::LayerFile,
    pub media_type: &'a str,
    pub urls: Option<Vec<String>>,
}

pub fn push_image_layers(
    reg: &TestRegistry,
    repo_tag: &str,
    pushed: &[PushLayer<'_>],
    config_extra: serde_json::Value,
) -> String {
    let rt = runtime();
    let c = client();
    let r = reg.reference(repo_tag);
    let layers: Vec<&kiln::layer::writer::LayerFile> = pushed.iter().map(|p| p.file).collect();
    rt.block_on(async {
        for p in pushed.iter().filter(|p| p.urls.is_none()) {
            c.upload_blob(&r, &p.file.digest, &p.file.path).await.expect("upload layer");
        }
        let mut cfg = serde_json::json!({
            "architecture": "amd64",
            "os": "linux",
            "config": {"Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]},
            "rootfs": {"type": "layers", "diff_ids": layers.iter().map(|l| l.diff_id.clone()).collect::<Vec<_>>()},
            "history": layers.iter().map(|_| serde_json::json!({"created_by": "test layer"})).collect::<Vec<_>>(),
        });
        // PascalCase keys are container config fields; lowercase ones are top-level
        // (`container_config`, `docker_version`, `author`…), as Docker names them.
        for (k, v) in config_extra.as_object().into_iter().flatten() {
            if k.starts_with(|c: char| c.is_ascii_uppercase()) {
                cfg["config"][k] = v.clone();
            } else {
                cfg[k] = v.clone();
            }
        }
        // Hand-written config bytes, Kiln's one manifest serializer.
        let cfg_bytes = serde_json::to_vec(&cfg).expect("config json");
        let layers: Vec<Descriptor> = pushed
            .iter()
            .map(|p| Descriptor { media_type: p.media_type.into(), digest: p.file.digest.clone(), size: p.file.size, platform: None, annotations: None, urls: p.urls.clone() })
            .collect();
        let s = manifest_for(cfg_bytes, &layers, ManifestFormat::Docker).expect("manifest");
        let tmp = tempfile::NamedTempFile::new().expect("temp");
        std::fs::write(tmp.path(), &s.config).expect("write config");
        c.upload_blob(&r, &s.config_digest, tmp.path()).await.expect("upload config");
        let bytes = s.manifest;
        c.put_manifest(&r, &bytes, MT_DOCKER_MANIFEST).await.expect("put manifest")
    }).to_string()
}

/// Fails unless the repository of `repo_tag` has no tag at all.
pub fn assert_nothing_pushed(reg: &TestRegistry, repo_tag: &str, why: &str) {
    let tags = runtime()
        .block_on(client().tags(&reg.reference(repo_tag)))
        .expect("list tags");
    assert!(
        tags.is_empty(),
        "{why}: nothing pushed, found tags {tags:?}"
    );
}

/// The digest `repo_tag` points at now.
pub fn tag_digest(reg: &TestRegistry, repo_tag: &str) -> String {
    runtime()
        .block_on(client().manifest(&reg.reference(repo_tag)))
        .expect("manifest")
        .digest
        .to_string()
}

/// busybox-static from Debian, needed for runnable images.
pub fn busybox() -> PathBuf {
    require(
        "busybox",
        "apt-get install busybox-static; .ci/run does this",
    )
}

/// A runnable three-layer base: a usr-merged busybox root, /etc files, and a third
/// layer that deletes a file (whiteout) and adds a setuid binary and a hardlink.
pub fn push_busybox_base(reg: &TestRegistry, repo_tag: &str) -> String {
    push_busybox_base_with(reg, repo_tag, serde_json::json!({}))
}

/// [`push_busybox_base`] with extra config fields (see [`push_image_layers`]).
pub fn push_busybox_base_with(
    reg: &TestRegistry,
    repo_tag: &str,
    config_extra: serde_json::Value,
) -> String {
    let dir = tempfile::tempdir().expect("tempdir");
    let bb = busybox();
    let l1 = make_layer(
        dir.path(),
        "l1",
        &[
            E::Dir("usr", 0o755),
            E::Dir("usr/bin", 0o755),
            E::Host("usr/bin/busybox", 0o755, bb),
            E::Link("usr/bin/sh", "busybox"),
            E::Link("usr/bin/cat", "busybox"),
            E::Link("usr/bin/ls", "busybox"),
            E::Link("usr/bin/stat", "busybox"),
            E::Link("usr/bin/id", "busybox"),
            E::Link("bin", "usr/bin"),
            E::Dir("usr/local", 0o755),
            E::Dir("var", 0o755),
            E::Dir("run", 0o755),
            E::Link("var/run", "../run"),
            E::Dir("tmp", 0o1777),
        ],
    );
    let l2 = make_layer(
        dir.path(),
        "l2",
        &[
            E::Dir("etc", 0o755),
            E::File(
                "etc/passwd",
                0o644,
                b"root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n".to_vec(),
            ),
            E::File(
                "etc/group",
                0o644,
                b"root:x:0:\napp:x:1000:\nstaff:x:50:\n".to_vec(),
            ),
            E::File("etc/doomed", 0o644, b"gone\n".to_vec()),
            E::Dir("opt", 0o755),
            E::Dir("opt/old", 0o755),
            E::File("opt/old/a", 0o644, b"a\n".to_vec()),
        ],
    );
    let l3 = make_layer(
        dir.path(),
        "l3",
        &[
            E::Dir("etc", 0o755),
            E::File("etc/.wh.doomed", 0o644, Vec::new()),
            E::Dir("opt/old", 0o755),
            E::File("opt/old/.wh..wh..opq", 0o644, Vec::new()),
            E::File("opt/old/b", 0o644, b"b\n".to_vec()),
            E::Owned("usr/bin/suid", 0o4755, 0, 0, b"#!/bin/sh\n".to_vec()),
            E::Hard("usr/bin/suid-link", "usr/bin/suid"),
        ],
    );
    push_image(reg, repo_tag, &[l1, l2, l3], config_extra)
}

/// One entry of a flattened filesystem, as the oracle saw it (and as a recorded
/// reference keeps it: empty fields left out).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub struct Flat {
    /// `f` file, `d` directory, `l` symlink, `c`/`b` device, `p` fifo.
    pub kind: char,
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub size: u64,
    /// `sha256:…` of a file's contents, empty for others.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub digest: String,
    /// A symlink's target.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub link: String,
    /// For a hard link: the path it links to (same inode in the layer).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub hardlink: String,
    /// xattr name → value as hex.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub xattrs: BTreeMap<String, String>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

#[derive(serde::Deserialize)]
struct OracleFile {
    #[serde(rename = "type")]
    kind: String,
    mode: u32,
    uid: u64,
    gid: u64,
    #[serde(default)]
    size: u64,
    #[serde(default)]
    sha256: String,
    #[serde(default)]
    link: String,
    #[serde(default)]
    hardlink: String,
    #[serde(default)]
    xattrs: BTreeMap<String, String>,
}

#[derive(serde::Deserialize)]
struct OracleImage {
    config: serde_json::Value,
    manifest: serde_json::Value,
    files: BTreeMap<String, OracleFile>,
    layers: Vec<Vec<String>>,
}

/// A pushed image: its manifest, config and flattened filesystem. Names with
/// bytes that are not UTF-8 show them as `\xNN`.
pub struct Pulled {
    pub config: ImageConfig,
    pub raw_config: serde_json::Value,
    pub manifest: Manifest,
    pub files: BTreeMap<String, Flat>,
    /// Each layer's entries as the tar has them: `name type mode uid:gid`, and
    /// ` t=SECS` for times set on purpose (before 2020).
    pub layers: Vec<Vec<String>>,
}

impl Pulled {
    /// The paths below directory `dir`, relative to it, in order.
    pub fn under(&self, dir: &str) -> Vec<String> {
        let prefix = format!("{dir}/");
        self.files
            .keys()
            .filter_map(|k| k.strip_prefix(&prefix))
            .map(str::to_string)
            .collect()
    }
}

/// Pulls an image and flattens it with the oracle (`integration/oracle/flatten.py`),
/// which shares no code with Kiln: Python's standard library (urllib, tarfile,
/// hashlib) verifies every digest and applies the layers with overlay rules.
pub fn pull(reg: &TestRegistry, repo_tag: &str) -> Pulled {
    pull_arch(reg, repo_tag, "amd64")
}

/// [`pull`], taking `arch`'s manifest where `repo_tag` is an index.
pub fn pull_arch(reg: &TestRegistry, repo_tag: &str, arch: &str) -> Pulled {
    let python = require("python3", "apt-get install python3");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("integration/oracle/flatten.py");
    let out = run_ok(
        Command::new(python)
            .arg(script)
            .args([&reg.host, repo_tag, arch]),
        &format!("the oracle on {repo_tag} ({arch})"),
    );
    let img: OracleImage = serde_json::from_slice(&out.stdout).expect("oracle json");
    validate_stored(reg, repo_tag, arch);
    let files = img
        .files
        .into_iter()
        .map(|(path, f)| {
            let kind = match f.kind.as_str() {
                "file" => 'f',
                "dir" => 'd',
                "symlink" => 'l',
                "char" => 'c',
                "block" => 'b',
                "fifo" => 'p',
                other => panic!("oracle kind {other}"),
            };
            let digest = if f.sha256.is_empty() {
                String::new()
            } else {
                format!("sha256:{}", f.sha256)
            };
            let flat = Flat {
                kind,
                mode: f.mode,
                uid: f.uid,
                gid: f.gid,
                size: f.size,
                digest,
                link: f.link,
                hardlink: f.hardlink,
                xattrs: f.xattrs,
            };
            (path, flat)
        })
        .collect();
    Pulled {
        config: serde_json::from_value(img.config.clone()).expect("config"),
        raw_config: img.config,
        manifest: serde_json::from_value(img.manifest).expect("manifest"),
        files,
        layers: img.layers,
    }
}

/// Checks the image `repo_tag` names (`arch`'s where it is an index) with
/// Kiln's own `image::validate`, beside the oracle, reading the bytes the
/// registry stores (distribution's filesystem layout).
pub fn validate_stored(reg: &TestRegistry, repo_tag: &str, arch: &str) {
    let r = reg.reference(repo_tag);
    let v2 = reg.storage.join("docker/registry/v2");
    let blob = |d: &Digest| {
        let hex = d.as_str().strip_prefix("sha256:").expect("sha256 digest");
        v2.join("blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    };
    let mut digest = match (&r.digest, &r.tag) {
        (Some(d), _) => d.clone(),
        (None, tag) => {
            let link = v2
                .join("repositories")
                .join(&r.repository)
                .join("_manifests/tags")
                .join(tag.as_deref().unwrap_or("latest"))
                .join("current/link");
            let link = std::fs::read_to_string(&link).expect("tag link");
            Digest::parse(link.trim()).expect("tag digest")
        }
    };
    let mut manifest = std::fs::read(blob(&digest)).expect("manifest blob");
    let index: serde_json::Value = serde_json::from_slice(&manifest).expect("manifest json");
    if index.get("manifests").is_some() {
        let index: kiln::image::spec::Index = serde_json::from_value(index).expect("index");
        digest = index
            .manifests
            .into_iter()
            .find(|m| m.platform.as_ref().is_some_and(|p| p.architecture == arch))
            .expect("the index has the platform")
            .digest;
        manifest = std::fs::read(blob(&digest)).expect("manifest blob");
    }
    let m: Manifest = serde_json::from_slice(&manifest).expect("manifest");
    let config = std::fs::read(blob(&m.config.digest)).expect("config blob");
    let open = |d: &Digest| -> std::io::Result<Box<dyn std::io::Read>> {
        Ok(Box::new(std::fs::File::open(blob(d))?))
    };
    if let Err(e) = kiln::image::validate::image(&manifest, &config, &open) {
        panic!("{repo_tag} ({arch}) does not validate: {e}");
    }
}

/// Whether any file the registry stores (blobs gunzipped, manifests, configs)
/// holds `needle`: a secret must be in none of them.
pub fn registry_holds(reg: &TestRegistry, needle: &[u8]) -> bool {
    fn walk(dir: &Path, needle: &[u8]) -> bool {
        let Ok(rd) = std::fs::read_dir(dir) else {
            return false;
        };
        rd.flatten().any(|e| {
            let p = e.path();
            if p.is_dir() {
                return walk(&p, needle);
            }
            let bytes = std::fs::read(&p).unwrap_or_default();
            let mut plain = Vec::new();
            if bytes.starts_with(&[0x1f, 0x8b]) {
                let _ = std::io::Read::read_to_end(
                    &mut flate2::read::GzDecoder::new(&bytes[..]),
                    &mut plain,
                );
            }
            contains(&bytes, needle) || contains(&plain, needle)
        })
    }
    walk(&reg.storage, needle)
}

/// Whether `needle` occurs in `hay`.
pub fn contains(hay: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle)
}

/// `sha256:…` of bytes, for comparing with a pulled file's digest.
pub fn sha256_of(data: &[u8]) -> String {
    use sha2::Digest;
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(data)))
}

/// Builds `ctx` and pushes it to `dest`, with extra flags.
pub fn build_with(ctx: &Path, dest: &str, extra: &[&str]) -> Output {
    let mut args = vec![
        "--context",
        ctx.to_str().expect("utf-8 path"),
        "--destination",
        dest,
    ];
    args.extend_from_slice(extra);
    executor(&args)
}

/// Writes `files` into a fresh context, builds it to `dest` with extra flags.
pub fn build_files(files: &[(&str, &str)], dest: &str, extra: &[&str]) -> Output {
    let ctx = tempfile::tempdir().expect("tempdir");
    write_context(ctx.path(), files);
    build_with(ctx.path(), dest, extra)
}

/// Runs the executor binary.
pub fn executor(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_executor"))
        .args(args)
        .output()
        .expect("run executor")
}

pub fn assert_ok(out: &Output) {
    assert!(
        out.status.success(),
        "executor failed:\nstdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The Docker engine client from Debian's docker.io (BuildKit built in).
pub fn docker() -> Command {
    let bin = require("docker", "apt-get install docker.io and start `dockerd --iptables=false --bridge=none`; .ci/run does this");
    let bin = if Path::new("/usr/bin/docker").exists() {
        PathBuf::from("/usr/bin/docker")
    } else {
        bin
    };
    let mut c = Command::new(bin);
    c.env("DOCKER_BUILDKIT", "1");
    c
}

/// Fails unless a Docker engine answers.
pub fn require_docker_engine() {
    let out = docker()
        .args(["version", "--format", "{{.Server.Version}}"])
        .output()
        .expect("run docker");
    assert!(
        out.status.success(),
        "no Docker engine answers: {}. Start one with `dockerd --iptables=false --bridge=none` (.ci/run does this)",
        String::from_utf8_lossy(&out.stderr).trim()
    );
}

/// `docker run --rm --network host IMAGE ARGS…` after a fresh pull; returns stdout.
pub fn docker_run(image: &str, args: &[&str]) -> String {
    require_docker_engine();
    run_ok(
        docker().args(["pull", "-q", image]),
        &format!("docker pull {image}"),
    );
    let mut a = vec!["run", "--rm", "--network", "host", image];
    a.extend_from_slice(args);
    let out = docker().args(&a).output().expect("docker run");
    assert!(
        out.status.success(),
        "docker run {image}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let _ = docker().args(["rmi", "-f", image]).output();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Writes files into a context directory.
pub fn write_context(dir: &Path, files: &[(&str, &str)]) {
    for (name, content) in files {
        let p = dir.join(name);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).expect("mkdir");
        }
        std::fs::write(&p, content).expect("write");
    }
}

pub mod archives;
pub mod files;
pub mod proxy;
pub mod reference;

pub use reference::{buildkit_command, recorded, Image, Placeholders};

/// Writes a gzip'd layer whose tar is made by `fill` (names and headers exactly as
/// a hostile or foreign tool would write them).
pub fn tar_layer(
    dir: &Path,
    name: &str,
    fill: impl FnOnce(&mut tar::Builder<&mut Vec<u8>>),
) -> kiln::layer::writer::LayerFile {
    let mut tar_bytes = Vec::new();
    {
        let mut b = tar::Builder::new(&mut tar_bytes);
        fill(&mut b);
        b.finish().expect("finish tar");
    }
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut gz, &tar_bytes).expect("gzip");
    let blob = gz.finish().expect("gzip");
    let path = dir.join(name);
    std::fs::write(&path, &blob).expect("write layer");
    kiln::layer::writer::LayerFile {
        path,
        digest: kiln::image::Digest::sha256_of(&blob),
        diff_id: kiln::image::Digest::sha256_of(&tar_bytes),
        size: blob.len() as u64,
    }
}

/// xorshift64: the same pseudo-random sequence on every run, for data gzip cannot
/// shrink and for deterministic mutations.
pub struct Noise(pub u64);

impl Noise {
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// `len` bytes of noise.
    pub fn bytes(seed: u64, len: usize) -> Vec<u8> {
        let mut n = Noise(seed);
        (0..len).map(|_| n.next_u64() as u8).collect()
    }
}

/// The static executor `.ci/run` builds for the image (the image must not need a libc).
pub fn static_executor() -> PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("target/x86_64-unknown-linux-gnu/release/executor");
    assert!(
        p.exists(),
        "no static executor at {}: build it with RUSTFLAGS=\"-C target-feature=+crt-static\" cargo build --release --target x86_64-unknown-linux-gnu (.ci/run does this)",
        p.display()
    );
    p
}

/// The executor image (Dockerfile.executor, built by the executor itself into a
/// tarball) loaded into the Docker engine as `kiln.test/executor:IMAGE_TAG`.
/// Built once per test binary.
pub fn executor_image() -> &'static str {
    static IMAGE: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    IMAGE.get_or_init(|| {
        static_executor();
        require_docker_engine();
        // A tag of this checkout's own: test runs of other checkouts on the
        // same Docker engine load theirs under the shared name meanwhile.
        let checkout = sha256_of(env!("CARGO_MANIFEST_DIR").as_bytes());
        let name = format!("kiln.test/executor:image-test-{}", &checkout[7..19]);
        let dir = tempfile::tempdir().expect("tempdir");
        let tar = dir.path().join("executor.tar");
        let repo = env!("CARGO_MANIFEST_DIR");
        let out = executor(&[
            "--dockerfile",
            &format!("{repo}/Dockerfile.executor"),
            "--context",
            repo,
            "--destination",
            &name,
            "--no-push",
            "--tar-path",
            tar.to_str().expect("utf-8"),
        ]);
        assert_ok(&out);
        run_ok(docker().arg("load").arg("-i").arg(&tar), "docker load");
        name
    })
}

/// Kiln's image building `ctx` (mounted at /workspace) to `dest`, with
/// `docker_args` for the container.
pub fn in_executor_image(docker_args: &[&str], ctx: &Path, dest: &str) -> Output {
    in_executor_image_with(docker_args, ctx, dest, &[])
}

/// [`in_executor_image`] with `extra` arguments for the executor.
pub fn in_executor_image_with(
    docker_args: &[&str],
    ctx: &Path,
    dest: &str,
    extra: &[&str],
) -> Output {
    let mut d = docker_args.to_vec();
    let ws = format!("{}:/workspace:ro", ctx.display());
    d.extend(["-v", &ws]);
    let mut args = vec![
        "--context",
        "/workspace",
        "--dockerfile",
        "/workspace/Dockerfile",
        "--destination",
        dest,
    ];
    args.extend_from_slice(extra);
    docker_run_args(&d, executor_image(), &args)
}

/// `docker run --rm --network host DOCKER_ARGS… IMAGE ARGS…`, as a Pod runs it.
pub fn docker_run_args(docker_args: &[&str], image: &str, args: &[&str]) -> Output {
    docker()
        .args(["run", "--rm", "--network", "host"])
        .args(docker_args)
        .arg(image)
        .args(args)
        .output()
        .expect("docker run")
}

/// The user setting E runs as: not root, with a subordinate id range.
pub const SUBUID_USER: &str = "kilnbuild";

/// uid and gid of [`SUBUID_USER`], failing with how to make it when missing.
pub fn subuid_user() -> (u32, u32) {
    let how = format!(
        "useradd --system --no-create-home {SUBUID_USER} and give it a range in /etc/subuid and /etc/subgid (`{SUBUID_USER}:400000:65536`), with newuidmap from Debian's uidmap; .ci/run does this"
    );
    require("newuidmap", "apt-get install uidmap; .ci/run does this");
    let id = |flag: &str| -> u32 {
        let out = Command::new("id")
            .args([flag, SUBUID_USER])
            .output()
            .expect("id");
        assert!(out.status.success(), "no user {SUBUID_USER}: {how}");
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .expect("numeric id")
    };
    for f in ["/etc/subuid", "/etc/subgid"] {
        let text = std::fs::read_to_string(f).unwrap_or_default();
        assert!(
            text.lines()
                .any(|l| l.starts_with(&format!("{SUBUID_USER}:"))),
            "{f} has no range for {SUBUID_USER}: {how}"
        );
    }
    (id("-u"), id("-g"))
}

/// Runs the executor as [`SUBUID_USER`] (setting E) with `scratch` as its
/// KANIKO_DIR and HOME; the context must be readable by that user.
pub fn executor_as_subuid_user(scratch: &Path, args: &[&str]) -> Output {
    executor_as(subuid_user(), scratch, args)
}

/// A uid and gid no passwd entry or subuid range names (setting N).
pub const NO_SUBUID: (u32, u32) = (65533, 65533);

/// The executor as `uid:gid` on this host, its scratch dir under `scratch`.
pub fn executor_as((uid, gid): (u32, u32), scratch: &Path, args: &[&str]) -> Output {
    use std::os::unix::fs::PermissionsExt;
    // A copy the user may run (the build tree may be private).
    let bin = scratch.join("executor");
    std::fs::copy(env!("CARGO_BIN_EXE_executor"), &bin).expect("copy executor");
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let work = scratch.join("work");
    std::fs::create_dir_all(&work).expect("mkdir");
    std::os::unix::fs::chown(&work, Some(uid), Some(gid)).expect("chown scratch");
    std::fs::set_permissions(scratch, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    Command::new(require("setpriv", "apt-get install util-linux"))
        .args([
            &format!("--reuid={uid}"),
            &format!("--regid={gid}"),
            "--clear-groups",
        ])
        .arg(&bin)
        .args(args)
        .env("KANIKO_DIR", &work)
        .env("HOME", &work)
        .output()
        .expect("run executor as another user")
}

/// The names of the entries in `dir`: after a build, what it left in its
/// scratch parent (it must leave nothing).
pub fn leftovers(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|r| {
            r.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// The Debian fixture (bookworm minbase by debootstrap, plus `packages`) pushed
/// to `reg` as `repo_tag`. Made by integration/fixtures/debian.sh and cached
/// under /var/tmp keyed by that script and the package list.
pub fn push_debian_base(reg: &TestRegistry, repo_tag: &str, packages: &[&str]) -> String {
    use sha2::Digest;
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("integration/fixtures/debian.sh");
    let mut h = sha2::Sha256::new();
    h.update(std::fs::read(&script).expect("read debian.sh"));
    h.update(packages.join(" ").as_bytes());
    let key = hex::encode(h.finalize());
    let dir = PathBuf::from("/var/tmp/kilnfixtures");
    std::fs::create_dir_all(&dir).expect("mkdir /var/tmp/kilnfixtures");
    let layer = dir.join(format!("debian-{}.tar.gz", &key[..16]));
    {
        // One test makes it; the others wait on the lock.
        let lock = std::fs::File::create(dir.join(format!("debian-{}.lock", &key[..16])))
            .expect("lock file");
        let _held = nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusive)
            .map_err(|(_, e)| e)
            .expect("flock");
        if !layer.exists() {
            require(
                "debootstrap",
                "apt-get install debootstrap; .ci/run does this",
            );
            run_ok(
                Command::new("bash").arg(&script).arg(&layer).args(packages),
                "making the Debian fixture",
            );
        }
    }
    let bytes = std::fs::read(&layer).expect("read fixture");
    let mut raw = Vec::new();
    std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&bytes[..]), &mut raw)
        .expect("gunzip fixture");
    let file = kiln::layer::writer::LayerFile {
        path: layer.clone(),
        digest: kiln::image::Digest::parse(&format!(
            "sha256:{}",
            hex::encode(sha2::Sha256::digest(&bytes))
        ))
        .expect("digest"),
        diff_id: kiln::image::Digest::parse(&format!(
            "sha256:{}",
            hex::encode(sha2::Sha256::digest(&raw))
        ))
        .expect("digest"),
        size: bytes.len() as u64,
    };
    push_image(reg, repo_tag, &[file], serde_json::json!({"Cmd": ["bash"]}))
}

/// Where a RUN-capable build runs (docs/run-sandbox.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Setting {
    /// Root in the executor image with Docker's default seccomp profile, which
    /// denies namespaces: RUN runs in the container's own root.
    A,
    /// Root in the executor image with an unconfined seccomp profile and an
    /// emptyDir-like scratch volume (a Pod's default).
    B,
    /// Root on this host.
    D,
    /// [`SUBUID_USER`] on this host.
    E,
    /// Pod Security "restricted" in the executor image: uid 65532, no
    /// capabilities, no_new_privs, Docker's default seccomp (RUN traced).
    C,
    /// OpenShift's restricted-v2: a random uid with gid 0, otherwise as C.
    O,
    /// B without a volume: the scratch dir on the container's own overlay
    /// root, as Kaniko's examples have it (RUN on the stage's root itself).
    R,
    /// A non-root user on this host without a subuid range (RUN traced).
    N,
}

impl Setting {
    pub const RUN_CAPABLE: [Setting; 7] = [
        Setting::D,
        Setting::B,
        Setting::E,
        Setting::A,
        Setting::C,
        Setting::O,
        Setting::R,
    ];

    /// The `docker run` arguments of a restricted setting (C, O).
    pub fn restricted(self) -> Option<[&'static str; 6]> {
        let user = match self {
            Setting::C => "65532:65532",
            Setting::O => "1000680000:0",
            _ => return None,
        };
        Some([
            "--user",
            user,
            "--cap-drop",
            "ALL",
            "--security-opt",
            "no-new-privileges",
        ])
    }

    /// `NAME-SETTING:1`, the repository a test pushes this setting's result to.
    pub fn repo(self, name: &str) -> String {
        format!("{name}-{self:?}:1").to_lowercase()
    }

    /// Builds `ctx` here to [`Setting::repo`]`(name)` on `reg`, fails unless it
    /// succeeds, and pulls the result.
    pub fn built(self, reg: &TestRegistry, ctx: &Path, name: &str) -> Pulled {
        let repo = self.repo(name);
        assert_ok(&self.build(ctx, &format!("{}/{repo}", reg.host), &[]));
        pull(reg, &repo)
    }

    /// Builds `ctx` (its `Dockerfile`) to `dest` here; the context must be
    /// world-readable for E. Fails unless the scratch dir is left empty.
    pub fn build(self, ctx: &Path, dest: &str, extra: &[&str]) -> Output {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(ctx, std::fs::Permissions::from_mode(0o755));
        let scratch = tempfile::tempdir().expect("tempdir");
        let c = ctx.display().to_string();
        let df = ctx.join("Dockerfile").display().to_string();
        let mut args = vec!["--context", &c, "--dockerfile", &df, "--destination", dest];
        args.extend_from_slice(extra);
        let (out, left) = match self {
            Setting::D => {
                let out = Command::new(env!("CARGO_BIN_EXE_executor"))
                    .args(&args)
                    .env("KANIKO_DIR", scratch.path())
                    .output()
                    .expect("run executor");
                (out, leftovers(scratch.path()))
            }
            Setting::E => {
                let out = executor_as_subuid_user(scratch.path(), &args);
                (out, leftovers(&scratch.path().join("work")))
            }
            Setting::N => {
                let out = executor_as(NO_SUBUID, scratch.path(), &args);
                (out, leftovers(&scratch.path().join("work")))
            }
            Setting::R => {
                args[1] = "/workspace";
                args[3] = "/workspace/Dockerfile";
                let ws = format!("{c}:/workspace:ro");
                let docker_args = ["-v", &ws, "--security-opt", "seccomp=unconfined"];
                // The scratch dir is inside the container, gone with it.
                (
                    docker_run_args(&docker_args, executor_image(), &args),
                    Vec::new(),
                )
            }
            Setting::A | Setting::B | Setting::C | Setting::O => {
                args[1] = "/workspace";
                args[3] = "/workspace/Dockerfile";
                let ws = format!("{c}:/workspace:ro");
                let vol = format!("{}:/scratch", scratch.path().display());
                let mut docker_args = vec!["-v", &ws, "-v", &vol, "-e", "KANIKO_DIR=/scratch"];
                // A keeps Docker's default seccomp profile.
                if self == Setting::B {
                    docker_args.extend(["--security-opt", "seccomp=unconfined"]);
                }
                if let Some(r) = self.restricted() {
                    // An emptyDir any uid may write, as a Pod's is.
                    std::fs::set_permissions(
                        scratch.path(),
                        std::fs::Permissions::from_mode(0o1777),
                    )
                    .expect("chmod scratch");
                    docker_args.extend(r);
                }
                let out = docker_run_args(&docker_args, executor_image(), &args);
                (out, leftovers(scratch.path()))
            }
        };
        assert!(
            left.is_empty(),
            "setting {self:?} left {left:?} in its scratch dir; stderr: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }
}

/// BuildKit v0.21's result for `ctx`'s Dockerfile, built by `suite`'s test
/// `case` on `reg`: the recorded one (see [`reference`]), or built with
/// BuildKit and pulled when references are refreshed or checked. Layers before
/// `first_layer` (a base made on this machine) and the content of files under
/// `varies` are not recorded.
pub fn buildkit_image(
    reg: &TestRegistry,
    ctx: &Path,
    suite: &str,
    case: &str,
    first_layer: usize,
    varies: &[&str],
) -> Image {
    let dockerfile = std::fs::read_to_string(ctx.join("Dockerfile")).expect("read Dockerfile");
    let inputs = Placeholders::default()
        .text(&reg.host, "{REG}")
        .apply(&dockerfile);
    recorded(suite, case, &inputs, || {
        let repo_tag = format!("bk-{case}:1");
        let mut cmd = buildkit_command(
            ctx,
            &ctx.join("Dockerfile"),
            &format!("{}/{repo_tag}", reg.host),
        );
        run_ok(&mut cmd, "BuildKit");
        as_recorded(reg, &pull(reg, &repo_tag), first_layer, varies)
    })
}

/// An image pulled from `reg` in the form [`buildkit_image`] records, to
/// compare Kiln's with it.
pub fn as_recorded(
    reg: &TestRegistry,
    pulled: &Pulled,
    first_layer: usize,
    varies: &[&str],
) -> Image {
    let ph = Placeholders::default().text(&reg.host, "{REG}").busybox();
    Image::of(pulled, &ph, first_layer, varies)
}

/// Runs `cmd` and fails, showing its stderr, unless it succeeds.
pub fn run_ok(cmd: &mut Command, what: &str) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot start: {e}"));
    assert!(
        out.status.success(),
        "{what} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}
