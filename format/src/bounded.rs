//! Arrays with a length limit, for reading files from anywhere.
//!
//! A hostile or corrupt file can claim anything. Every array in the schema is a [`List`] with
//! its own cap, and all arrays of one document together draw from one element budget, so a
//! small file cannot expand into gigabytes of memory (each element costs at least 8 bytes in
//! memory but can take 2 in JSON) and an absurd array is refused with a message naming it.

use serde::de::{Deserializer, SeqAccess, Visitor};
use serde::{Deserialize, Serialize, Serializer};
use std::cell::Cell;
use std::fmt;
use std::marker::PhantomData;
use std::ops::{Deref, DerefMut};

/// All array elements of one document together.
pub const MAX_ELEMENTS_PER_DOCUMENT: usize = 64_000_000;

thread_local! {
    static BUDGET: Cell<usize> = const { Cell::new(MAX_ELEMENTS_PER_DOCUMENT) };
}

/// Resets the element budget before parsing one document (parsing happens on one thread).
pub fn reset_budget() {
    BUDGET.with(|b| b.set(MAX_ELEMENTS_PER_DOCUMENT));
}

/// A `Vec` that refuses to deserialize more than `N` elements.
#[derive(Clone, PartialEq, Eq)]
pub struct List<T, const N: usize>(pub Vec<T>);

impl<T: fmt::Debug, const N: usize> fmt::Debug for List<T, N> {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl<T, const N: usize> Default for List<T, N> {
    fn default() -> Self {
        List(Vec::new())
    }
}

impl<T, const N: usize> Deref for List<T, N> {
    type Target = Vec<T>;
    fn deref(&self) -> &Vec<T> {
        &self.0
    }
}

impl<T, const N: usize> DerefMut for List<T, N> {
    fn deref_mut(&mut self) -> &mut Vec<T> {
        &mut self.0
    }
}

impl<T, const N: usize> From<Vec<T>> for List<T, N> {
    fn from(v: Vec<T>) -> Self {
        List(v)
    }
}

impl<T, const N: usize> FromIterator<T> for List<T, N> {
    fn from_iter<I: IntoIterator<Item = T>>(iter: I) -> Self {
        List(iter.into_iter().collect())
    }
}

impl<T: Serialize, const N: usize> Serialize for List<T, N> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

impl<'de, T: Deserialize<'de>, const N: usize> Deserialize<'de> for List<T, N> {
    fn deserialize<D: Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        struct V<T, const N: usize>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>, const N: usize> Visitor<'de> for V<T, N> {
            type Value = List<T, N>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                write!(f, "an array of at most {N} elements")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                // Never trust a size hint beyond a small amount.
                let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1024));
                while let Some(x) = seq.next_element()? {
                    if out.len() >= N {
                        return Err(serde::de::Error::custom(format!(
                            "array longer than {N} elements (absurd size)"
                        )));
                    }
                    let left = BUDGET.with(|b| {
                        let v = b.get().saturating_sub(1);
                        b.set(v);
                        v
                    });
                    if left == 0 {
                        return Err(serde::de::Error::custom(format!(
                            "more than {MAX_ELEMENTS_PER_DOCUMENT} array elements in one \
                             document (absurd size)"
                        )));
                    }
                    out.push(x);
                }
                Ok(List(out))
            }
        }
        de.deserialize_seq(V::<T, N>(PhantomData))
    }
}
