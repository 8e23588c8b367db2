//! The work behind each subcommand. Each returns an [`ExitStatus`] or an
//! error; `main` turns errors into exit codes with [`crate::exit::status_for`].

pub mod bench;
pub mod bench_bmc;
pub mod bench_bootserver;
pub mod bench_deploy;
pub mod bench_firmware;
pub mod bench_fleet;
pub mod bench_requests;
pub mod bench_sim;
pub mod bench_ssh;
pub mod bmc;
pub mod burnin;
pub mod demo;
pub mod demo_cloud;
pub mod demo_vm;
pub mod drivers;
pub mod firmware;
pub mod image;
pub mod image_build;
pub mod inventory;
pub mod judge;
pub mod keys;
pub mod profile;
pub mod provision;
pub mod remote;
pub mod render;
pub mod report;
pub mod serve;
pub mod sim;

use std::path::{Path, PathBuf};

use anyhow::Context as _;

use crate::cli::{Cli, Command, GlobalArgs};
use crate::exit::{BadInput, ExitStatus};
use crate::inventory::{Checked, Inventory, Node, Selection};
use crate::output::Printer;

/// What every command gets: the global flags and the printer.
pub struct Ctx {
    /// Global flags.
    pub global: GlobalArgs,
    /// Output.
    pub printer: Printer,
}

impl Ctx {
    /// The inventory path from `-i` or `KILN_INVENTORY`.
    pub fn inventory_path(&self) -> anyhow::Result<&Path> {
        self.global.inventory.as_deref().ok_or_else(|| {
            BadInput("no inventory given: pass -i FILE or set KILN_INVENTORY".into()).into()
        })
    }

    /// The folder the inventory lives in: relative paths in it, and
    /// kiln's files beside it (known hosts), start there.
    pub fn inventory_dir(&self) -> anyhow::Result<PathBuf> {
        Ok(self
            .inventory_path()?
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default())
    }

    /// Loads and checks the inventory, printing its diagnostics. Any error
    /// in it stops the command (exit 2): kiln never acts on a half-valid site.
    pub fn load_inventory(&self) -> anyhow::Result<Inventory> {
        let path = self.inventory_path()?;
        let checked = self.check(path)?;
        for d in &checked.diagnostics {
            self.printer.diagnostic(d);
        }
        match checked.inventory {
            Some(inventory) => Ok(inventory),
            None => Err(BadInput(format!(
                "{} has {} error(s); see `kiln inventory check`",
                path.display(),
                checked.errors()
            ))
            .into()),
        }
    }

    /// Loads an inventory kiln wrote itself (`what` names it in the
    /// error), printing its diagnostics: one that does not load is a bug
    /// in kiln, not the user's input.
    pub fn load_generated(&self, site: &Path, what: &str) -> anyhow::Result<Inventory> {
        let checked = crate::inventory::load_file(site)?;
        for d in &checked.diagnostics {
            self.printer.diagnostic(d);
        }
        checked
            .inventory
            .ok_or_else(|| anyhow::anyhow!("{what} does not load (a bug in kiln)"))
    }

    /// Reads and checks the inventory at `path` without printing.
    pub fn check(&self, path: &Path) -> anyhow::Result<Checked> {
        Ok(crate::inventory::load_file(path)?)
    }
}

/// The nodes `--select EXPR` names; every node without it.
pub fn select<'a>(
    inventory: &'a Inventory,
    select: &Option<String>,
) -> anyhow::Result<Vec<&'a Node>> {
    let selection = match select {
        Some(expr) => expr.parse()?,
        None => Selection::all(),
    };
    Ok(inventory.select(&selection)?)
}

/// The multi-threaded runtime an async command runs on.
pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// Runs a parsed command line.
pub fn run(cli: Cli) -> anyhow::Result<ExitStatus> {
    let printer = Printer::new(cli.global.json, cli.global.quiet, cli.global.color);
    let ctx = Ctx {
        global: cli.global,
        printer,
    };
    match cli.command {
        Command::Inventory(cmd) => inventory::run(&ctx, cmd),
        Command::Profile(cmd) => profile::run(&ctx, cmd),
        Command::Judge(args) => judge::run(&ctx, &args),
        Command::Burnin(args) => burnin::run(&ctx, &args),
        Command::Bench(cmd) => bench::run(&ctx, cmd),
        Command::Sim(cmd) => sim::run(&ctx, cmd),
        Command::Bmc(cmd) => bmc::run(&ctx, cmd),
        Command::Exec(args) => remote::exec(&ctx, &args),
        Command::Copy(args) => remote::copy(&ctx, &args),
        Command::Ssh(cmd) => remote::ssh(&ctx, cmd),
        Command::Provision(args) => provision::run(&ctx, &args),
        Command::Runs(cmd) => provision::runs(&ctx, cmd),
        Command::Demo(args) => demo::run(&ctx, &args),
        Command::Report(args) => report::run(&ctx, &args),
        Command::Image(cmd) => image::run(&ctx, cmd),
        Command::Drivers(cmd) => drivers::run(&ctx, cmd),
        Command::Firmware(cmd) => firmware::run(&ctx, cmd),
        Command::Serve(args) => serve::run(&ctx, &args),
        Command::Render(args) => render::run(&ctx, &args),
        Command::Keys(cmd) => keys::keys(&ctx, cmd),
        Command::Verify(args) => keys::verify(&ctx, &args),
    }
}

/// Refuses to overwrite an existing file, then writes `text` to `path`.
pub fn write_new_file(path: &PathBuf, text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                anyhow::Error::new(BadInput(format!(
                    "{} exists; kiln does not overwrite it",
                    path.display()
                )))
            } else {
                anyhow::Error::new(e).context(format!("creating {}", path.display()))
            }
        })?;
    file.write_all(text.as_bytes())
        .with_context(|| format!("writing {}", path.display()))
}
