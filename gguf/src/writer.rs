//! Streamed, atomic writing of an edited copy of a GGUF file.
//!
//! The output goes to a temporary file next to the target, is fsynced, re-opened and checked
//! with the reader, and only then renamed over the target; the directory is fsynced after the
//! rename. Untouched tensors are copied file to file (`copy_file_range` on Linux), or from the
//! source's memory map in chunks whose pages are released once written, so the resident set
//! stays small whatever the model's size.

use std::collections::hash_map::RandomState;
use std::fs::{self, File, OpenOptions};
use std::hash::{BuildHasher, Hasher};
use std::io::{self, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::edits::{Edits, NewTensor, Plan, Source};
use crate::error::{Error, Result};
use crate::file::GgufFile;
use crate::header::{pad, Header};
use crate::metadata::Metadata;
use crate::tensor::TensorInfo;

/// Bytes copied per write while streaming untouched tensors from the memory map.
const CHUNK: usize = 4 << 20;

/// How [`write()`] may treat the output path.
#[derive(Debug, Clone, Default)]
pub struct WriteOptions {
    /// Allow the output to replace the input model (same path, symlink or hard link).
    /// Off by default: the input is never modified unless asked for.
    pub allow_overwrite_input: bool,
    /// A scratch file nobody keeps across a crash: skip the fsyncs (the output is still
    /// re-opened, checked and renamed into place).
    pub scratch: bool,
}

/// What [`write()`] produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteReport {
    /// The output path.
    pub path: PathBuf,
    /// Output size in bytes.
    pub bytes: u64,
    /// Tensors in the output.
    pub tensors: usize,
    /// Tensors copied unchanged from the source.
    pub copied: usize,
    /// Tensors whose data was replaced.
    pub replaced: usize,
    /// Tensors added.
    pub added: usize,
    /// Metadata keys in the output.
    pub metadata_keys: usize,
}

/// Writes `src` with `edits` applied to `out`, atomically.
///
/// The edits are validated before anything is created. The header is built fresh (same
/// version as the source, metadata in the original order with the original types), untouched
/// tensors are copied byte for byte, padding bytes are zero. With no edits the output is
/// identical to a canonically padded input. On any error the temporary file is removed and
/// `out` is left as it was.
pub fn write(
    src: &GgufFile,
    edits: &Edits,
    out: &Path,
    opts: &WriteOptions,
) -> Result<WriteReport> {
    let Plan {
        mut header,
        sources,
    } = edits.plan(src.header())?;
    check_output(src, out, opts)?;
    let header_bytes = header.to_bytes();
    let report = WriteReport {
        path: out.to_path_buf(),
        bytes: header.file_len(),
        tensors: header.tensors.len(),
        copied: sources
            .iter()
            .filter(|s| matches!(s, Source::Copy { .. }))
            .count(),
        replaced: edits.replacements().len(),
        added: edits.additions().len(),
        metadata_keys: header.metadata.len(),
    };
    // The metadata now lives in `header_bytes`; drop the parsed copy before streaming (a large
    // vocabulary makes it tens of MiB).
    header.metadata = Metadata::new();

    let tmp = TempFile::create(out)?;
    let werr = |e: io::Error| Error::io("write", out, e);
    {
        let mut copier = Copier::new(src);
        let mut w = BufWriter::with_capacity(1 << 20, &tmp.file);
        w.write_all(&header_bytes).map_err(werr)?;
        // Untouched tensors that follow each other in the source are copied as one range,
        // their padding included where the source's padding is zero (as the output's is).
        let mut run: Option<(u64, u64)> = None; // (start, end) in the source
        for (info, source) in header.tensors.iter().zip(&sources) {
            let end = info.offset + info.size;
            let padding = pad(Some(end), header.alignment).unwrap_or(end) - end;
            match *source {
                Source::Copy { start, len } => {
                    let data_end = start.saturating_add(len);
                    let padded = data_end.saturating_add(padding);
                    let zero_pad = range(src.bytes(), data_end, padded)
                        .is_some_and(|p| p.iter().all(|&b| b == 0));
                    let to = if zero_pad { padded } else { data_end };
                    match &mut run {
                        Some((_, run_end)) if *run_end == start => *run_end = to,
                        _ => {
                            if let Some((a, b)) = run.take() {
                                copier.copy(a, b - a, &mut w).map_err(werr)?;
                            }
                            run = Some((start, to));
                        }
                    }
                    if !zero_pad {
                        if let Some((a, b)) = run.take() {
                            copier.copy(a, b - a, &mut w).map_err(werr)?;
                        }
                        write_zeros(&mut w, padding).map_err(werr)?;
                    }
                }
                Source::Data(data) => {
                    if let Some((a, b)) = run.take() {
                        copier.copy(a, b - a, &mut w).map_err(werr)?;
                    }
                    w.write_all(data).map_err(werr)?;
                    write_zeros(&mut w, padding).map_err(werr)?;
                }
            }
        }
        if let Some((a, b)) = run.take() {
            copier.copy(a, b - a, &mut w).map_err(werr)?;
        }
        w.flush().map_err(werr)?;
    }
    finish(tmp, out, &header_bytes, &header, report.bytes, opts)?;
    Ok(report)
}

/// Flushes the written temporary file to disk and, meanwhile, re-opens and checks it (from the
/// page cache), then renames it to `out`.
fn finish(
    tmp: TempFile,
    out: &Path,
    header_bytes: &[u8],
    header: &Header,
    file_len: u64,
    opts: &WriteOptions,
) -> Result<()> {
    let (synced, verified) = std::thread::scope(|s| {
        let sync = s.spawn(|| {
            if opts.scratch {
                Ok(())
            } else {
                tmp.file.sync_all()
            }
        });
        let verified = verify(&tmp.path, header_bytes, header, file_len);
        (sync.join(), verified)
    });
    let synced = synced.unwrap_or_else(|_| Err(io::Error::other("the sync thread panicked")));
    synced.map_err(|e| Error::io("sync", out, e))?;
    verified.map_err(|detail| Error::Verify {
        path: out.to_path_buf(),
        detail: Box::new(detail),
    })?;
    tmp.persist(out, !opts.scratch)
}

/// Writes a new GGUF file (version 3) holding `metadata` and `tensors` (in the given order;
/// their `after` is ignored), atomically and checked like [`write()`]. For small files made from
/// scratch: adapters, control vectors.
pub fn write_new(
    metadata: Metadata,
    tensors: Vec<NewTensor>,
    out: &Path,
    opts: &WriteOptions,
) -> Result<WriteReport> {
    let mut infos = Vec::with_capacity(tensors.len());
    for t in &tensors {
        infos.push(TensorInfo::new(
            t.name.clone(),
            t.dims.clone(),
            t.ggml_type,
        )?);
    }
    let header = Header::new(3, metadata, infos)?;
    for (info, t) in header.tensors.iter().zip(&tensors) {
        crate::edits::check_len(info, t.data.len())?;
    }
    existing_output(out)?;
    let header_bytes = header.to_bytes();
    let tmp = TempFile::create(out)?;
    let werr = |e: io::Error| Error::io("write", out, e);
    {
        let mut w = BufWriter::new(&tmp.file);
        w.write_all(&header_bytes).map_err(werr)?;
        for (info, t) in header.tensors.iter().zip(&tensors) {
            let end = info.offset + info.size;
            let padding = pad(Some(end), header.alignment).unwrap_or(end) - end;
            w.write_all(&t.data).map_err(werr)?;
            write_zeros(&mut w, padding).map_err(werr)?;
        }
        w.flush().map_err(werr)?;
    }
    finish(tmp, out, &header_bytes, &header, header.file_len(), opts)?;
    Ok(WriteReport {
        path: out.to_path_buf(),
        bytes: header.file_len(),
        tensors: header.tensors.len(),
        copied: 0,
        replaced: 0,
        added: tensors.len(),
        metadata_keys: header.metadata.len(),
    })
}

/// Copies byte ranges of the source file to the output.
///
/// Where it can, it reads through a second handle on the same file (checked to be the same
/// inode as the map) with `std::io::copy`, which Linux turns into `copy_file_range`: the data
/// never enters this process, so neither time nor resident set grows with the model. Otherwise
/// it copies from the memory map in chunks whose pages are released once written.
struct Copier<'a> {
    src: &'a GgufFile,
    file: Option<File>,
}

impl<'a> Copier<'a> {
    fn new(src: &'a GgufFile) -> Self {
        let file = File::open(src.path())
            .ok()
            .filter(|f| same_inode(f, src.file()));
        Copier { src, file }
    }

    fn copy(&mut self, start: u64, len: u64, w: &mut BufWriter<&File>) -> io::Result<()> {
        let end = start
            .checked_add(len)
            .filter(|&e| e <= self.src.len())
            .ok_or_else(|| io::Error::other("tensor range outside the source file"))?;
        if let Some(f) = self.file.as_mut() {
            w.flush()?;
            f.seek(SeekFrom::Start(start))?;
            let n = io::copy(&mut Read::take(&mut *f, len), w.get_mut())?;
            if n != len {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("source file ended {} bytes early", len - n),
                ));
            }
            return Ok(());
        }
        let bytes = self.src.bytes();
        // Both fit in usize: `end` is at most the length of the mapped file.
        let (mut pos, end) = (start as usize, end as usize);
        while pos < end {
            let next = end.min(pos + CHUNK);
            w.write_all(&bytes[pos..next])?;
            self.src.release(pos, next - pos);
            pos = next;
        }
        Ok(())
    }
}

/// `bytes[start..end]`, if inside.
fn range(bytes: &[u8], start: u64, end: u64) -> Option<&[u8]> {
    bytes.get(usize::try_from(start).ok()?..usize::try_from(end).ok()?)
}

#[cfg(unix)]
fn same_inode(a: &File, b: &File) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (a.metadata(), b.metadata()) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

#[cfg(not(unix))]
fn same_inode(_a: &File, _b: &File) -> bool {
    false
}

fn write_zeros(w: &mut impl Write, mut n: u64) -> io::Result<()> {
    const ZEROS: [u8; 4096] = [0; 4096];
    while n > 0 {
        let k = n.min(ZEROS.len() as u64) as usize;
        w.write_all(&ZEROS[..k])?;
        n -= k as u64;
    }
    Ok(())
}

/// Re-opens the written file, validates it with the reader and checks that it holds exactly
/// the intended header bytes, tensor directory and length.
fn verify(path: &Path, header_bytes: &[u8], header: &Header, file_len: u64) -> Result<()> {
    let written = GgufFile::open(path)?;
    if written.len() != file_len {
        return Err(Error::Mismatch {
            what: format!("file is {} bytes, expected {file_len}", written.len()),
        });
    }
    let w = written.header();
    if written.bytes().get(..header_bytes.len()) != Some(header_bytes)
        || w.data_offset != header.data_offset
        || w.alignment != header.alignment
        || w.tensors != header.tensors
    {
        return Err(Error::Mismatch {
            what: "header differs from the one written".into(),
        });
    }
    Ok(())
}

/// Refuses an output that is a directory or (unless allowed) the input model itself, by path,
/// symlink or hard link.
fn check_output(src: &GgufFile, out: &Path, opts: &WriteOptions) -> Result<()> {
    let Some(meta) = existing_output(out)? else {
        return Ok(());
    };
    if opts.allow_overwrite_input {
        return Ok(());
    }
    let same_path = match (fs::canonicalize(out), fs::canonicalize(src.path())) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    };
    if same_path || same_file(&meta, src.file()) {
        return Err(Error::OverwriteInput {
            path: out.to_path_buf(),
        });
    }
    Ok(())
}

/// Refuses an output that names a directory; the metadata of what is there, if anything (a
/// dangling link counts as nothing: the rename replaces it).
fn existing_output(out: &Path) -> Result<Option<fs::Metadata>> {
    let dir = || Error::OutputIsDir {
        path: out.to_path_buf(),
    };
    if out.file_name().is_none() {
        return Err(dir());
    }
    match fs::metadata(out) {
        Ok(meta) if meta.is_dir() => Err(dir()),
        Ok(meta) => Ok(Some(meta)),
        Err(_) => Ok(None),
    }
}

#[cfg(unix)]
fn same_file(meta: &fs::Metadata, file: &File) -> bool {
    use std::os::unix::fs::MetadataExt;
    file.metadata()
        .is_ok_and(|m| m.dev() == meta.dev() && m.ino() == meta.ino())
}

#[cfg(not(unix))]
fn same_file(_meta: &fs::Metadata, _file: &File) -> bool {
    false
}

/// A temporary file beside the output, removed on drop unless persisted.
struct TempFile {
    path: PathBuf,
    file: File,
    keep: bool,
}

impl TempFile {
    /// Creates `.NAME.tmp-PID-RAND` in the directory of `out`.
    /// Stale ones of killed writers (`.NAME.tmp-DEADPID-*`) are removed first.
    fn create(out: &Path) -> Result<TempFile> {
        let dir = parent_dir(out);
        let name = out
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        crate::stale::remove_stale(&dir, &format!(".{name}.tmp-"));
        let mut last_err = None;
        for _ in 0..8 {
            let path = dir.join(format!(
                ".{name}.tmp-{}-{:016x}",
                std::process::id(),
                random()
            ));
            match OpenOptions::new().write(true).create_new(true).open(&path) {
                Ok(file) => {
                    return Ok(TempFile {
                        path,
                        file,
                        keep: false,
                    })
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last_err = Some(e),
                Err(e) => return Err(Error::io("create a file in", dir, e)),
            }
        }
        let e = last_err.unwrap_or_else(|| io::Error::other("no free temporary name"));
        Err(Error::io("create a file in", dir, e))
    }

    /// Renames the file to `out` and (`sync`) fsyncs the directory.
    fn persist(mut self, out: &Path, sync: bool) -> Result<()> {
        fs::rename(&self.path, out).map_err(|e| Error::io("rename the output to", out, e))?;
        self.keep = true;
        if !sync {
            return Ok(());
        }
        let dir = parent_dir(out);
        #[cfg(unix)]
        File::open(&dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| Error::io("sync directory", &dir, e))?;
        Ok(())
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if !self.keep {
            let _ = fs::remove_file(&self.path);
        }
    }
}

fn parent_dir(out: &Path) -> PathBuf {
    match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// 64 unpredictable-enough bits for temporary names (std's per-process random hash keys).
fn random() -> u64 {
    let mut h = RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.finish()
}
