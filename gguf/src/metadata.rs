//! The key/value section of a GGUF file, in file order.

use std::sync::Arc;

use crate::value::Value;

/// Metadata key/value pairs in file order. Keys are unique.
///
/// Values are shared between clones (a tokenizer vocabulary can be hundreds of thousands of
/// strings), so cloning metadata to edit a few keys costs nothing per value.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Metadata(Vec<(String, Arc<Value>)>);

impl Metadata {
    /// Empty metadata.
    pub fn new() -> Self {
        Metadata(Vec::new())
    }

    /// The value of `key`.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| &**v)
    }

    /// The value of `key` if it is a UTF-8 string.
    pub fn get_str(&self, key: &str) -> Option<&str> {
        self.get(key).and_then(Value::as_str)
    }

    /// The value of `key` if it is a non-negative integer of any width.
    pub fn get_u64(&self, key: &str) -> Option<u64> {
        self.get(key).and_then(Value::as_u64)
    }

    /// The value of `key` if it is an `f32` or `f64`.
    pub fn get_f64(&self, key: &str) -> Option<f64> {
        self.get(key).and_then(Value::as_f64)
    }

    /// Whether `key` is present.
    pub fn contains_key(&self, key: &str) -> bool {
        self.get(key).is_some()
    }

    /// Sets `key`: replaces the value in place (keeping the key's position) or appends it.
    /// Returns the previous value.
    pub fn set(&mut self, key: impl Into<String>, value: impl Into<Value>) -> Option<Value> {
        let key = key.into();
        let value = Arc::new(value.into());
        match self.0.iter_mut().find(|(k, _)| *k == key) {
            Some((_, v)) => Some(Arc::unwrap_or_clone(std::mem::replace(v, value))),
            None => {
                self.0.push((key, value));
                None
            }
        }
    }

    /// Removes `key`, returning its value.
    pub fn remove(&mut self, key: &str) -> Option<Value> {
        let i = self.0.iter().position(|(k, _)| k == key)?;
        Some(Arc::unwrap_or_clone(self.0.remove(i).1))
    }

    /// Pairs in file order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (&str, &Value)> {
        self.0.iter().map(|(k, v)| (k.as_str(), &**v))
    }

    /// Keys in file order.
    pub fn keys(&self) -> impl ExactSizeIterator<Item = &str> {
        self.0.iter().map(|(k, _)| k.as_str())
    }

    /// Number of pairs.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are no pairs.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Appends without checking for an existing key (the reader checks uniqueness itself).
    pub(crate) fn push_unchecked(&mut self, key: String, value: Value) {
        self.0.push((key, Arc::new(value)));
    }

    pub(crate) fn with_capacity(n: usize) -> Self {
        Metadata(Vec::with_capacity(n))
    }
}

impl<'a> IntoIterator for &'a Metadata {
    type Item = (&'a str, &'a Value);
    type IntoIter = Box<dyn Iterator<Item = (&'a str, &'a Value)> + 'a>;

    fn into_iter(self) -> Self::IntoIter {
        Box::new(self.iter())
    }
}

impl<K: Into<String>, V: Into<Value>> FromIterator<(K, V)> for Metadata {
    /// Collects pairs with [`Metadata::set`], so a repeated key keeps its first position and
    /// its last value.
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        let mut m = Metadata::new();
        for (k, v) in iter {
            m.set(k, v);
        }
        m
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_is_kept_by_set_and_remove() {
        let mut m: Metadata = [("a", 1u32), ("b", 2), ("c", 3)].into_iter().collect();
        assert_eq!(m.set("b", Value::from("two")), Some(Value::U32(2)));
        m.set("d", 4u64);
        assert_eq!(m.remove("a"), Some(Value::U32(1)));
        assert_eq!(m.remove("zz"), None);
        assert_eq!(m.keys().collect::<Vec<_>>(), ["b", "c", "d"]);
        assert_eq!(m.get_str("b"), Some("two"));
        assert_eq!(m.get_u64("d"), Some(4));
        assert_eq!(m.get_u64("b"), None);
        assert_eq!(m.len(), 3);
    }
}
