//! Same-size tensor replacement inside an existing file.

use std::collections::HashSet;
use std::fs::OpenOptions;
use std::io;
use std::path::Path;

use memmap2::Mmap;

use crate::error::{Error, Result};
use crate::header::Header;

/// Overwrites the data of existing tensors of the file at `path` in place.
///
/// Each replacement must have exactly the tensor's current byte length (same type and shape).
/// Everything is validated before the first byte is written; then the data is written with
/// positioned writes and the file is fsynced. Nothing else in the file changes. This modifies
/// the model itself: use [`crate::write`] to produce a new file instead.
pub fn patch_in_place(path: &Path, replacements: &[(String, Vec<u8>)]) -> Result<()> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(|e| Error::io("open for writing", path, e))?;
    let meta = file.metadata().map_err(|e| Error::io("stat", path, e))?;
    if !meta.is_file() {
        let e = io::Error::new(io::ErrorKind::InvalidInput, "not a regular file");
        return Err(Error::io("open", path, e));
    }
    if meta.len() == 0 {
        return Err(Error::Truncated {
            what: "magic".into(),
            offset: 0,
            needed: 4,
            available: 0,
        });
    }

    let mut writes = Vec::with_capacity(replacements.len());
    {
        // SAFETY: read-only map of a file we hold open; dropped before we write to it.
        let map = unsafe { Mmap::map(&file) }.map_err(|e| Error::io("map", path, e))?;
        let header = Header::parse(&map)?;
        let mut seen = HashSet::new();
        for (name, data) in replacements {
            let t = header
                .tensor(name)
                .ok_or_else(|| Error::NoSuchTensor { name: name.clone() })?;
            if !seen.insert(name.as_str()) {
                return Err(Error::TensorExists { name: name.clone() });
            }
            if data.len() as u64 != t.size {
                return Err(Error::DataSize {
                    name: name.clone(),
                    ggml_type: t.ggml_type,
                    dims: t.dims.clone(),
                    expected: t.size,
                    got: data.len() as u64,
                });
            }
            // Header::parse checked that the data lies inside the file.
            writes.push((header.data_offset + t.offset, data.as_slice()));
        }
    }

    for (offset, data) in writes {
        write_at(&file, data, offset).map_err(|e| Error::io("write", path, e))?;
    }
    file.sync_all().map_err(|e| Error::io("sync", path, e))
}

#[cfg(unix)]
fn write_at(file: &std::fs::File, data: &[u8], offset: u64) -> io::Result<()> {
    std::os::unix::fs::FileExt::write_all_at(file, data, offset)
}

#[cfg(not(unix))]
fn write_at(mut file: &std::fs::File, data: &[u8], offset: u64) -> io::Result<()> {
    use std::io::{Seek, SeekFrom, Write};
    file.seek(SeekFrom::Start(offset))?;
    file.write_all(data)
}
