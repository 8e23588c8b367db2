//! Just enough ISO 9660 to rewrite one file of an installer image while it
//! streams: find a file's extent through every directory tree (the primary
//! volume descriptor's, and Joliet's supplementary one, whose records point
//! at the same extent), and describe the bytes to overlay. Rock Ridge
//! names live in the records' system-use area; matching is on the ISO
//! name, case-insensitively and without `;1`, which finds the same file.
//!
//! Also a tiny writer, so tests and the demo get an "installer" without
//! xorriso.

use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

/// ISO 9660 logical sector size (every image kiln has met uses 2048).
pub const SECTOR: u64 = 2048;

/// Why an image cannot be patched.
#[derive(Debug, thiserror::Error)]
pub enum IsoError {
    /// Reading the file failed.
    #[error("{path}: {source}")]
    Io {
        /// The image.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Not an ISO 9660 image, or a damaged one.
    #[error("{path}: not an ISO 9660 image ({why})")]
    NotIso {
        /// The image.
        path: String,
        /// What was wrong.
        why: String,
    },
    /// The file is not in the image.
    #[error("{path}: no {file} inside the image")]
    NoFile {
        /// The image.
        path: String,
        /// The file looked for.
        file: String,
    },
    /// The new content does not fit the file's sectors.
    #[error("{path}: the new {file} ({new} bytes) does not fit its {room} allocated bytes")]
    TooBig {
        /// The image.
        path: String,
        /// The file.
        file: String,
        /// New length.
        new: usize,
        /// Room available.
        room: u64,
    },
}

/// A file found in an image: its extent, length, and every directory
/// record (byte offset in the image) that describes it.
#[derive(Clone, Debug, PartialEq)]
pub struct Found {
    /// Byte offset of its data.
    pub offset: u64,
    /// Its length in bytes.
    pub len: u64,
    /// Directory records pointing at it (primary, Joliet).
    pub records: Vec<u64>,
}

/// Bytes to lay over an image as it is served: `(offset, bytes)`, sorted,
/// not overlapping.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Overlay {
    patches: Vec<(u64, Vec<u8>)>,
}

impl Overlay {
    /// Adds a patch (kept sorted).
    pub fn add(&mut self, offset: u64, bytes: Vec<u8>) {
        self.patches.push((offset, bytes));
        self.patches.sort_by_key(|(o, _)| *o);
    }

    /// Replaces what `buf` (the image's bytes from `at`) holds where a
    /// patch covers it.
    pub fn apply(&self, at: u64, buf: &mut [u8]) {
        let end = at + buf.len() as u64;
        for (offset, bytes) in &self.patches {
            let p_end = offset + bytes.len() as u64;
            if p_end <= at || *offset >= end {
                continue;
            }
            let from = (*offset).max(at);
            let to = p_end.min(end);
            let src = &bytes[(from - offset) as usize..(to - offset) as usize];
            buf[(from - at) as usize..(to - at) as usize].copy_from_slice(src);
        }
    }

    /// Whether there is nothing to overlay.
    pub fn is_empty(&self) -> bool {
        self.patches.is_empty()
    }
}

fn both32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn put_both32(b: &mut [u8], v: u32) {
    b[..4].copy_from_slice(&v.to_le_bytes());
    b[4..8].copy_from_slice(&v.to_be_bytes());
}

fn put_both16(b: &mut [u8], v: u16) {
    b[..2].copy_from_slice(&v.to_le_bytes());
    b[2..4].copy_from_slice(&v.to_be_bytes());
}

/// One directory record: (its byte offset, name, extent LBA, data length,
/// is a directory).
type Entry = (u64, String, u32, u32, bool);

struct Reader<'a, R> {
    file: R,
    path: &'a str,
}

impl<R: Read + Seek> Reader<'_, R> {
    fn read_at(&mut self, offset: u64, len: usize) -> Result<Vec<u8>, IsoError> {
        let io = |source| IsoError::Io {
            path: self.path.to_owned(),
            source,
        };
        let mut buf = vec![0; len];
        self.file.seek(SeekFrom::Start(offset)).map_err(io)?;
        self.file.read_exact(&mut buf).map_err(io)?;
        Ok(buf)
    }

    fn bad(&self, why: impl Into<String>) -> IsoError {
        IsoError::NotIso {
            path: self.path.to_owned(),
            why: why.into(),
        }
    }

    /// The directory records of one directory: (record offset, name, extent
    /// LBA, length, is_dir).
    fn list(&mut self, lba: u32, len: u32, joliet: bool) -> Result<Vec<Entry>, IsoError> {
        // Directories of installer images are a few sectors; a huge one
        // means a damaged or hostile image.
        if len > 16 << 20 {
            return Err(self.bad("a directory larger than 16 MiB"));
        }
        let base = u64::from(lba) * SECTOR;
        let data = self.read_at(base, len as usize)?;
        let mut out = Vec::new();
        let mut at = 0usize;
        while at < data.len() {
            let rec_len = data[at] as usize;
            if rec_len == 0 {
                // Records never straddle sectors: the rest is padding.
                at = (at / SECTOR as usize + 1) * SECTOR as usize;
                continue;
            }
            if rec_len < 34 || at + rec_len > data.len() {
                return Err(self.bad("a directory record runs past its directory"));
            }
            let rec = &data[at..at + rec_len];
            let name_len = rec[32] as usize;
            if 33 + name_len > rec_len {
                return Err(self.bad("a file name runs past its record"));
            }
            let raw = &rec[33..33 + name_len];
            let name = if name_len == 1 && raw[0] <= 1 {
                String::new() // `.` and `..`
            } else if joliet {
                let units: Vec<u16> = raw
                    .chunks_exact(2)
                    .map(|c| u16::from_be_bytes([c[0], c[1]]))
                    .collect();
                String::from_utf16_lossy(&units)
            } else {
                String::from_utf8_lossy(raw).into_owned()
            };
            out.push((
                base + at as u64,
                name,
                both32(rec, 2),
                both32(rec, 10),
                rec[25] & 2 != 0,
            ));
            at += rec_len;
        }
        Ok(out)
    }
}

/// `GRUB.CFG;1` and `grub.cfg` name the same file.
fn same_name(iso: &str, want: &str) -> bool {
    let iso = iso.split(';').next().unwrap_or(iso).trim_end_matches('.');
    iso.eq_ignore_ascii_case(want)
}

/// Finds `file` (an absolute path like `/boot/grub/grub.cfg`) in the image
/// read from `r`, through every directory tree.
pub fn find<R: Read + Seek>(r: R, path: &str, file: &str) -> Result<Found, IsoError> {
    let mut rd = Reader { file: r, path };
    let parts: Vec<&str> = file.split('/').filter(|p| !p.is_empty()).collect();
    let mut found: Option<Found> = None;
    let mut saw_primary = false;
    // Volume descriptors start at sector 16 and end with type 255.
    for sector in 16..64u64 {
        let vd = rd.read_at(sector * SECTOR, SECTOR as usize)?;
        if &vd[1..6] != b"CD001" {
            return Err(rd.bad(format!("no volume descriptor at sector {sector}")));
        }
        let kind = vd[0];
        if kind == 255 {
            break;
        }
        // Joliet is a supplementary descriptor (type 2) with a UCS-2
        // escape sequence.
        let joliet = kind == 2 && vd[88] == 0x25 && vd[89] == 0x2f;
        if kind != 1 && !joliet {
            continue;
        }
        saw_primary |= kind == 1;
        if u16::from_le_bytes([vd[128], vd[129]]) as u64 != SECTOR {
            return Err(rd.bad("a logical block size other than 2048"));
        }
        let root = &vd[156..156 + 34];
        let (mut lba, mut len) = (both32(root, 2), both32(root, 10));
        let mut hit = None;
        for (i, part) in parts.iter().enumerate() {
            let entries = rd.list(lba, len, joliet)?;
            let Some(e) = entries.into_iter().find(|e| same_name(&e.1, part)) else {
                break;
            };
            if i + 1 == parts.len() {
                if !e.4 {
                    hit = Some(e);
                }
            } else if e.4 {
                (lba, len) = (e.2, e.3);
            } else {
                break;
            }
        }
        if let Some((rec, _, lba, len, _)) = hit {
            match &mut found {
                Some(f) if f.offset == u64::from(lba) * SECTOR => f.records.push(rec),
                Some(_) => {} // A tree pointing elsewhere: keep the first.
                None => {
                    found = Some(Found {
                        offset: u64::from(lba) * SECTOR,
                        len: u64::from(len),
                        records: vec![rec],
                    })
                }
            }
        }
    }
    if !saw_primary {
        return Err(rd.bad("no primary volume descriptor"));
    }
    found.ok_or_else(|| IsoError::NoFile {
        path: path.to_owned(),
        file: file.to_owned(),
    })
}

/// Finds `file` in the image at `path` and reads its bytes (a small file
/// like grub.cfg; refused above 1 MiB).
pub fn read_file(path: &Path, file: &str) -> Result<(Found, Vec<u8>), IsoError> {
    let name = path.display().to_string();
    let io = |source| IsoError::Io {
        path: name.clone(),
        source,
    };
    let f = std::fs::File::open(path).map_err(io)?;
    let mut r = std::io::BufReader::new(f);
    let found = find(&mut r, &name, file)?;
    if found.len > 1 << 20 {
        return Err(IsoError::NotIso {
            path: name,
            why: format!("{file} is larger than 1 MiB"),
        });
    }
    let mut rd = Reader {
        file: r,
        path: &name,
    };
    let bytes = rd.read_at(found.offset, found.len as usize)?;
    Ok((found, bytes))
}

/// Plans the overlay that replaces the file `found` (named `file`, in the
/// image `path`) with `content`. Shorter content is padded with newlines
/// to the old length (grub ignores blank lines), so no record changes;
/// longer content that still fits the file's sectors gets every record's
/// length field patched.
pub fn plan_replace(
    path: &Path,
    file: &str,
    found: &Found,
    content: &[u8],
) -> Result<Overlay, IsoError> {
    let room = found.len.div_ceil(SECTOR).max(1) * SECTOR;
    if content.len() as u64 > room {
        return Err(IsoError::TooBig {
            path: path.display().to_string(),
            file: file.to_owned(),
            new: content.len(),
            room,
        });
    }
    let mut overlay = Overlay::default();
    let mut bytes = content.to_vec();
    if (bytes.len() as u64) < found.len {
        bytes.resize(found.len as usize, b'\n');
    } else if bytes.len() as u64 > found.len {
        for rec in &found.records {
            let mut field = vec![0; 8];
            put_both32(&mut field, bytes.len() as u32);
            overlay.add(rec + 10, field);
        }
    }
    overlay.add(found.offset, bytes);
    Ok(overlay)
}

/// Writes a minimal ISO 9660 image (primary descriptor, path tables,
/// nested directories) holding `files` (absolute paths; upper-case
/// 8.3-safe names are the caller's concern). For tests and the demo's
/// installer.
pub fn write(files: &[(&str, &[u8])]) -> Vec<u8> {
    // Directory tree: each directory is one sector (small trees only).
    #[derive(Default)]
    struct Dir {
        name: String,
        parent: usize,
        lba: u32,
        subdirs: Vec<usize>,
        files: Vec<usize>,
    }
    let mut dirs = vec![Dir::default()];
    let mut placed: Vec<(usize, String, u32, &[u8])> = Vec::new();
    for (path, data) in files {
        let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
        let mut cur = 0;
        for part in &parts[..parts.len().saturating_sub(1)] {
            let name = part.to_ascii_uppercase();
            let next = dirs[cur]
                .subdirs
                .iter()
                .copied()
                .find(|&d| dirs[d].name == name);
            cur = match next {
                Some(d) => d,
                None => {
                    dirs.push(Dir {
                        name,
                        parent: cur,
                        ..Dir::default()
                    });
                    let id = dirs.len() - 1;
                    dirs[cur].subdirs.push(id);
                    id
                }
            };
        }
        let name = format!("{};1", parts.last().unwrap_or(&"FILE").to_ascii_uppercase());
        placed.push((cur, name, 0, data));
        let idx = placed.len() - 1;
        dirs[cur].files.push(idx);
    }
    // Layout: 16 system sectors, PVD, terminator, path table L, path
    // table M, directories, then file data.
    let mut next = 20u32;
    for d in &mut dirs {
        d.lba = next;
        next += 1;
    }
    for f in &mut placed {
        f.2 = next;
        next += (f.3.len() as u64).div_ceil(SECTOR).max(1) as u32;
    }
    let total = next;
    let mut img = vec![0u8; total as usize * SECTOR as usize];
    let record = |lba: u32, len: u32, dir: bool, name: &[u8]| -> Vec<u8> {
        let mut r = vec![0u8; 33 + name.len() + (name.len() + 1) % 2];
        r[0] = r.len() as u8;
        put_both32(&mut r[2..10], lba);
        put_both32(&mut r[10..18], len);
        r[18..25].copy_from_slice(&[125, 1, 1, 0, 0, 0, 0]); // 2025-01-01
        r[25] = if dir { 2 } else { 0 };
        put_both16(&mut r[28..32], 1);
        r[32] = name.len() as u8;
        r[33..33 + name.len()].copy_from_slice(name);
        r
    };
    // Path table (little-endian at 18, big-endian at 19), breadth-first
    // order is the order directories were created in here.
    let mut pt_l = Vec::new();
    let mut pt_m = Vec::new();
    for (i, d) in dirs.iter().enumerate() {
        let name: &[u8] = if i == 0 { &[0] } else { d.name.as_bytes() };
        for (pt, be) in [(&mut pt_l, false), (&mut pt_m, true)] {
            pt.push(name.len() as u8);
            pt.push(0);
            let parent = d.parent as u16 + 1;
            if be {
                pt.extend_from_slice(&d.lba.to_be_bytes());
                pt.extend_from_slice(&parent.to_be_bytes());
            } else {
                pt.extend_from_slice(&d.lba.to_le_bytes());
                pt.extend_from_slice(&parent.to_le_bytes());
            }
            pt.extend_from_slice(name);
            if name.len() % 2 == 1 {
                pt.push(0);
            }
        }
    }
    let at = |lba: u32| lba as usize * SECTOR as usize;
    img[at(18)..at(18) + pt_l.len()].copy_from_slice(&pt_l);
    img[at(19)..at(19) + pt_m.len()].copy_from_slice(&pt_m);
    for d in &dirs {
        let mut data = record(d.lba, SECTOR as u32, true, &[0]);
        data.extend(record(dirs[d.parent].lba, SECTOR as u32, true, &[1]));
        for &s in &d.subdirs {
            data.extend(record(
                dirs[s].lba,
                SECTOR as u32,
                true,
                dirs[s].name.as_bytes(),
            ));
        }
        for &f in &d.files {
            let (_, name, lba, bytes) = &placed[f];
            data.extend(record(*lba, bytes.len() as u32, false, name.as_bytes()));
        }
        data.truncate(SECTOR as usize);
        img[at(d.lba)..at(d.lba) + data.len()].copy_from_slice(&data);
    }
    for (_, _, lba, bytes) in &placed {
        img[at(*lba)..at(*lba) + bytes.len()].copy_from_slice(bytes);
    }
    let pvd = &mut img[at(16)..at(17)];
    pvd[0] = 1;
    pvd[1..6].copy_from_slice(b"CD001");
    pvd[6] = 1;
    pvd[8..40].fill(b' ');
    pvd[40..72].fill(b' ');
    pvd[40..51].copy_from_slice(b"KILN_INSTAL");
    put_both32(&mut pvd[80..88], total);
    put_both16(&mut pvd[120..124], 1);
    put_both16(&mut pvd[124..128], 1);
    put_both16(&mut pvd[128..132], SECTOR as u16);
    put_both32(&mut pvd[132..140], pt_l.len() as u32);
    pvd[140..144].copy_from_slice(&18u32.to_le_bytes());
    pvd[148..152].copy_from_slice(&19u32.to_be_bytes());
    let root = record(dirs[0].lba, SECTOR as u32, true, &[0]);
    pvd[156..190].copy_from_slice(&root);
    pvd[190..813].fill(b' ');
    for range in [813..830, 830..847, 847..864, 864..881] {
        pvd[range.clone()].fill(b'0');
        pvd[range.end - 1] = 0;
    }
    pvd[881] = 1;
    let term = &mut img[at(17)..at(18)];
    term[0] = 255;
    term[1..6].copy_from_slice(b"CD001");
    term[6] = 1;
    img
}

/// The grub.cfg of the installer kiln writes for tests and the demo: the
/// shape of Ubuntu's, without a seed.
pub const DEMO_GRUB_CFG: &str = "set timeout=5\n\nloadfont unicode\n\nmenuentry \"Try or Install Ubuntu Server\" {\n\tset gfxpayload=keep\n\tlinux\t/casper/vmlinuz  ---\n\tinitrd\t/casper/initrd\n}\n";

/// A small installer image: grub.cfg, a kernel and initrd of `payload`
/// bytes each (so transfers take measurable time).
pub fn demo_installer(payload: usize) -> Vec<u8> {
    let kernel = vec![0x4du8; payload];
    write(&[
        ("/boot/grub/grub.cfg", DEMO_GRUB_CFG.as_bytes()),
        ("/casper/vmlinuz", &kernel),
        ("/casper/initrd", &kernel),
    ])
}

/// A stand-in for `kiln image build deploy-env`'s `deploy.iso`, for the
/// demo and tests on the virtual rack: the same grub.cfg layout (kernel
/// line with the agent URL placeholder, padded to 4 KiB so every node's
/// own fits) and `payload` bytes of "kernel". The simulated nodes play the
/// agent it would start.
pub fn demo_deploy_env(payload: usize) -> Vec<u8> {
    let mut cfg = format!(
        "# kiln deploy environment (simulated).\n\
         set default=0\nset timeout=1\nmenuentry 'kiln deploy agent' {{\n\
         \tlinux\t/vmlinuz console=tty0 console=ttyS0,115200 {}\n\
         \tinitrd\t/initrd.img\n}}\n",
        crate::imaging::seed::AGENT_URL_PLACEHOLDER
    );
    while cfg.len() < 4096 {
        cfg.push_str("#\n");
    }
    let kernel = vec![0x4du8; payload];
    write(&[
        ("/boot/grub/grub.cfg", cfg.as_bytes()),
        ("/vmlinuz", &kernel),
        ("/initrd.img", &kernel),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_and_replaces_grub_cfg_in_a_written_image() {
        let img = demo_installer(5000);
        let found = find(std::io::Cursor::new(&img), "t", "/boot/grub/grub.cfg").unwrap();
        assert_eq!(found.len, DEMO_GRUB_CFG.len() as u64);
        let at = found.offset as usize;
        assert_eq!(&img[at..at + DEMO_GRUB_CFG.len()], DEMO_GRUB_CFG.as_bytes());
        assert_eq!(found.records.len(), 1);
        assert!(matches!(
            find(std::io::Cursor::new(&img), "t", "/boot/grub/nope.cfg"),
            Err(IsoError::NoFile { .. })
        ));
    }

    #[test]
    fn overlay_applies_across_chunk_edges() {
        let mut o = Overlay::default();
        o.add(10, b"abcdef".to_vec());
        let mut whole = vec![b'.'; 20];
        o.apply(0, &mut whole);
        assert_eq!(&whole, b"..........abcdef....");
        let mut part = vec![b'.'; 4];
        o.apply(12, &mut part);
        assert_eq!(&part, b"cdef");
        let mut part = vec![b'.'; 3];
        o.apply(8, &mut part);
        assert_eq!(&part, b"..a");
    }

    #[test]
    fn garbage_is_not_an_iso() {
        let junk = vec![7u8; 40 * 2048];
        assert!(matches!(
            find(std::io::Cursor::new(junk), "j", "/a"),
            Err(IsoError::NotIso { .. })
        ));
        assert!(find(std::io::Cursor::new(vec![0u8; 100]), "j", "/a").is_err());
    }
}
