//! A real OpenSSH server for interop tests: `sshd -D -e` with its own
//! config, host keys and authorized keys in a temp folder, listening on
//! loopback addresses only (127.60.0.0/16 is reserved for the SSH tests).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The sshd binary, if installed.
pub fn sshd_path() -> Option<PathBuf> {
    ["/usr/sbin/sshd", "/usr/bin/sshd", "/usr/local/sbin/sshd"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
}

/// Whether to run: true when sshd is there. Without it, CI
/// (`KILN_REQUIRE_INTEROP` set) fails loudly; elsewhere the test is skipped.
pub fn available() -> bool {
    let missing = sshd_path()
        .is_none()
        .then_some("apt-get install openssh-server");
    !super::skip_interop("OpenSSH's sshd", missing)
}

/// The user the tests run as (sshd logs in as this user).
pub fn user() -> String {
    let out = Command::new("id").arg("-un").output().unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// Makes a key pair with ssh-keygen; returns the private key path.
pub fn keygen(dir: &Path, name: &str, kind: &str, passphrase: &str) -> PathBuf {
    let path = dir.join(name);
    let mut cmd = Command::new("ssh-keygen");
    cmd.args(["-q", "-t", kind, "-N", passphrase, "-C", name, "-f"])
        .arg(&path);
    if kind == "rsa" {
        cmd.args(["-b", "2048"]);
    }
    assert!(cmd.status().unwrap().success(), "ssh-keygen -t {kind}");
    path
}

/// A running sshd.
pub struct Sshd {
    child: Child,
    /// Its folder: config, keys, log.
    pub dir: tempfile::TempDir,
    /// The port every address listens on.
    pub port: u16,
    /// Host key public lines (`type base64`), one per host key type.
    pub host_keys: Vec<String>,
    /// Client private keys that are authorized: ed25519, ecdsa, rsa, and an
    /// ed25519 key encrypted with `passphrase`.
    pub keys: ClientKeys,
}

/// The client keys every sshd authorizes.
pub struct ClientKeys {
    /// Ed25519.
    pub ed25519: PathBuf,
    /// ECDSA P-256.
    pub ecdsa: PathBuf,
    /// RSA 2048.
    pub rsa: PathBuf,
    /// Ed25519, encrypted with [`PASSPHRASE`].
    pub encrypted: PathBuf,
}

/// The encrypted key's passphrase.
pub const PASSPHRASE: &str = "correct horse battery staple";

impl Sshd {
    /// Starts sshd on `ips` (all loopback) at `port`, with `extra` config
    /// lines appended.
    pub fn start(ips: &[&str], port: u16, extra: &str) -> Sshd {
        let sshd = sshd_path().expect("sshd");
        let dir = tempfile::tempdir().unwrap();
        // sshd checks that the authorized keys are readable by the user it
        // logs in; a 0700 temp dir owned by another user would not be.
        std::fs::set_permissions(
            dir.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .unwrap();
        let d = dir.path();
        let mut host_keys = Vec::new();
        let mut config = String::new();
        for kind in ["ed25519", "ecdsa"] {
            let key = keygen(d, &format!("host_{kind}"), kind, "");
            config.push_str(&format!("HostKey {}\n", key.display()));
            let public = std::fs::read_to_string(key.with_extension("pub")).unwrap();
            let mut words = public.split_whitespace();
            host_keys.push(format!(
                "{} {}",
                words.next().unwrap(),
                words.next().unwrap()
            ));
        }
        let keys = ClientKeys {
            ed25519: keygen(d, "id_ed25519", "ed25519", ""),
            ecdsa: keygen(d, "id_ecdsa", "ecdsa", ""),
            rsa: keygen(d, "id_rsa", "rsa", ""),
            encrypted: keygen(d, "id_encrypted", "ed25519", PASSPHRASE),
        };
        let mut authorized = String::new();
        for k in [&keys.ed25519, &keys.ecdsa, &keys.rsa, &keys.encrypted] {
            authorized.push_str(&std::fs::read_to_string(k.with_extension("pub")).unwrap());
        }
        std::fs::write(d.join("authorized_keys"), authorized).unwrap();
        for ip in ips {
            assert!(ip.starts_with("127."), "tests listen on loopback only");
            config.push_str(&format!("ListenAddress {ip}:{port}\n"));
        }
        config.push_str(&format!(
            "PidFile {pid}\nAuthorizedKeysFile {ak}\nUsePAM no\nStrictModes no\nPermitRootLogin yes\n\
             PasswordAuthentication no\nKbdInteractiveAuthentication no\nPubkeyAuthentication yes\n\
             AllowTcpForwarding yes\nLogLevel DEBUG1\n\
             # Many connections at once (fan-out 64+): the default 10:30:100 drops them.\n\
             MaxStartups 1000:30:1000\nMaxSessions 1000\nPerSourceMaxStartups none\n{extra}\n",
            pid = d.join("sshd.pid").display(),
            ak = d.join("authorized_keys").display(),
        ));
        std::fs::write(d.join("sshd_config"), config).unwrap();
        // The privilege separation folder sshd insists on.
        let _ = std::fs::create_dir_all("/run/sshd");
        let log = std::fs::File::create(d.join("sshd.log")).unwrap();
        let child = Command::new(sshd)
            .args(["-D", "-e", "-f"])
            .arg(d.join("sshd_config"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let mut sshd = Sshd {
            child,
            dir,
            port,
            host_keys,
            keys,
        };
        let start = Instant::now();
        for ip in ips {
            while std::net::TcpStream::connect((*ip, port)).is_err() {
                if let Ok(Some(status)) = sshd.child.try_wait() {
                    panic!("sshd exited ({status}): {}", sshd.log());
                }
                assert!(
                    start.elapsed() < Duration::from_secs(10),
                    "sshd did not start: {}",
                    sshd.log()
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        sshd
    }

    /// sshd's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("sshd.log")).unwrap_or_default()
    }

    /// known_hosts lines trusting this server's host keys at `ips`.
    pub fn known_hosts(&self, ips: &[&str]) -> String {
        let mut out = String::new();
        for ip in ips {
            for k in &self.host_keys {
                out.push_str(&format!("[{ip}]:{} {k}\n", self.port));
            }
        }
        out
    }

    /// The SHA256 fingerprint of the Ed25519 host key, as ssh-keygen prints it.
    pub fn ed25519_fingerprint(&self) -> String {
        let out = Command::new("ssh-keygen")
            .arg("-lf")
            .arg(self.dir.path().join("host_ed25519.pub"))
            .output()
            .unwrap();
        String::from_utf8(out.stdout)
            .unwrap()
            .split_whitespace()
            .nth(1)
            .unwrap()
            .to_owned()
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An inventory of `nodes` (name, ip) reached over SSH at `port`, with
/// `ssh` extra keys in the defaults (key, known_hosts, jump…).
pub fn inventory(dir: &Path, nodes: &[(&str, &str)], port: u16, ssh: &str) -> PathBuf {
    inventory_as(dir, nodes, port, &user(), ssh)
}

/// Like [`inventory`], logging in as `user`.
pub fn inventory_as(
    dir: &Path,
    nodes: &[(&str, &str)],
    port: u16,
    user: &str,
    ssh: &str,
) -> PathBuf {
    let mut text = format!(
        "site: sshtest\ndefaults:\n  hardware: hgx-h100-80gb-8x\n  image: ubuntu-24.04\n  bmc:\n    username: admin\n    password: {{env: KILN_BMC_PASSWORD}}\n  ssh: {{user: {user}{ssh}}}\nracks:\n  - name: r01\n    nodes:\n"
    );
    for (i, (name, ip)) in nodes.iter().enumerate() {
        text.push_str(&format!(
            "      - {{name: {name}, bmc: \"127.69.250.{}:8443\", ssh: \"{ip}:{port}\"}}\n",
            i + 1
        ));
    }
    let path = dir.join("site.yaml");
    std::fs::write(&path, text).unwrap();
    path
}
