//! What a written model records of how it was made: `sleep.*` keys describing the latest
//! stage, and `sleep.history`, one line per stage the model has been through, oldest first, so
//! stacked patches and bakes stay on record.

use sha2::{Digest, Sha256};

use super::edit::EditType;

/// What one stage (a patch, a bake) records of itself.
#[derive(Debug, Clone)]
pub struct Provenance {
    /// its line in `sleep.history`
    pub history: String,
    /// its `sleep.*` keys, in the order they are written
    pub keys: gguf::Metadata,
}

/// The keys every stage records, in file order: what was done, how, to what prompt.
#[derive(Debug, Clone)]
pub struct Stage<'a> {
    /// method name (`down`, `bake`, …)
    pub method: &'a str,
    /// how it was fitted (`sequential`, `lora-kl`, …)
    pub mode: &'a str,
    /// scale of the change
    pub strength: f32,
    /// the system prompt (recorded as its SHA-256 only)
    pub system: &'a str,
    /// calibration questions
    pub calibration: usize,
    /// layers changed, `start..end`
    pub layers: String,
    /// storage of changed matrices
    pub edit_type: EditType,
}

impl Stage<'_> {
    /// The stage's keys, to which the caller adds its own.
    pub fn keys(&self) -> gguf::Metadata {
        let mut keys = gguf::Metadata::new();
        keys.set("sleep.version", env!("CARGO_PKG_VERSION"));
        keys.set("sleep.method", self.method);
        keys.set("sleep.mode", self.mode);
        keys.set("sleep.strength", self.strength);
        keys.set("sleep.prompt_sha256", prompt_sha256(self.system));
        keys.set("sleep.calibration_size", self.calibration as u32);
        keys.set("sleep.layers", self.layers.as_str());
        keys.set("sleep.edit_type", self.edit_type.name());
        keys
    }
}

/// The hex SHA-256 of a system prompt (the prompt itself is never stored).
pub fn prompt_sha256(system: &str) -> String {
    Sha256::digest(system.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Record provenance in `edits` of a file whose source header is `src`: `first`'s keys, then
/// `sleep.history` (the source's lines, then `first`'s and `later`'s), then `later`'s keys,
/// which replace `first`'s (a bake recorded over the patch it ran in the same write).
pub fn record(
    edits: &mut gguf::Edits,
    src: &gguf::Header,
    first: Option<&Provenance>,
    later: Option<&Provenance>,
) {
    if let Some(p) = first {
        set_keys(edits, &p.keys);
    }
    let mut history = previous_history(src);
    history.extend(first.iter().chain(later.iter()).map(|p| p.history.clone()));
    edits.set_metadata(
        "sleep.history",
        gguf::Value::Array(gguf::Array::new(
            gguf::ValueType::String,
            history.into_iter().map(gguf::Value::from).collect(),
        )),
    );
    if let Some(p) = later {
        set_keys(edits, &p.keys);
    }
}

fn set_keys(edits: &mut gguf::Edits, keys: &gguf::Metadata) {
    for (k, v) in keys {
        edits.set_metadata(k, v.clone());
    }
}

/// The history lines of a model patched before: its `sleep.history`, or, for a file from before
/// the history was kept, one line made from its `sleep.*` keys.
fn previous_history(src: &gguf::Header) -> Vec<String> {
    let m = &src.metadata;
    if let Some(gguf::Value::Array(a)) = m.get("sleep.history") {
        return a
            .items
            .iter()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect();
    }
    match (m.get_str("sleep.method"), m.get_str("sleep.prompt_sha256")) {
        (Some(method), Some(sha)) => vec![format!("method={method} prompt_sha256={sha}")],
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_later_stage_appends_its_line_and_replaces_keys() {
        let mut meta = gguf::Metadata::new();
        meta.set(
            "sleep.history",
            gguf::Value::Array(gguf::Array::new(
                gguf::ValueType::String,
                vec![gguf::Value::from("first".to_string())],
            )),
        );
        let src = gguf::Header::new(3, meta, Vec::new()).expect("header");
        let stage = |method: &str, line: &str| {
            let mut keys = gguf::Metadata::new();
            keys.set("sleep.method", method);
            Provenance {
                history: line.into(),
                keys,
            }
        };
        let mut edits = gguf::Edits::new();
        let (patch, bake) = (stage("down", "second"), stage("bake", "third"));
        record(&mut edits, &src, Some(&patch), Some(&bake));
        let set: Vec<(&str, &gguf::Value)> = edits
            .metadata_edits()
            .iter()
            .filter_map(|e| match e {
                gguf::MetadataEdit::Set(k, v) => Some((k.as_str(), v)),
                gguf::MetadataEdit::Remove(_) => None,
            })
            .collect();
        let last = |key: &str| set.iter().rev().find(|(k, _)| *k == key).map(|(_, v)| *v);
        let history: Vec<&str> = match last("sleep.history") {
            Some(gguf::Value::Array(a)) => a.items.iter().filter_map(|v| v.as_str()).collect(),
            other => panic!("no history: {other:?}"),
        };
        assert_eq!(history, ["first", "second", "third"]);
        assert_eq!(last("sleep.method").and_then(|v| v.as_str()), Some("bake"));
    }

    #[test]
    fn the_prompt_is_recorded_as_its_sha256() {
        assert_eq!(
            prompt_sha256("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
