//! A GGUF file opened read-only through a memory map.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

use memmap2::Mmap;

use crate::error::{Error, Result};
use crate::header::Header;
use crate::tensor::TensorInfo;

/// A validated GGUF file, memory-mapped read-only. Tensor data is borrowed from the map, so
/// opening even a large model costs only the header.
///
/// As with any memory map, the file must not be truncated or rewritten in place by another
/// process while it is open (replacing it with a rename is fine).
#[derive(Debug)]
pub struct GgufFile {
    path: PathBuf,
    file: File,
    map: Option<Mmap>,
    header: Header,
}

impl GgufFile {
    /// Opens, maps and validates `path` (see [`Header::parse`]).
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let file = File::open(&path).map_err(|e| Error::io("open", &path, e))?;
        let meta = file.metadata().map_err(|e| Error::io("stat", &path, e))?;
        if !meta.is_file() {
            let e = io::Error::new(io::ErrorKind::InvalidInput, "not a regular file");
            return Err(Error::io("open", &path, e));
        }
        let map = if meta.len() == 0 {
            None
        } else {
            // SAFETY: the map is read-only; the type's docs require that the file is not
            // modified in place while open, which is the usual contract for mapped models.
            Some(unsafe { Mmap::map(&file) }.map_err(|e| Error::io("map", &path, e))?)
        };
        let header = Header::parse(map.as_deref().unwrap_or(&[]))?;
        Ok(GgufFile {
            path,
            file,
            map,
            header,
        })
    }

    /// The parsed header.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// The path the file was opened with.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The whole file.
    pub fn bytes(&self) -> &[u8] {
        self.map.as_deref().unwrap_or(&[])
    }

    /// File length in bytes.
    pub fn len(&self) -> u64 {
        self.bytes().len() as u64
    }

    /// Whether the file is empty (never true for an opened file).
    pub fn is_empty(&self) -> bool {
        self.bytes().is_empty()
    }

    /// The data of a tensor of this file's header (an empty slice for an entry that does not
    /// lie inside this file, which cannot happen for entries of [`GgufFile::header`]).
    pub fn tensor_data(&self, info: &TensorInfo) -> &[u8] {
        let start = self.header.data_offset.checked_add(info.offset);
        let end = start.and_then(|s| s.checked_add(info.size));
        match (start, end) {
            (Some(s), Some(e)) => usize::try_from(s)
                .ok()
                .zip(usize::try_from(e).ok())
                .and_then(|(s, e)| self.bytes().get(s..e))
                .unwrap_or(&[]),
            _ => &[],
        }
    }

    /// The data of the tensor named `name`.
    pub fn tensor_bytes(&self, name: &str) -> Option<&[u8]> {
        self.header.tensor(name).map(|t| self.tensor_data(t))
    }

    /// The open file handle.
    pub(crate) fn file(&self) -> &File {
        &self.file
    }

    /// Drops every page of the file from this process's resident set (they stay in the page
    /// cache, and are read back on the next access): for a long run that reads a large model
    /// a piece at a time. Best effort.
    pub fn release_pages(&self) {
        self.release(0, self.bytes().len());
    }

    /// Drops the pages of `bytes()[offset..offset + len]` from this process's resident set
    /// (they stay in the page cache); used while streaming so that copying a large model does
    /// not grow the resident set. Best effort: errors are ignored.
    pub(crate) fn release(&self, offset: usize, len: usize) {
        #[cfg(unix)]
        if let Some(map) = &self.map {
            if offset.checked_add(len).is_some_and(|end| end <= map.len()) {
                // SAFETY: the map is a read-only shared file mapping. MADV_DONTNEED only unmaps
                // the pages; a later access faults them in again from the same file, so any
                // outstanding borrow keeps seeing the same bytes.
                let _ = unsafe {
                    map.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, offset, len)
                };
            }
        }
        #[cfg(not(unix))]
        let _ = (offset, len);
    }
}
