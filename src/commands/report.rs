//! `kiln report [RUN] [--format F] [--out FILE]`: renders a run from the
//! inventory's journal, or with `--record FILE` a run record read from a
//! JSON file (a JSON report is one too), so reports can be made without
//! the journal.

use std::path::Path;

use anyhow::Context as _;

use super::Ctx;
use crate::cli::ReportArgs;
use crate::exit::{BadInput, ExitStatus};
use crate::pipeline::record::RunRecord;
use crate::report::{Format, render};

/// Records larger than this are not something kiln wrote.
const MAX_RECORD_BYTES: u64 = 2 * 1024 * 1024 * 1024;

/// Runs `kiln report`.
pub fn run(ctx: &Ctx, args: &ReportArgs) -> anyhow::Result<ExitStatus> {
    let record = match &args.record {
        Some(path) => read_record(path)?,
        None => {
            let journal = crate::pipeline::journal::Journal::open(&crate::bmc::trust::state_dir(
                ctx.inventory_path()?,
            ))?;
            let id = match &args.run {
                Some(id) => id.clone(),
                None => journal
                    .latest()?
                    .ok_or_else(|| BadInput(format!("no runs in {}", journal.path().display())))?,
            };
            journal.load(&id)?
        }
    };
    let format = match args.format {
        Some(f) => f,
        None if ctx.global.json => Format::Json,
        None => Format::Md,
    };
    let text = render(&record, format);
    match &args.out {
        Some(path) => {
            write_replacing(path, &text)?;
            ctx.printer.info(&format!(
                "wrote the {format} report of run {} ({} nodes) to {}",
                record.run.id,
                record.nodes.len(),
                path.display()
            ));
        }
        None => ctx.printer.data(&text),
    }
    Ok(ExitStatus::Success)
}

/// Reads a record; a file that is not one is bad input (exit 2) with
/// serde's line and column.
pub fn read_record(path: &Path) -> anyhow::Result<RunRecord> {
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let len = file
        .metadata()
        .with_context(|| format!("reading {}", path.display()))?
        .len();
    if len > MAX_RECORD_BYTES {
        return Err(BadInput(format!(
            "{} is {len} bytes: too large for a run record",
            path.display()
        ))
        .into());
    }
    // A JSON report reads as a record too: its `summary` is ignored.
    let parsed: Result<RunRecord, _> = serde_json::from_reader(std::io::BufReader::new(file));
    match parsed {
        Ok(record) => Ok(record),
        Err(e) if e.is_io() => {
            Err(anyhow::Error::new(e).context(format!("reading {}", path.display())))
        }
        Err(e) => Err(BadInput(format!(
            "{}:{}:{}: not a run record: {e}",
            path.display(),
            e.line(),
            e.column()
        ))
        .into()),
    }
}

/// Writes `text` to `path` through a temporary file beside it, so a reader
/// (a CI job, a browser) never sees half a report.
fn write_replacing(path: &Path, text: &str) -> anyhow::Result<()> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "report".into());
    let tmp = path.with_file_name(format!(".{name}.kiln-tmp"));
    std::fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("replacing {}", path.display()))
}
