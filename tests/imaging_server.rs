//! The boot server, in process on 127.73.0.0/16, judged by curl and
//! xorriso: HEAD, Range (206/416) over the rewritten grub.cfg, many
//! clients at once, per-node tokens, the call-back; and a real ISO 9660
//! image made by xorriso (Rock Ridge and Joliet), patched as it streams
//! and read back by xorriso (skipped without xorriso unless
//! `KILN_REQUIRE_INTEROP` is set, as CI does).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use kiln::imaging::iso;
use kiln::imaging::server::{BootServer, Registration, ServedFile};

fn curl(args: &[&str]) -> (u16, Vec<u8>, String) {
    let dir = tempfile::tempdir().unwrap();
    let headers = dir.path().join("h");
    let body = dir.path().join("b");
    let out = Command::new("curl")
        .args(["-s", "--max-time", "30", "-D"])
        .arg(&headers)
        .arg("-o")
        .arg(&body)
        .args(["-w", "%{http_code}"])
        .args(args)
        .output()
        .unwrap();
    let code = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(0);
    (
        code,
        std::fs::read(&body).unwrap_or_default(),
        std::fs::read_to_string(&headers).unwrap_or_default(),
    )
}

/// Registers `node` with a grub.cfg carrying its seed URL (as deploy does,
/// through the same library calls).
fn register(server: &BootServer, node: &str, image: &Path, grub_path: &str) -> Registration {
    let (found, _) = iso::read_file(image, grub_path).unwrap();
    server
        .register(node, |urls| {
            let seed_url = &urls.seed;
            let grub = format!(
                "set timeout=1\nmenuentry 'Install' {{\n\tlinux\t/casper/vmlinuz autoinstall ds=nocloud\\;s={seed_url} console=tty0 console=ttyS0,115200n8 ---\n\tinitrd\t/casper/initrd\n}}\n"
            );
            let overlay = iso::plan_replace(image, grub_path, &found, grub.as_bytes())?;
            let mut served = ServedFile::plain(image)?;
            served.overlay = Arc::new(overlay);
            let files = BTreeMap::from([
                ("user-data".to_owned(), format!("#cloud-config\nhostname: {node}\n")),
                ("meta-data".to_owned(), format!("instance-id: {node}\n")),
            ]);
            Ok::<_, anyhow::Error>((files, Some(served)))
        })
        .unwrap()
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn images_seeds_tokens_and_call_backs() {
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("installer.iso");
    std::fs::write(&image, iso::demo_installer(3 << 20)).unwrap();
    let original = std::fs::read(&image).unwrap();
    let server = BootServer::start("127.73.0.1:0".parse().unwrap(), None)
        .await
        .unwrap();
    let plain = server.add_iso("installer.iso", ServedFile::plain(&image).unwrap());
    let a = register(&server, "n1", &image, "/boot/grub/grub.cfg");
    let b = register(&server, "n2", &image, "/boot/grub/grub.cfg");
    assert_ne!(a.seed_url, b.seed_url);

    // HEAD: length, ranges, no body.
    let url = a.iso_url.clone();
    let (code, _, headers) = blocking(move || curl(&["-I", &url])).await;
    assert_eq!(code, 200);
    let lower = headers.to_ascii_lowercase();
    assert!(
        lower.contains(&format!("content-length: {}", original.len())),
        "{headers}"
    );
    assert!(lower.contains("accept-ranges: bytes"), "{headers}");

    // The whole image: the vendor's bytes except grub.cfg, which names
    // this node's seed and only this node's.
    let url = a.iso_url.clone();
    let (code, whole, _) = blocking(move || curl(&[&url])).await;
    assert_eq!(code, 200);
    assert_eq!(whole.len(), original.len());
    let found = iso::find(
        std::io::Cursor::new(&whole),
        "patched",
        "/boot/grub/grub.cfg",
    )
    .unwrap();
    let grub =
        String::from_utf8_lossy(&whole[found.offset as usize..(found.offset + found.len) as usize])
            .into_owned();
    assert!(
        grub.contains(&format!("ds=nocloud\\;s={}", a.seed_url)),
        "{grub}"
    );
    assert!(!grub.contains(&b.seed_url));
    let differing = whole.iter().zip(&original).filter(|(x, y)| x != y).count();
    assert!(
        differing > 0 && differing < 2048,
        "{differing} bytes differ"
    );
    // The plain image is untouched.
    let (code, untouched, _) = blocking(move || curl(&[&plain])).await;
    assert_eq!((code, untouched == original), (200, true));

    // Ranges see the patched bytes: one across grub.cfg's start, a suffix,
    // an open end; past the end is 416.
    let from = found.offset - 100;
    for (range, start, end) in [
        (
            format!("{from}-{}", found.offset + 50),
            from,
            found.offset + 51,
        ),
        (
            "-1000".to_owned(),
            whole.len() as u64 - 1000,
            whole.len() as u64,
        ),
        (
            format!("{}-", found.offset),
            found.offset,
            whole.len() as u64,
        ),
    ] {
        let url = a.iso_url.clone();
        let r = range.clone();
        let (code, part, headers) = blocking(move || curl(&["-r", &r, &url])).await;
        assert_eq!(code, 206, "{range}");
        assert_eq!(part, &whole[start as usize..end as usize], "{range}");
        assert!(
            headers.to_ascii_lowercase().contains(&format!(
                "content-range: bytes {start}-{}/{}",
                end - 1,
                whole.len()
            )),
            "{headers}"
        );
    }
    let url = a.iso_url.clone();
    let past = format!("{}-", whole.len());
    let (code, _, headers) = blocking(move || curl(&["-r", &past, &url])).await;
    assert_eq!(code, 416);
    assert!(
        headers
            .to_ascii_lowercase()
            .contains(&format!("content-range: bytes */{}", whole.len()))
    );

    // Many clients at once all get the same bytes.
    let mut tasks = Vec::new();
    for _ in 0..24 {
        let url = a.iso_url.clone();
        tasks.push(tokio::task::spawn_blocking(move || curl(&[&url])));
    }
    for t in tasks {
        let (code, body, _) = t.await.unwrap();
        assert_eq!(code, 200);
        assert!(body == whole, "a concurrent download differs");
    }

    // Seeds: each token reads its own node's; a made-up token reads none.
    let url = format!("{}user-data", a.seed_url);
    let (code, body, _) = blocking(move || curl(&[&url])).await;
    assert_eq!(
        (code, String::from_utf8(body).unwrap()),
        (200, "#cloud-config\nhostname: n1\n".to_owned())
    );
    let url = format!("{}user-data", b.seed_url);
    let (_, body, _) = blocking(move || curl(&[&url])).await;
    assert!(String::from_utf8(body).unwrap().contains("n2"));
    let forged = format!("{}/seed/{}/user-data", server.base_url(), "0".repeat(32));
    let (code, _, _) = blocking(move || curl(&[&forged])).await;
    assert_eq!(code, 404);
    assert!(a.progress.borrow().seed_files.contains("user-data"));

    // The call-back, as cloud-init's phone_home posts it.
    let url = a.done_url.clone();
    let (code, _, _) = blocking(move || {
        curl(&[
            "-X",
            "POST",
            "--data",
            "instance_id=i-1&hostname=n1&pub_key_ed25519=ssh-ed25519+AAAA",
            &url,
        ])
    })
    .await;
    assert_eq!(code, 200);
    let done = a.progress.borrow().done.clone().unwrap();
    assert_eq!(done["pub_key_ed25519"], "ssh-ed25519 AAAA");
    assert!(b.progress.borrow().done.is_none());
    // A call-back body is read up to 64 KiB, no further.
    let url = b.done_url.clone();
    let big = format!("x={}", "a".repeat(100 << 10));
    let (code, _, _) = blocking(move || curl(&["-X", "POST", "--data", &big, &url])).await;
    assert_eq!(code, 413);
    assert!(b.progress.borrow().done.is_none());

    // Unregistered: the token stops working.
    server.unregister("n1");
    let url = format!("{}user-data", a.seed_url);
    let (code, _, _) = blocking(move || curl(&[&url])).await;
    assert_eq!(code, 404);
}

fn interop() -> bool {
    let have = Command::new("xorriso").arg("-version").output().is_ok();
    !common::skip_interop("xorriso", (!have).then_some("apt-get install xorriso"))
}

fn xorriso(args: &[&str], cwd: &Path) {
    let out = Command::new("xorriso")
        .args(args)
        .current_dir(cwd)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "xorriso {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_iso_made_by_xorriso_reads_back_patched() {
    if !interop() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let tree: PathBuf = dir.path().join("tree");
    std::fs::create_dir_all(tree.join("boot/grub")).unwrap();
    std::fs::create_dir_all(tree.join("casper")).unwrap();
    // Short, so kiln's grub.cfg is longer and every directory record's
    // length (ISO 9660 with Rock Ridge, and Joliet) must be patched.
    std::fs::write(
        tree.join("boot/grub/grub.cfg"),
        "menuentry 'Try or Install Ubuntu Server' {\n\tlinux\t/casper/vmlinuz ---\n\tinitrd\t/casper/initrd\n}\n",
    )
    .unwrap();
    std::fs::write(tree.join("casper/vmlinuz"), vec![7u8; 1 << 20]).unwrap();
    std::fs::write(tree.join("casper/initrd"), vec![9u8; 1 << 20]).unwrap();
    xorriso(
        &[
            "-as",
            "mkisofs",
            "-r",
            "-J",
            "-V",
            "KILN_TEST",
            "-o",
            "in.iso",
            "tree",
        ],
        dir.path(),
    );
    let image = dir.path().join("in.iso");
    let found = iso::find(
        std::fs::File::open(&image).unwrap(),
        "in.iso",
        "/boot/grub/grub.cfg",
    )
    .unwrap();
    assert_eq!(
        found.records.len(),
        2,
        "primary and Joliet records: {found:?}"
    );

    let server = BootServer::start("127.73.0.2:0".parse().unwrap(), None)
        .await
        .unwrap();
    let reg = register(&server, "n1", &image, "/boot/grub/grub.cfg");
    let url = reg.iso_url.clone();
    let (code, body, _) = blocking(move || curl(&[&url])).await;
    assert_eq!(code, 200);
    std::fs::write(dir.path().join("patched.iso"), &body).unwrap();
    xorriso(
        &[
            "-osirrox",
            "on",
            "-indev",
            "patched.iso",
            "-extract",
            "/boot/grub/grub.cfg",
            "out.cfg",
        ],
        dir.path(),
    );
    let out = std::fs::read_to_string(dir.path().join("out.cfg")).unwrap();
    assert!(out.starts_with("set timeout=1\n"), "{out}");
    assert!(
        out.contains(&format!("ds=nocloud\\;s={}", reg.seed_url)),
        "{out}"
    );
    assert!(
        out.ends_with("}\n"),
        "the length was patched exactly: {out:?}"
    );
    // Both trees now give the new length.
    let again = iso::find(
        std::io::Cursor::new(&body),
        "patched",
        "/boot/grub/grub.cfg",
    )
    .unwrap();
    assert_eq!(again.len as usize, out.len());
    for rec in again.records {
        let at = rec as usize + 10;
        let len = u32::from_le_bytes(body[at..at + 4].try_into().unwrap());
        let be = u32::from_be_bytes(body[at + 4..at + 8].try_into().unwrap());
        assert_eq!((len as usize, be as usize), (out.len(), out.len()));
    }
    // And the kernel is byte for byte the original.
    xorriso(
        &[
            "-osirrox",
            "on",
            "-indev",
            "patched.iso",
            "-extract",
            "/casper/vmlinuz",
            "k",
        ],
        dir.path(),
    );
    assert_eq!(
        std::fs::read(dir.path().join("k")).unwrap(),
        vec![7u8; 1 << 20]
    );
}

/// A firmware package is served only under its own token and name: a BMC
/// given the URL fetches it whole (and by range), a guessed token or a
/// different name gets 404.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn firmware_packages_are_served_only_under_their_token() {
    let dir = tempfile::tempdir().unwrap();
    let package = dir.path().join("bmc.bin");
    let bytes: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(&package, &bytes).unwrap();
    let server = BootServer::start("127.73.0.2:0".parse().unwrap(), None)
        .await
        .unwrap();
    let url = server
        .add_firmware("bmc.bin", ServedFile::plain(&package).unwrap())
        .unwrap();
    let other = server
        .add_firmware("bmc.bin", ServedFile::plain(&package).unwrap())
        .unwrap();
    assert_ne!(url, other, "each package gets its own token");
    let u = url.clone();
    let (code, body, _) = blocking(move || curl(&[&u])).await;
    assert_eq!((code, body.len()), (200, bytes.len()));
    assert_eq!(body, bytes);
    let u = url.clone();
    let (code, part, _) = blocking(move || curl(&["-r", "10-19", &u])).await;
    assert_eq!((code, part.as_slice()), (206, &bytes[10..20]));
    let base = url.rsplit_once("/fw/").unwrap().0.to_owned();
    for wrong in [
        format!("{base}/fw/00000000000000000000000000000000/bmc.bin"),
        url.replace("bmc.bin", "bios.bin"),
    ] {
        let (code, _, _) = blocking(move || curl(&[&wrong])).await;
        assert_eq!(code, 404);
    }
}
