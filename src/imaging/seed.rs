//! A node's installer configuration, rendered from the tera templates in
//! `templates/` (compiled in) with typed contexts. Templates never see a
//! raw value where it could change the document's structure: YAML values
//! go through the `yaml` filter (a JSON string, which YAML reads as a
//! double-quoted scalar), shell and kickstart words through `sh` (POSIX
//! single quotes, [`crate::ssh::quote`]), grub words through `grub`.

use std::collections::BTreeMap;

use serde::Serialize;
use tera::Tera;

use crate::profiles::image::{ImageProfile, OsFamily, SeedKind};

/// The built-in templates, by name.
pub const TEMPLATES: &[(&str, &str)] = &[
    (
        "nocloud/meta-data",
        include_str!("../../templates/nocloud/meta-data.tera"),
    ),
    (
        "nocloud/user-data",
        include_str!("../../templates/nocloud/user-data.tera"),
    ),
    (
        "nocloud/network-config",
        include_str!("../../templates/nocloud/network-config.tera"),
    ),
    (
        "nocloud/vendor-data",
        include_str!("../../templates/nocloud/vendor-data.tera"),
    ),
    (
        "ubuntu/autoinstall",
        include_str!("../../templates/ubuntu/autoinstall.tera"),
    ),
    (
        "rhel/kickstart",
        include_str!("../../templates/rhel/kickstart.tera"),
    ),
    ("grub.cfg", include_str!("../../templates/grub.cfg.tera")),
];

/// Why a template did not render.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    /// No such template.
    #[error("no template `{0}` (known: {known})", known = names().join(", "))]
    Unknown(String),
    /// Tera failed (a kiln bug in a built-in template, shown with its cause).
    #[error("template `{name}`: {source}")]
    Tera {
        /// The template.
        name: String,
        /// Tera's error.
        #[source]
        source: tera::Error,
    },
    /// A value cannot be put into a seed safely.
    #[error("{0}")]
    Unsafe(String),
    /// A rendered seed file is not what the installer will accept; kiln
    /// refuses to serve it rather than leave a node stuck in its installer.
    #[error("the rendered {file} is broken: {why}")]
    Broken {
        /// The seed file.
        file: String,
        /// What is wrong.
        why: String,
    },
}

/// The names of the built-in templates.
pub fn names() -> Vec<&'static str> {
    TEMPLATES.iter().map(|(n, _)| *n).collect()
}

/// Everything a node's seed is rendered from.
#[derive(Clone, Debug, Serialize)]
pub struct SeedContext {
    /// Host name (the node's name, a valid host name).
    pub hostname: String,
    /// cloud-init's instance id; a new one makes cloud-init run again.
    pub instance_id: String,
    /// The login user.
    pub user: String,
    /// OpenSSH public-key lines allowed to log in as `user`.
    pub authorized_keys: Vec<String>,
    /// The host's private key (OpenSSH PEM).
    pub host_key_private: String,
    /// The host's public key line.
    pub host_key_public: String,
    /// Where the installed system posts "install finished".
    pub phone_home_url: String,
    /// Where the installer posts progress events.
    pub report_url: String,
    /// The NoCloud seed URL (ends in `/`).
    pub seed_url: String,
    /// The kickstart URL.
    pub ks_url: String,
    /// The boot NIC's MAC, if the inventory has one.
    pub mac: Option<String>,
    /// The image profile's name.
    pub profile: String,
    /// The profile's extra kernel arguments.
    pub kernel_args: Vec<String>,
    /// Kernel arguments of the installed system (kickstart's
    /// `bootloader --append`): the profile's, plus the NoCloud seed.
    pub installed_kernel_args: String,
    /// `USER ALL=(ALL) NOPASSWD:ALL`.
    pub sudoers_line: String,
}

/// The per-node grub.cfg's context.
#[derive(Clone, Debug, Serialize)]
pub struct GrubContext {
    /// Host name (for the comment).
    pub hostname: String,
    /// The profile (for the comment and title).
    pub profile: String,
    /// Menu entry title.
    pub title: String,
    /// `linux` or `linuxefi`, as the image's own grub.cfg says.
    pub linux_cmd: String,
    /// `initrd` or `initrdefi`.
    pub initrd_cmd: String,
    /// The kernel path inside the image.
    pub kernel: String,
    /// The kernel arguments, already grub-safe (checked characters).
    pub args: String,
    /// The initrd path inside the image.
    pub initrd: String,
}

fn engine() -> Result<Tera, RenderError> {
    let mut tera = Tera::default();
    tera.autoescape_on(vec![]);
    for (name, text) in TEMPLATES {
        tera.add_raw_template(name, text)
            .map_err(|source| RenderError::Tera {
                name: (*name).to_owned(),
                source,
            })?;
    }
    tera.register_filter("yaml", yaml_filter);
    tera.register_filter("sh", sh_filter);
    tera.register_filter("grub", grub_filter);
    Ok(tera)
}

fn as_text(v: &tera::Value) -> String {
    match v {
        tera::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn yaml_filter(
    v: &tera::Value,
    _: &std::collections::HashMap<String, tera::Value>,
) -> tera::Result<tera::Value> {
    // JSON escapes every control character, quote and backslash; a JSON
    // string is a YAML double-quoted scalar.
    Ok(tera::Value::String(
        serde_json::to_string(&as_text(v)).map_err(|e| tera::Error::msg(e.to_string()))?,
    ))
}

fn sh_filter(
    v: &tera::Value,
    _: &std::collections::HashMap<String, tera::Value>,
) -> tera::Result<tera::Value> {
    Ok(tera::Value::String(crate::ssh::quote::quote(&as_text(v))))
}

fn grub_filter(
    v: &tera::Value,
    _: &std::collections::HashMap<String, tera::Value>,
) -> tera::Result<tera::Value> {
    // grub's single quotes take everything literally but `'` itself.
    Ok(tera::Value::String(format!(
        "'{}'",
        as_text(v).replace('\'', "'\\''")
    )))
}

/// Renders template `name` with `context`.
pub fn render<C: Serialize>(name: &str, context: &C) -> Result<String, RenderError> {
    if !TEMPLATES.iter().any(|(n, _)| *n == name) {
        return Err(RenderError::Unknown(name.to_owned()));
    }
    let tera = engine()?;
    let cx = tera::Context::from_serialize(context).map_err(|source| RenderError::Tera {
        name: name.to_owned(),
        source,
    })?;
    tera.render(name, &cx).map_err(|source| RenderError::Tera {
        name: name.to_owned(),
        source,
    })
}

/// The template behind each seed file of `profile`.
pub fn template_for(profile: &ImageProfile, file: &str) -> Option<&'static str> {
    Some(match (file, profile.seed) {
        ("user-data", SeedKind::Autoinstall) => "ubuntu/autoinstall",
        ("user-data", _) => "nocloud/user-data",
        ("meta-data", _) => "nocloud/meta-data",
        ("network-config", _) => "nocloud/network-config",
        ("vendor-data", _) => "nocloud/vendor-data",
        ("ks.cfg", SeedKind::Kickstart) => "rhel/kickstart",
        _ => return None,
    })
}

/// Renders every seed file of `profile` for one node, by file name.
pub fn render_seed(
    profile: &ImageProfile,
    cx: &SeedContext,
) -> Result<BTreeMap<String, String>, RenderError> {
    check_context(cx)?;
    let mut out = BTreeMap::new();
    for file in profile.seed_files() {
        if let Some(t) = template_for(profile, file) {
            let text = render(t, cx)?;
            check_rendered(file, &text)?;
            out.insert((*file).to_owned(), text);
        }
    }
    Ok(out)
}

/// Parses what cloud-init will parse: YAML files must load, user-data and
/// vendor-data must be `#cloud-config` documents.
pub fn check_rendered(file: &str, text: &str) -> Result<(), RenderError> {
    let broken = |why: String| RenderError::Broken {
        file: file.to_owned(),
        why,
    };
    if file == "ks.cfg" {
        return Ok(());
    }
    if matches!(file, "user-data" | "vendor-data") && !text.starts_with("#cloud-config\n") {
        return Err(broken("it does not start with #cloud-config".into()));
    }
    crate::yaml::parse(text).map_err(|e| broken(e.to_string()))?;
    Ok(())
}

/// Refuses values that no quoting makes right (a key line with a newline
/// would be two keys).
fn check_context(cx: &SeedContext) -> Result<(), RenderError> {
    for k in &cx.authorized_keys {
        if k.contains(['\n', '\r']) {
            return Err(RenderError::Unsafe(format!(
                "an authorized key for {} spans lines",
                cx.hostname
            )));
        }
    }
    if cx
        .host_key_private
        .lines()
        .any(|l| l.trim() == "KILN_HOST_KEY")
    {
        return Err(RenderError::Unsafe(
            "host key holds the here-doc marker".into(),
        ));
    }
    Ok(())
}

/// The kernel arguments that point an installer at its configuration,
/// grub-escaped (`;` as `\;`), then the profile's own.
pub fn installer_args(profile: &ImageProfile, seed_url: &str, ks_url: &str) -> String {
    let mut args: Vec<String> = match profile.seed {
        SeedKind::Autoinstall => vec!["autoinstall".into(), format!("ds=nocloud\\;s={seed_url}")],
        SeedKind::Nocloud => vec![format!("ds=nocloud\\;s={seed_url}")],
        SeedKind::Kickstart => vec![format!("inst.ks={ks_url}")],
    };
    args.extend(profile.kernel_args.iter().cloned());
    args.join(" ")
}

/// Where the deploy environment's ISO keeps the grub.cfg kiln rewrites.
pub const DEPLOY_GRUB_CFG: &str = "/boot/grub/grub.cfg";

/// The placeholder on the deploy environment's kernel line that kiln
/// replaces with the node's agent URL (`scripts/deploy-env/build.sh`).
pub const AGENT_URL_PLACEHOLDER: &str = "kiln.url=http://kiln.invalid/agent/NOTOKEN";

/// The deploy environment's grub.cfg for one node: the shipped one with
/// its comments (the padding that keeps the file longer than any node's)
/// dropped and the agent URL placeholder replaced by `agent_url`.
pub fn deploy_grub_cfg(
    original: &str,
    hostname: &str,
    agent_url: &str,
) -> Result<String, RenderError> {
    if !original.contains(AGENT_URL_PLACEHOLDER) {
        return Err(RenderError::Unsafe(format!(
            "the deploy environment's grub.cfg has no `{AGENT_URL_PLACEHOLDER}`: rebuild it with `kiln image build deploy-env`"
        )));
    }
    if !agent_url
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"/:._-[]".contains(&b))
    {
        return Err(RenderError::Unsafe(format!(
            "agent URL `{agent_url}` has characters grub would read as syntax"
        )));
    }
    let mut out = format!(
        "# Written by kiln for {}: the deploy environment.\n",
        grub_word(hostname)
    );
    for line in original.lines() {
        if line.trim_start().starts_with('#') || line.trim().is_empty() {
            continue;
        }
        out.push_str(&line.replace(AGENT_URL_PLACEHOLDER, &format!("kiln.url={agent_url}")));
        out.push('\n');
    }
    Ok(out)
}

/// A word safe in a grub comment line.
fn grub_word(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Builds the per-node grub.cfg from the image's own: its first `linux`
/// line's arguments (`inst.stage2=hd:LABEL=…`, `---`) are kept after kiln's
/// so the installer still finds its own media.
pub fn grub_cfg(
    profile: &ImageProfile,
    hostname: &str,
    original: &str,
    seed_url: &str,
    ks_url: &str,
) -> Result<String, RenderError> {
    let mut linux_cmd = "linux".to_owned();
    let mut initrd_cmd = "initrd".to_owned();
    let (mut kernel, mut initrd) = match &profile.installer {
        Some(i) => (i.kernel.clone(), i.initrd.clone()),
        None => ("/vmlinuz".to_owned(), "/initrd.img".to_owned()),
    };
    let mut kept = Vec::new();
    let mut seen_linux = false;
    for line in original.lines() {
        let mut words = line.split_whitespace();
        match words.next() {
            Some(cmd @ ("linux" | "linuxefi")) if !seen_linux => {
                seen_linux = true;
                linux_cmd = cmd.to_owned();
                if let Some(k) = words.next() {
                    kernel = k.to_owned();
                }
                // Keep the image's own arguments, minus any seed it had.
                kept = words
                    .filter(|w| {
                        !w.starts_with("ds=")
                            && !w.starts_with("inst.ks=")
                            && *w != "autoinstall"
                            && w.bytes()
                                .all(|b| b.is_ascii_graphic() && b != b'\'' && b != b'"')
                    })
                    .map(str::to_owned)
                    .collect();
            }
            Some(cmd @ ("initrd" | "initrdefi")) if initrd_cmd == "initrd" => {
                initrd_cmd = cmd.to_owned();
                if let Some(i) = words.next() {
                    initrd = i.to_owned();
                }
            }
            _ => {}
        }
    }
    let mut args = installer_args(profile, seed_url, ks_url);
    // Arguments after `---` are the installed system's (Ubuntu); the
    // profile's console settings belong on both sides.
    match kept.iter().position(|w| w == "---") {
        Some(i) => {
            let before = kept[..i].join(" ");
            if !before.is_empty() {
                args = format!("{before} {args}");
            }
            args.push_str(" ---");
            for a in kept[i + 1..].iter().chain(&profile.kernel_args) {
                args.push(' ');
                args.push_str(a);
            }
        }
        None if !kept.is_empty() => args = format!("{} {args}", kept.join(" ")),
        None => {}
    }
    let safe_path = |p: &str| {
        p.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/._-".contains(&b))
    };
    if !safe_path(&kernel) || !safe_path(&initrd) {
        return Err(RenderError::Unsafe(format!(
            "the image's grub.cfg names a kernel or initrd path kiln will not copy: {kernel} {initrd}"
        )));
    }
    render(
        "grub.cfg",
        &GrubContext {
            hostname: hostname.to_owned(),
            profile: profile.name.clone(),
            title: format!("Install {} on {hostname} (kiln)", profile.description),
            linux_cmd,
            initrd_cmd,
            kernel,
            args,
            initrd,
        },
    )
}

/// A context with fixed sample values, for `kiln render` without a node's
/// keys and for the snapshot tests.
pub fn sample_context(profile: &ImageProfile, hostname: &str) -> SeedContext {
    let base = "http://192.0.2.10:8080/seed/TOKEN/";
    context_with(
        profile,
        hostname,
        "ubuntu",
        vec!["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIExampleKeyOnlyForPreview operator@laptop".into()],
        "-----BEGIN OPENSSH PRIVATE KEY-----\n(private host key, generated per node)\n-----END OPENSSH PRIVATE KEY-----".into(),
        format!("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIExampleHostKey {hostname}"),
        base,
        "http://192.0.2.10:8080/done/TOKEN",
        "http://192.0.2.10:8080/report/TOKEN",
        Some("04:3f:72:00:00:01".into()),
        "kiln-sample",
    )
}

/// Builds a node's context.
#[allow(clippy::too_many_arguments)]
pub fn context_with(
    profile: &ImageProfile,
    hostname: &str,
    user: &str,
    authorized_keys: Vec<String>,
    host_key_private: String,
    host_key_public: String,
    seed_url: &str,
    phone_home_url: &str,
    report_url: &str,
    mac: Option<String>,
    instance_id: &str,
) -> SeedContext {
    let mut installed = profile.kernel_args.clone();
    if profile.family == OsFamily::Rhel {
        // BLS entries are not grub script: a plain `;`.
        installed.push(format!("ds=nocloud;s={seed_url}"));
    }
    SeedContext {
        hostname: hostname.to_owned(),
        instance_id: instance_id.to_owned(),
        user: user.to_owned(),
        authorized_keys,
        host_key_private,
        host_key_public,
        phone_home_url: phone_home_url.to_owned(),
        report_url: report_url.to_owned(),
        seed_url: seed_url.to_owned(),
        ks_url: format!("{seed_url}ks.cfg"),
        mac,
        profile: profile.name.clone(),
        kernel_args: profile.kernel_args.clone(),
        installed_kernel_args: installed.join(" "),
        sudoers_line: format!("{user} ALL=(ALL) NOPASSWD:ALL"),
    }
}
