//! Changes to apply while rewriting a model, and how they turn into the output's layout.

use std::collections::{HashMap, HashSet};

use crate::error::{Error, Result};
use crate::header::Header;
use crate::tensor::TensorInfo;
use crate::types::GgmlType;
use crate::value::Value;

/// New data for an existing tensor: same dims, possibly another type.
#[derive(Debug, Clone)]
pub struct Replacement {
    /// Name of the existing tensor.
    pub name: String,
    /// Type of `data`.
    pub ggml_type: GgmlType,
    /// Exactly the bytes `ggml_type` needs for the tensor's dims.
    pub data: Vec<u8>,
}

/// A tensor to add.
#[derive(Debug, Clone)]
pub struct NewTensor {
    /// Its name (unique, at most 63 bytes).
    pub name: String,
    /// Its dims, `ne0` first.
    pub dims: Vec<u64>,
    /// Its type.
    pub ggml_type: GgmlType,
    /// Exactly the bytes `ggml_type` needs for `dims`.
    pub data: Vec<u8>,
    /// Place it right after this tensor (an existing one or another added one); `None` appends
    /// it at the end.
    pub after: Option<String>,
}

/// A metadata change, applied in the order recorded.
#[derive(Debug, Clone)]
pub enum MetadataEdit {
    /// Set a key (kept in place if present, appended otherwise).
    Set(String, Value),
    /// Remove a key (no-op if absent).
    Remove(String),
}

/// Everything to change while rewriting a model. The default is no change at all, which
/// rewrites the input byte for byte.
#[derive(Debug, Clone, Default)]
pub struct Edits {
    replacements: Vec<Replacement>,
    additions: Vec<NewTensor>,
    removals: Vec<String>,
    metadata: Vec<MetadataEdit>,
}

impl Edits {
    /// No edits.
    pub fn new() -> Self {
        Self::default()
    }

    /// Replaces the data of tensor `name` (same dims; `ggml_type` may differ from the original).
    pub fn replace_tensor(
        &mut self,
        name: impl Into<String>,
        ggml_type: GgmlType,
        data: Vec<u8>,
    ) -> &mut Self {
        self.replacements.push(Replacement {
            name: name.into(),
            ggml_type,
            data,
        });
        self
    }

    /// Adds a tensor.
    pub fn add_tensor(&mut self, tensor: NewTensor) -> &mut Self {
        self.additions.push(tensor);
        self
    }

    /// Removes tensor `name` (which must exist and not be replaced). Tensors added after it
    /// are placed where it was.
    pub fn remove_tensor(&mut self, name: impl Into<String>) -> &mut Self {
        self.removals.push(name.into());
        self
    }

    /// Sets metadata `key` to `value`.
    pub fn set_metadata(&mut self, key: impl Into<String>, value: impl Into<Value>) -> &mut Self {
        self.metadata
            .push(MetadataEdit::Set(key.into(), value.into()));
        self
    }

    /// Removes metadata `key`.
    pub fn remove_metadata(&mut self, key: impl Into<String>) -> &mut Self {
        self.metadata.push(MetadataEdit::Remove(key.into()));
        self
    }

    /// Appends every edit of `other` (in its order) to these.
    pub fn extend(&mut self, other: Edits) -> &mut Self {
        self.replacements.extend(other.replacements);
        self.additions.extend(other.additions);
        self.removals.extend(other.removals);
        self.metadata.extend(other.metadata);
        self
    }

    /// Whether there is nothing to change.
    pub fn is_empty(&self) -> bool {
        self.replacements.is_empty()
            && self.additions.is_empty()
            && self.removals.is_empty()
            && self.metadata.is_empty()
    }

    /// Replacements in the order recorded.
    pub fn replacements(&self) -> &[Replacement] {
        &self.replacements
    }

    /// Additions in the order recorded.
    pub fn additions(&self) -> &[NewTensor] {
        &self.additions
    }

    /// Removed tensors in the order recorded.
    pub fn removals(&self) -> &[String] {
        &self.removals
    }

    /// Metadata edits in the order recorded.
    pub fn metadata_edits(&self) -> &[MetadataEdit] {
        &self.metadata
    }

    /// Validates the edits against `src` and returns the output's header, without writing
    /// anything. Fails if a replaced tensor or an `after` anchor does not exist, a name is
    /// used twice, or data does not have the size its type and dims need.
    pub fn apply(&self, src: &Header) -> Result<Header> {
        self.plan(src).map(|p| p.header)
    }

    pub(crate) fn plan<'e>(&'e self, src: &Header) -> Result<Plan<'e>> {
        let mut metadata = src.metadata.clone();
        for edit in &self.metadata {
            match edit {
                MetadataEdit::Set(k, v) => {
                    metadata.set(k.clone(), v.clone());
                }
                MetadataEdit::Remove(k) => {
                    metadata.remove(k);
                }
            }
        }

        let mut replaced: HashMap<&str, &Replacement> = HashMap::new();
        for r in &self.replacements {
            let t = src.tensor(&r.name).ok_or_else(|| Error::NoSuchTensor {
                name: r.name.clone(),
            })?;
            if replaced.insert(&r.name, r).is_some() {
                return Err(Error::TensorExists {
                    name: r.name.clone(),
                });
            }
            let info = TensorInfo::new(&r.name, t.dims.clone(), r.ggml_type)?;
            check_len(&info, r.data.len())?;
        }

        let mut removed: HashSet<&str> = HashSet::new();
        for name in &self.removals {
            if src.tensor(name).is_none() {
                return Err(Error::NoSuchTensor { name: name.clone() });
            }
            if replaced.contains_key(name.as_str()) || !removed.insert(name) {
                return Err(Error::TensorExists { name: name.clone() });
            }
        }

        let mut names: HashSet<&str> = src
            .tensors
            .iter()
            .map(|t| t.name.as_str())
            .filter(|n| !removed.contains(n))
            .collect();
        let mut anchored: HashMap<&str, Vec<usize>> = HashMap::new();
        let mut at_end = Vec::new();
        for (i, a) in self.additions.iter().enumerate() {
            if !names.insert(&a.name) {
                return Err(Error::TensorExists {
                    name: a.name.clone(),
                });
            }
            let info = TensorInfo::new(&a.name, a.dims.clone(), a.ggml_type)?;
            check_len(&info, a.data.len())?;
            match &a.after {
                Some(anchor) => anchored.entry(anchor.as_str()).or_default().push(i),
                None => at_end.push(i),
            }
        }
        for anchor in anchored.keys() {
            if !names.contains(anchor) && !removed.contains(anchor) {
                return Err(Error::NoSuchTensor {
                    name: (*anchor).to_owned(),
                });
            }
        }

        // Depth-first: each tensor, then what is anchored after it, in the order recorded.
        let mut order: Vec<Entry> = Vec::with_capacity(src.tensors.len() + self.additions.len());
        let roots = (0..src.tensors.len())
            .map(Entry::Source)
            .chain(at_end.into_iter().map(Entry::Added));
        let mut stack = Vec::new();
        for root in roots {
            stack.push(root);
            while let Some(entry) = stack.pop() {
                order.push(entry);
                let name = match entry {
                    Entry::Source(i) => src.tensors[i].name.as_str(),
                    Entry::Added(i) => self.additions[i].name.as_str(),
                };
                if let Some(children) = anchored.get(name) {
                    stack.extend(children.iter().rev().map(|&i| Entry::Added(i)));
                }
            }
        }
        if order.len() != src.tensors.len() + self.additions.len() {
            // Only additions anchored on each other in a cycle are never reached.
            let placed: HashSet<usize> = order
                .iter()
                .filter_map(|e| match e {
                    Entry::Added(i) => Some(*i),
                    Entry::Source(_) => None,
                })
                .collect();
            let lost = (0..self.additions.len())
                .find(|i| !placed.contains(i))
                .map(|i| self.additions[i].after.clone().unwrap_or_default())
                .unwrap_or_default();
            return Err(Error::NoSuchTensor { name: lost });
        }

        let mut infos = Vec::with_capacity(order.len());
        let mut sources = Vec::with_capacity(order.len());
        for entry in order {
            match entry {
                Entry::Source(i) if removed.contains(src.tensors[i].name.as_str()) => {}
                Entry::Source(i) => {
                    let t = &src.tensors[i];
                    match replaced.get(t.name.as_str()) {
                        Some(r) => {
                            infos.push(TensorInfo::new(&t.name, t.dims.clone(), r.ggml_type)?);
                            sources.push(Source::Data(&r.data));
                        }
                        None => {
                            infos.push(t.clone());
                            sources.push(Source::Copy {
                                start: src.data_offset.saturating_add(t.offset),
                                len: t.size,
                            });
                        }
                    }
                }
                Entry::Added(i) => {
                    let a = &self.additions[i];
                    infos.push(TensorInfo::new(&a.name, a.dims.clone(), a.ggml_type)?);
                    sources.push(Source::Data(&a.data));
                }
            }
        }
        let header = Header::new(src.version, metadata, infos)?;
        Ok(Plan { header, sources })
    }
}

pub(crate) fn check_len(info: &TensorInfo, got: usize) -> Result<()> {
    if got as u64 != info.size {
        return Err(Error::DataSize {
            name: info.name.clone(),
            ggml_type: info.ggml_type,
            dims: info.dims.clone(),
            expected: info.size,
            got: got as u64,
        });
    }
    Ok(())
}

#[derive(Debug, Clone, Copy)]
enum Entry {
    Source(usize),
    Added(usize),
}

/// Where the bytes of one output tensor come from.
#[derive(Debug)]
pub(crate) enum Source<'e> {
    /// Copied from the source file at absolute offset `start`.
    Copy { start: u64, len: u64 },
    /// Supplied by the edits.
    Data(&'e [u8]),
}

/// The output header and, for each of its tensors in order, where the data comes from.
#[derive(Debug)]
pub(crate) struct Plan<'e> {
    pub header: Header,
    pub sources: Vec<Source<'e>>,
}
