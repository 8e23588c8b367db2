//! The installer templates: a snapshot of each, rendered for every built-in
//! image profile with a fixed context, and the escaping that keeps hostile
//! values from changing a document's structure (checked by parsing the
//! output back, with kiln's YAML reader and with `sh`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use kiln::imaging::seed::{self, SeedContext};
use kiln::profiles::{Catalog, ImageProfile};
use kiln::yaml::{Node, Value};

fn profile(name: &str) -> ImageProfile {
    Catalog::builtin().unwrap().images[name].profile.clone()
}

fn get<'a>(node: &'a Node, key: &str) -> &'a Node {
    match &node.value {
        Value::Map(entries) => entries
            .iter()
            .find(|(k, _)| matches!(&k.value, Value::Str(s) if s == key))
            .map(|(_, v)| v)
            .unwrap_or_else(|| panic!("no {key}")),
        other => panic!("not a map: {other:?}"),
    }
}

fn string(node: &Node) -> String {
    match &node.value {
        Value::Str(s) => s.clone(),
        other => panic!("not a string: {other:?}"),
    }
}

const ROCKY_GRUB: &str = "set default=\"0\"\nmenuentry 'Install Rocky Linux 9.6' --class fedora --class gnu-linux --class gnu --class os {\n\tlinuxefi /images/pxeboot/vmlinuz inst.stage2=hd:LABEL=Rocky-9-6-x86_64-dvd quiet\n\tinitrdefi /images/pxeboot/initrd.img\n}\n";

#[test]
fn every_template_of_every_profile() {
    for name in ["ubuntu-24.04", "ubuntu-22.04", "rocky-9"] {
        let p = profile(name);
        let cx = seed::sample_context(&p, "r01-n01");
        for (file, text) in seed::render_seed(&p, &cx).unwrap() {
            insta::assert_snapshot!(format!("{name}__{file}"), text);
        }
        let original = if name == "rocky-9" {
            ROCKY_GRUB
        } else {
            kiln::imaging::iso::DEMO_GRUB_CFG
        };
        let grub = seed::grub_cfg(&p, "r01-n01", original, &cx.seed_url, &cx.ks_url).unwrap();
        insta::assert_snapshot!(format!("{name}__grub.cfg"), grub);
    }
}

fn hostile(p: &ImageProfile) -> SeedContext {
    let mut cx = seed::sample_context(p, "r01-n02");
    cx.authorized_keys =
        vec!["ssh-ed25519 AAAA comment\": {x: 1} # ' $(reboot) `id` \\\\ &anchor *alias".into()];
    cx.user = "o'brien".into();
    cx.sudoers_line = "o'brien ALL=(ALL) NOPASSWD:ALL".into();
    cx
}

#[test]
fn yaml_values_stay_values() {
    let p = profile("ubuntu-24.04");
    let cx = hostile(&p);
    let files = seed::render_seed(&p, &cx).unwrap();
    let root = kiln::yaml::parse(&files["user-data"]).unwrap();
    let user_data = get(get(&root, "autoinstall"), "user-data");
    let keys = get(user_data, "ssh_authorized_keys");
    let Value::Seq(items) = &keys.value else {
        panic!("keys not a list")
    };
    assert_eq!(items.len(), 1);
    assert_eq!(string(&items[0]), cx.authorized_keys[0]);
    // The multi-line private key is one string, newlines and all.
    assert_eq!(
        string(get(get(user_data, "ssh_keys"), "ed25519_private")),
        cx.host_key_private
    );
    let users = get(user_data, "users");
    let Value::Seq(users) = &users.value else {
        panic!()
    };
    assert_eq!(string(get(&users[0], "name")), "o'brien");

    let plain = profile("rocky-9");
    let files = seed::render_seed(&plain, &hostile(&plain)).unwrap();
    let root = kiln::yaml::parse(&files["user-data"]).unwrap();
    assert_eq!(
        string(get(get(&root, "phone_home"), "url")),
        "http://192.0.2.10:8080/done/TOKEN"
    );
}

#[test]
fn kickstart_words_stay_words() {
    let p = profile("rocky-9");
    let cx = hostile(&p);
    let ks = &seed::render_seed(&p, &cx).unwrap()["ks.cfg"];
    let line = ks.lines().find(|l| l.starts_with("sshkey ")).unwrap();
    // Anaconda splits like a POSIX shell: let one print the words.
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("printf '%s\\n' {}", line))
        .output()
        .unwrap();
    let words: Vec<String> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    assert_eq!(
        words,
        vec![
            "sshkey".to_owned(),
            "--username=o'brien".to_owned(),
            cx.authorized_keys[0].clone()
        ]
    );
}

#[test]
fn a_key_spanning_lines_is_refused() {
    let p = profile("ubuntu-24.04");
    let mut cx = seed::sample_context(&p, "n1");
    cx.authorized_keys = vec!["ssh-ed25519 AAAA\nssh-ed25519 BBBB".into()];
    assert!(seed::render_seed(&p, &cx).is_err());
}

#[test]
fn grub_keeps_the_images_own_arguments_and_escapes_the_seed() {
    let p = profile("rocky-9");
    let grub = seed::grub_cfg(
        &p,
        "n1",
        ROCKY_GRUB,
        "http://10.0.0.1:8080/seed/T/",
        "http://10.0.0.1:8080/seed/T/ks.cfg",
    )
    .unwrap();
    let linux = grub
        .lines()
        .find(|l| l.trim_start().starts_with("linuxefi"))
        .unwrap();
    assert!(
        linux.contains("inst.stage2=hd:LABEL=Rocky-9-6-x86_64-dvd"),
        "{linux}"
    );
    assert!(
        linux.contains("inst.ks=http://10.0.0.1:8080/seed/T/ks.cfg"),
        "{linux}"
    );
    let p = profile("ubuntu-24.04");
    let grub = seed::grub_cfg(
        &p,
        "n1",
        kiln::imaging::iso::DEMO_GRUB_CFG,
        "http://10.0.0.1:8080/seed/T/",
        "",
    )
    .unwrap();
    assert!(
        grub.contains("autoinstall ds=nocloud\\;s=http://10.0.0.1:8080/seed/T/"),
        "{grub}"
    );
    // The installed system keeps the console settings (after `---`).
    assert!(grub.contains("--- console=tty0"), "{grub}");
}
