//! Image formats registries serve: nested indexes, zstd layers, foreign layers
//! (fetched from their `urls`, never pushed), and schema 1 manifests (refused by
//! name).

mod common;

use common::proxy::{Fault, FaultProxy};
use common::*;
use kiln::image::spec::{
    Descriptor, Index, Platform, MT_DOCKER_FOREIGN, MT_OCI_INDEX, MT_OCI_LAYER_ZSTD,
};
use kiln::layer::writer::LayerFile;
use std::path::Path;

/// A layer of `files`, compressed with zstd.
fn zstd_layer(dir: &Path, files: &[(&str, &[u8])]) -> LayerFile {
    let mut tar_bytes = Vec::new();
    {
        let mut b = tar::Builder::new(&mut tar_bytes);
        for (name, data) in files {
            let mut h = tar::Header::new_ustar();
            h.set_mode(0o644);
            h.set_size(data.len() as u64);
            b.append_data(&mut h, name, *data).expect("append");
        }
        b.finish().expect("finish");
    }
    let blob = zstd::encode_all(&tar_bytes[..], 3).expect("zstd");
    let path = dir.join("zstd-layer");
    std::fs::write(&path, &blob).expect("write");
    LayerFile {
        path,
        digest: kiln::image::Digest::sha256_of(&blob),
        diff_id: kiln::image::Digest::sha256_of(&tar_bytes),
        size: blob.len() as u64,
    }
}

#[test]
fn zstd_layers_are_read() {
    let reg = TestRegistry::start();
    let dir = tempfile::tempdir().unwrap();
    let l = zstd_layer(dir.path(), &[("hello.txt", b"from zstd\n")]);
    push_image_layers(
        &reg,
        "zstd:1",
        &[PushLayer {
            file: &l,
            media_type: MT_OCI_LAYER_ZSTD,
            urls: None,
        }],
        serde_json::json!({}),
    );
    let df = format!(
        "FROM scratch\nCOPY --from={}/zstd:1 /hello.txt /copied.txt\n",
        reg.host
    );
    assert_ok(&build_files(
        &[("Dockerfile", &df)],
        &format!("{}/zstd-out:1", reg.host),
        &[],
    ));
    let img = pull(&reg, "zstd-out:1");
    assert_eq!(img.files["copied.txt"].size, 10);
}

#[test]
fn nested_indexes_resolve_to_the_platform() {
    let reg = TestRegistry::start();
    let digest = push_busybox_base(&reg, "base:1");
    let c = client();
    let rt = runtime();
    let raw = rt.block_on(c.manifest(&reg.reference("base:1"))).unwrap();
    let platform = Platform::host();
    let put_index = |tag: &str, d: Descriptor| -> Descriptor {
        let index = Index {
            schema_version: 2,
            media_type: Some(MT_OCI_INDEX.into()),
            manifests: vec![d],
        };
        let bytes = serde_json::to_vec(&index).unwrap();
        let digest = rt
            .block_on(c.put_manifest(&reg.reference(tag), &bytes, MT_OCI_INDEX))
            .unwrap();
        Descriptor {
            media_type: MT_OCI_INDEX.into(),
            digest,
            size: bytes.len() as u64,
            platform: None,
            annotations: None,
            urls: None,
        }
    };
    let inner = put_index(
        "base:inner",
        Descriptor {
            media_type: raw.media_type.clone(),
            digest: digest.parse().unwrap(),
            size: raw.bytes.len() as u64,
            platform: Some(platform),
            annotations: None,
            urls: None,
        },
    );
    put_index("base:outer", inner);
    let df = format!(
        "FROM {}/base:outer\nCOPY a.txt /a.txt\nCMD [\"/bin/cat\", \"/a.txt\"]\n",
        reg.host
    );
    let dest = format!("{}/nested-out:1", reg.host);
    assert_ok(&build_files(
        &[("Dockerfile", &df), ("a.txt", "through two indexes\n")],
        &dest,
        &[],
    ));
    assert_eq!(docker_run(&dest, &[]), "through two indexes\n");
}

#[test]
fn foreign_layers_come_from_their_urls_and_are_never_pushed() {
    let reg = TestRegistry::start_spec(RegistrySpec {
        foreign_urls: true,
        ..Default::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let foreign = make_layer(
        dir.path(),
        "foreign",
        &[E::File("foreign.txt", 0o644, b"from a url\n".to_vec())],
    );
    // The foreign layer is served only at its URL, by a loopback server.
    let server = FaultProxy::start("127.0.0.1:9");
    server.add(
        "GET",
        "/layers/foreign.tar.gz",
        Fault::Body(
            "application/octet-stream",
            std::fs::read(&foreign.path).unwrap(),
        ),
        100,
    );
    let url = format!("http://{}/layers/foreign.tar.gz", server.host);
    let own = make_layer(
        dir.path(),
        "own",
        &[E::File("own.txt", 0o644, b"own\n".to_vec())],
    );
    push_image_layers(
        &reg,
        "foreign:1",
        &[
            PushLayer {
                file: &foreign,
                media_type: MT_DOCKER_FOREIGN,
                urls: Some(vec![url]),
            },
            PushLayer {
                file: &own,
                media_type: "application/vnd.docker.image.rootfs.diff.tar.gzip",
                urls: None,
            },
        ],
        serde_json::json!({}),
    );
    let proxy = FaultProxy::start(&reg.host);
    // Built on the foreign base and pushed: the foreign blob is not uploaded.
    let df = format!("FROM {}/foreign:1\nCOPY a.txt /a.txt\n", proxy.host);
    let out = build_files(
        &[("Dockerfile", &df), ("a.txt", "a\n")],
        &format!("{}/foreign-out:1", proxy.host),
        &[],
    );
    assert_ok(&out);
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(e.contains("foreign, not pushed"), "{e}");
    assert_eq!(
        proxy.count(&format!("digest={}", foreign.digest)),
        0,
        "no upload of the foreign blob"
    );
    let pushed = runtime()
        .block_on(client().manifest(&reg.reference("foreign-out:1")))
        .unwrap();
    let m: serde_json::Value = serde_json::from_slice(&pushed.bytes).unwrap();
    assert_eq!(m["layers"][0]["mediaType"], MT_DOCKER_FOREIGN);
    assert!(m["layers"][0]["urls"].is_array(), "{m}");

    // Its contents, when needed, come from the URL (the first build needed its
    // file index).
    let before = server.count("GET /layers/foreign.tar.gz");
    let df = format!("FROM scratch\nCOPY --from={}/foreign:1 / /\n", reg.host);
    assert_ok(&build_files(
        &[("Dockerfile", &df)],
        &format!("{}/foreign-copy:1", reg.host),
        &[],
    ));
    assert_eq!(server.count("GET /layers/foreign.tar.gz"), before + 1);
    let img = pull(&reg, "foreign-copy:1");
    assert!(img.files.contains_key("foreign.txt") && img.files.contains_key("own.txt"));
}

#[test]
fn schema1_manifests_are_refused_by_name() {
    let reg = TestRegistry::start();
    let proxy = FaultProxy::start(&reg.host);
    proxy.add(
        "GET",
        "/v2/old/manifests/1",
        Fault::Body(
            "application/vnd.docker.distribution.manifest.v1+prettyjws",
            br#"{"schemaVersion":1,"name":"old","tag":"1","architecture":"amd64","fsLayers":[],"history":[]}"#.to_vec(),
        ),
        100,
    );
    let df = format!("FROM {}/old:1\n", proxy.host);
    let out = build_files(
        &[("Dockerfile", &df)],
        &format!("{}/old-out:1", reg.host),
        &[],
    );
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success()
            && e.contains("Dockerfile:1")
            && e.contains("schema 1 manifests are not supported"),
        "{e}"
    );
}

/// GNU tar's PAX sparse formats 0.0, 0.1 and 1.0 come out as the file they stand
/// for: its real name, its real size, zeros in the holes.
#[test]
fn pax_sparse_files_are_expanded() {
    use std::io::Write;
    let tar_bin = require("tar", "apt-get install tar");
    let reg = TestRegistry::start();
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("sparse.bin");
    let mut want = vec![0u8; 1 << 20];
    want[..4].copy_from_slice(b"head");
    want[500_000..500_006].copy_from_slice(b"middle");
    let end = want.len();
    want[end - 4..].copy_from_slice(b"tail");
    {
        let f = std::fs::File::create(&src).unwrap();
        f.set_len(want.len() as u64).unwrap();
        for (off, bytes) in [
            (0u64, &b"head"[..]),
            (500_000, b"middle"),
            (end as u64 - 4, b"tail"),
        ] {
            std::os::unix::fs::FileExt::write_all_at(&f, bytes, off).unwrap();
        }
    }
    let want_digest = kiln::image::Digest::sha256_of(&want).to_string();
    for (i, version) in ["0.0", "0.1", "1.0"].iter().enumerate() {
        let tar_path = dir.path().join(format!("s{i}.tar"));
        let out = std::process::Command::new(&tar_bin)
            .args([
                "--format=pax",
                "--sparse",
                &format!("--sparse-version={version}"),
            ])
            .arg("-cf")
            .arg(&tar_path)
            .arg("-C")
            .arg(dir.path())
            .arg("sparse.bin")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let tar_bytes = std::fs::read(&tar_path).unwrap();
        assert!(
            tar_bytes.len() < want.len() / 4,
            "{version}: GNU tar stored it sparse"
        );
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&tar_bytes).unwrap();
        let blob = gz.finish().unwrap();
        let path = dir.path().join(format!("s{i}.tar.gz"));
        std::fs::write(&path, &blob).unwrap();
        let layer = LayerFile {
            path,
            digest: kiln::image::Digest::sha256_of(&blob),
            diff_id: kiln::image::Digest::sha256_of(&tar_bytes),
            size: blob.len() as u64,
        };
        push_image(
            &reg,
            &format!("sparse:{i}"),
            &[layer],
            serde_json::json!({}),
        );
        let df = format!("FROM scratch\nCOPY --from={}/sparse:{i} / /\n", reg.host);
        assert_ok(&build_files(
            &[("Dockerfile", &df)],
            &format!("{}/sparse-out:{i}", reg.host),
            &[],
        ));
        let img = pull(&reg, &format!("sparse-out:{i}"));
        let names: Vec<&String> = img.files.keys().collect();
        let f = img
            .files
            .get("sparse.bin")
            .unwrap_or_else(|| panic!("{version}: sparse.bin under its real name: {names:?}"));
        assert_eq!(
            (f.size, &f.digest),
            (want.len() as u64, &want_digest),
            "{version}"
        );
    }
}
