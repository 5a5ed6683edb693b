//! JSON manifests, read as a stream: a `List` of 50,000 EndpointSlices (53 MB) is
//! decoded one item at a time, straight from the file, never held as text or as one
//! tree of values.
//!
//! The input is read twice. The first pass checks the syntax and notes the top
//! level's shape (`kind`, `apiVersion`, whether `items` is an array) without keeping
//! anything, so that a broken file is still skipped whole, as before, and a `List`
//! whose `kind` comes after its `items` (as `kubectl get -o json` writes it) is known
//! to be a list before its first item. The second pass decodes.

use std::fmt;
use std::io::Read;

use serde::Deserialize;
use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

use crate::manifest::{Sink, add_document, add_list_item};
use crate::problem::SourceProblem;

/// The top level of a JSON file, as the first pass found it.
#[derive(Debug, Default)]
enum Top {
    /// An array: each element is a document.
    #[default]
    Array,
    /// An object with a `kind` ending in `List` and an `items` array.
    List { kind: String, api_version: String },
    /// Anything else: decoded whole.
    Other,
}

/// Parses JSON read from `open()` (called once per pass) into `sink`.
pub(crate) fn parse<R: Read>(
    open: &dyn Fn() -> std::io::Result<R>,
    origin: &str,
    sink: &mut Sink<'_>,
) {
    let unreadable = |e: std::io::Error, sink: &mut Sink<'_>| {
        sink.problems.push(SourceProblem::new(
            origin,
            None,
            format!("cannot read file: {e}; file skipped"),
        ));
    };
    let top = match open() {
        Ok(input) => scan(input),
        Err(e) => return unreadable(e, sink),
    };
    let top = match top {
        Ok(top) => top,
        Err(e) => {
            sink.problems.push(SourceProblem::new(
                origin,
                None,
                format!(
                    "invalid JSON at line {} column {}: {e}; file skipped",
                    e.line(),
                    e.column()
                ),
            ));
            return;
        }
    };
    let input = match open() {
        Ok(input) => input,
        Err(e) => return unreadable(e, sink),
    };
    let mut de = serde_json::Deserializer::from_reader(input);
    let decoded = match top {
        Top::Other => Value::deserialize(&mut de)
            .and_then(|v| de.end().map(|()| v))
            .map(|v| add_document(v, origin, None, sink)),
        top => (&mut de).deserialize_any(Decode { top, origin, sink }),
    };
    // The syntax was checked: only a file changed between the passes fails here.
    if let Err(e) = decoded {
        sink.problems.push(SourceProblem::new(
            origin,
            None,
            format!("cannot read file: {e}; the rest of the file skipped"),
        ));
    }
}

/// The first pass: syntax, and the top level's shape.
fn scan(input: impl Read) -> serde_json::Result<Top> {
    let mut de = serde_json::Deserializer::from_reader(input);
    let top = de.deserialize_any(Scan)?;
    de.end()?;
    Ok(top)
}

struct Scan;

impl<'de> Visitor<'de> for Scan {
    type Value = Top;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON document")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Top, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Top::Array)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Top, A::Error> {
        let (mut kind, mut api_version, mut items) = (None, String::new(), false);
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                "kind" => kind = map.next_value::<Value>()?.as_str().map(str::to_owned),
                "apiVersion" => {
                    api_version = map
                        .next_value::<Value>()?
                        .as_str()
                        .unwrap_or_default()
                        .to_owned();
                }
                "items" => items = map.next_value_seed(IsArray)?,
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(match kind {
            Some(kind) if items && kind.ends_with("List") => Top::List { kind, api_version },
            _ => Top::Other,
        })
    }

    // Scalars at the top level are decoded whole (and reported) by the second pass.
    fn visit_bool<E>(self, _: bool) -> Result<Top, E> {
        Ok(Top::Other)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Top, E> {
        Ok(Top::Other)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Top, E> {
        Ok(Top::Other)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Top, E> {
        Ok(Top::Other)
    }
    fn visit_str<E>(self, _: &str) -> Result<Top, E> {
        Ok(Top::Other)
    }
    fn visit_unit<E>(self) -> Result<Top, E> {
        Ok(Top::Other)
    }
}

/// Skips a value, telling whether it was an array.
struct IsArray;

impl<'de> DeserializeSeed<'de> for IsArray {
    type Value = bool;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for IsArray {
    type Value = bool;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any value")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<bool, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(true)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<bool, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(false)
    }

    fn visit_bool<E>(self, _: bool) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_i64<E>(self, _: i64) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_u64<E>(self, _: u64) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_f64<E>(self, _: f64) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_str<E>(self, _: &str) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_unit<E>(self) -> Result<bool, E> {
        Ok(false)
    }
}

/// The second pass over an array or a `List`: each element or item is decoded into a
/// value on its own and handed on.
struct Decode<'a, 'b> {
    top: Top,
    origin: &'a str,
    sink: &'a mut Sink<'b>,
}

impl<'de> Visitor<'de> for Decode<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array or a List")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while let Some(item) = seq.next_element::<Value>()? {
            add_document(item, self.origin, None, self.sink);
        }
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let Top::List { kind, api_version } = &self.top else {
            // Not reached: the first pass sends other objects down the other path.
            while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
            return Ok(());
        };
        while let Some(key) = map.next_key::<String>()? {
            if key == "items" {
                map.next_value_seed(Items {
                    kind,
                    api_version,
                    origin: self.origin,
                    sink: &mut *self.sink,
                })?;
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(())
    }
}

/// The `items` of a `List`, one at a time.
struct Items<'a, 'b> {
    kind: &'a str,
    api_version: &'a str,
    origin: &'a str,
    sink: &'a mut Sink<'b>,
}

impl<'de> DeserializeSeed<'de> for Items<'_, '_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for Items<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array of items")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let mut i = 0;
        while let Some(item) = seq.next_element::<Value>()? {
            add_list_item(
                item,
                i,
                self.kind,
                self.api_version,
                self.origin,
                None,
                self.sink,
            );
            i += 1;
        }
        Ok(())
    }
}
