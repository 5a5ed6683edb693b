//! Parsing manifest text (multi-document YAML or JSON, `List` kinds) into the objects
//! kube-proxy-rs reads: Service, EndpointSlice, v1 Endpoints, Node, ServiceCIDR.
//!
//! Each YAML document is parsed on its own, so a syntax error costs only that
//! document. Objects are decoded strictly, like `kubectl apply` with server-side field
//! validation: an unknown or mistyped field rejects the object with a message naming
//! the field path. Kinds this proxy does not use (Deployments next to their Service,
//! say) are ignored.

use k8s_openapi::api::core::v1 as core;
use k8s_openapi::api::discovery::v1 as discovery;
use k8s_openapi::api::networking::v1 as networking;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::problem::SourceProblem;

/// One object read from a manifest, with where it came from.
#[derive(Clone, Debug)]
pub struct Located<T> {
    /// The file it was read from.
    pub file: String,
    /// The 1-based YAML document number (None for JSON).
    pub document: Option<usize>,
    /// The object.
    pub object: T,
}

/// A decoded object of a kind this proxy reads.
#[derive(Clone, Debug)]
pub enum Object {
    /// `v1/Service`.
    Service(Box<core::Service>),
    /// `discovery.k8s.io/v1/EndpointSlice`.
    EndpointSlice(Box<discovery::EndpointSlice>),
    /// `v1/Endpoints`.
    Endpoints(Box<core::Endpoints>),
    /// `v1/Node`.
    Node(Box<core::Node>),
    /// `networking.k8s.io/v1/ServiceCIDR`.
    ServiceCidr(Box<networking::ServiceCIDR>),
}

/// Everything read from one file.
#[derive(Debug, Default)]
pub struct Parsed {
    /// Decoded objects, in file order.
    pub objects: Vec<Located<Object>>,
    /// Problems; the parts they name were skipped.
    pub problems: Vec<SourceProblem>,
    /// Kinds that were present but are not used by the proxy.
    pub ignored_kinds: Vec<String>,
}

/// Parses the text of one manifest file. `origin` names the file in messages.
/// JSON is recognised by a leading `{` or `[`; anything else is YAML.
pub fn parse_manifest(text: &str, origin: &str) -> Parsed {
    let mut objects = Vec::new();
    let mut parsed = parse_manifest_each(text, origin, &mut |o| objects.push(o));
    parsed.objects = objects;
    parsed
}

/// Like [`parse_manifest`], handing each object to `on_object` as soon as it is
/// decoded instead of collecting them (the returned [`Parsed::objects`] is empty): a
/// file of 50,000 EndpointSlices is never held decoded whole.
pub fn parse_manifest_each(
    text: &str,
    origin: &str,
    on_object: &mut dyn FnMut(Located<Object>),
) -> Parsed {
    let mut parsed = Sink {
        on_object,
        problems: Vec::new(),
        ignored_kinds: Vec::new(),
    };
    parse_into(text, origin, &mut parsed);
    Parsed {
        objects: Vec::new(),
        problems: parsed.problems,
        ignored_kinds: parsed.ignored_kinds,
    }
}

/// Where the objects and problems of one file go.
pub(crate) struct Sink<'a> {
    pub(crate) on_object: &'a mut dyn FnMut(Located<Object>),
    pub(crate) problems: Vec<SourceProblem>,
    pub(crate) ignored_kinds: Vec<String>,
}

/// True if the text starts (after blanks) like JSON: `{` or `[`. Anything else is
/// read as YAML.
pub fn is_json(start: &[u8]) -> bool {
    start
        .iter()
        .find(|b| !b.is_ascii_whitespace())
        .is_some_and(|b| *b == b'{' || *b == b'[')
}

/// Like [`parse_manifest_each`], for a JSON file read straight from disk (twice:
/// see [`crate::json`]) instead of from text in memory.
pub fn parse_json_file_each(
    path: &std::path::Path,
    origin: &str,
    on_object: &mut dyn FnMut(Located<Object>),
) -> Parsed {
    let mut parsed = Sink {
        on_object,
        problems: Vec::new(),
        ignored_kinds: Vec::new(),
    };
    let open = || std::fs::File::open(path).map(|f| std::io::BufReader::with_capacity(1 << 16, f));
    crate::json::parse(&open, origin, &mut parsed);
    Parsed {
        objects: Vec::new(),
        problems: parsed.problems,
        ignored_kinds: parsed.ignored_kinds,
    }
}

fn parse_into(text: &str, origin: &str, parsed: &mut Sink<'_>) {
    if is_json(text.as_bytes()) {
        return crate::json::parse(&|| Ok(text.as_bytes()), origin, parsed);
    }
    for (index, (first_line, doc)) in split_yaml_documents(text).into_iter().enumerate() {
        let number = index + 1;
        let options = serde_saphyr::options! { strict_booleans: true };
        match serde_saphyr::from_str_with_options::<Option<Value>>(&doc, options) {
            Ok(None) | Ok(Some(Value::Null)) => {}
            Ok(Some(value)) => add_document(value, origin, Some(number), parsed),
            Err(e) => {
                let mut msg = e.to_string();
                // Report lines of the file, not of the document.
                msg = first_line_note(&msg, first_line);
                parsed.problems.push(SourceProblem::new(
                    origin,
                    Some(number),
                    format!("invalid YAML: {msg}; document skipped"),
                ))
            }
        }
    }
}

fn first_line_note(msg: &str, first_line: usize) -> String {
    let one_line = msg.lines().next().unwrap_or_default().trim().to_string();
    if first_line > 1 {
        format!("{one_line} (document starts at line {first_line})")
    } else {
        one_line
    }
}

/// Splits YAML text at `---` document markers, keeping each document's first line
/// number (1-based) for messages.
fn split_yaml_documents(text: &str) -> Vec<(usize, String)> {
    let mut docs = Vec::new();
    let mut current = String::new();
    let mut start = 1;
    for (i, line) in text.lines().enumerate() {
        let is_marker = line == "---" || line.starts_with("--- ") || line.starts_with("---\t");
        if is_marker {
            if !current.trim().is_empty() {
                docs.push((start, std::mem::take(&mut current)));
            }
            current.clear();
            start = i + 2;
            // Content after the marker on the same line belongs to the new document.
            if let Some(rest) = line.strip_prefix("---")
                && !rest.trim().is_empty()
                && !rest.trim_start().starts_with('#')
            {
                current.push_str(rest.trim_start());
                current.push('\n');
                start = i + 1;
            }
            continue;
        }
        if line == "..." {
            continue;
        }
        current.push_str(line);
        current.push('\n');
    }
    if !current.trim().is_empty() {
        docs.push((start, current));
    }
    docs
}

fn str_field<'a>(value: &'a Value, key: &str) -> Option<&'a str> {
    value.get(key).and_then(Value::as_str)
}

fn describe(value: &Value) -> String {
    let kind = str_field(value, "kind").unwrap_or("object");
    let meta = value.get("metadata");
    let name = meta
        .and_then(|m| str_field(m, "name"))
        .unwrap_or("<unnamed>");
    match meta.and_then(|m| str_field(m, "namespace")) {
        Some(ns) => format!("{kind} {ns}/{name}"),
        None => format!("{kind} {name}"),
    }
}

pub(crate) fn add_document(
    mut value: Value,
    origin: &str,
    document: Option<usize>,
    parsed: &mut Sink<'_>,
) {
    let problem = |msg: String| SourceProblem::new(origin, document, msg);
    if !value.is_object() {
        parsed
            .problems
            .push(problem("not a Kubernetes object (expected a mapping with apiVersion and kind); document skipped".into()));
        return;
    }
    let Some(kind) = str_field(&value, "kind").map(str::to_owned) else {
        parsed.problems.push(problem(format!(
            "{}: missing field \"kind\"; skipped",
            describe(&value)
        )));
        return;
    };
    let api_version = str_field(&value, "apiVersion")
        .unwrap_or_default()
        .to_owned();
    if kind == "List" || kind.ends_with("List") {
        // Taken, not cloned: a List file is held once while its items are decoded.
        let Some(Value::Array(items)) = value.get_mut("items").map(Value::take) else {
            parsed.problems.push(problem(format!(
                "{kind}: missing or invalid field \"items\"; skipped"
            )));
            return;
        };
        for (i, item) in items.into_iter().enumerate() {
            add_list_item(item, i, &kind, &api_version, origin, document, parsed);
        }
        return;
    }

    let expected_api = match kind.as_str() {
        "Service" | "Endpoints" | "Node" => "v1",
        "EndpointSlice" => "discovery.k8s.io/v1",
        "ServiceCIDR" => "networking.k8s.io/v1",
        _ => {
            parsed.ignored_kinds.push(kind);
            return;
        }
    };
    let api_ok = api_version == expected_api
        || (kind == "ServiceCIDR" && api_version == "networking.k8s.io/v1beta1");
    if !api_ok {
        parsed.problems.push(problem(format!(
            "{}: unsupported apiVersion {api_version:?} (expected {expected_api:?}); skipped",
            describe(&value)
        )));
        return;
    }
    let what = describe(&value);
    let decoded = match kind.as_str() {
        "Service" => decode::<core::Service>(value).map(|o| Object::Service(Box::new(o))),
        "Endpoints" => decode::<core::Endpoints>(value).map(|o| Object::Endpoints(Box::new(o))),
        "Node" => decode::<core::Node>(value).map(|o| Object::Node(Box::new(o))),
        "EndpointSlice" => {
            decode::<discovery::EndpointSlice>(value).map(|o| Object::EndpointSlice(Box::new(o)))
        }
        _ => {
            let mut value = value;
            // v1beta1 has the same shape.
            value["apiVersion"] = Value::String("networking.k8s.io/v1".into());
            decode::<networking::ServiceCIDR>(value).map(|o| Object::ServiceCidr(Box::new(o)))
        }
    };
    match decoded {
        Ok(object) => (parsed.on_object)(Located {
            file: origin.to_string(),
            document,
            object,
        }),
        Err(reason) => parsed
            .problems
            .push(problem(format!("{what}: {reason}; skipped"))),
    }
}

/// Item `i` of a list of kind `list_kind` (`List`, `ServiceList`, ...).
pub(crate) fn add_list_item(
    mut item: Value,
    i: usize,
    list_kind: &str,
    api_version: &str,
    origin: &str,
    document: Option<usize>,
    parsed: &mut Sink<'_>,
) {
    // Typed lists (ServiceList, ...) may omit kind/apiVersion on items.
    let item_kind = list_kind.strip_suffix("List").filter(|k| !k.is_empty());
    if let (Some(k), Some(obj)) = (item_kind, item.as_object_mut()) {
        obj.entry("kind")
            .or_insert_with(|| Value::String(k.to_string()));
        if !api_version.is_empty() {
            obj.entry("apiVersion")
                .or_insert_with(|| Value::String(api_version.to_string()));
        }
    }
    let before = parsed.problems.len();
    add_document(item, origin, document, parsed);
    for p in &mut parsed.problems[before..] {
        p.message = format!("{list_kind} items[{i}]: {}", p.message);
    }
}

/// Decodes a JSON value strictly: type errors and unknown fields name the field path.
fn decode<T: DeserializeOwned>(value: Value) -> Result<T, String> {
    let mut unknown: Vec<String> = Vec::new();
    let mut on_unknown =
        |path: serde_ignored::Path<'_>| unknown.push(clean_path(&path.to_string()));
    let result: Result<T, _> = {
        let de = serde_ignored::Deserializer::new(value, &mut on_unknown);
        serde_path_to_error::deserialize(de)
    };
    match result {
        Err(e) => {
            let path = clean_path(&e.path().to_string());
            let inner = e.into_inner().to_string();
            if path.is_empty() || path == "." {
                Err(inner)
            } else {
                Err(format!("{path}: {inner}"))
            }
        }
        Ok(_) if !unknown.is_empty() => Err(format!("unknown field {:?}", unknown.join(", "))),
        Ok(object) => Ok(object),
    }
}

/// serde_ignored marks `Option` levels with `?` (dropped) and list indexes as plain
/// segments (written `[n]`, as in Kubernetes field paths).
fn clean_path(path: &str) -> String {
    let mut out = String::new();
    for seg in path.split('.').filter(|seg| *seg != "?") {
        if seg.bytes().all(|b| b.is_ascii_digit()) && !seg.is_empty() {
            out.push_str(&format!("[{seg}]"));
        } else {
            if !out.is_empty() {
                out.push('.');
            }
            out.push_str(seg);
        }
    }
    out
}

#[cfg(test)]
#[path = "manifest_tests.rs"]
mod tests;
