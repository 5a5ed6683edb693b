use super::*;

fn messages(p: &Parsed) -> Vec<String> {
    p.problems.iter().map(ToString::to_string).collect()
}

/// Multi-document YAML with a List and kinds we do not use.
#[test]
fn yaml_documents_and_lists() {
    let text = r#"
apiVersion: v1
kind: Service
metadata: {name: a}
spec: {clusterIP: 10.0.0.1, ports: [{port: 80}]}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
---
apiVersion: v1
kind: List
items:
- apiVersion: v1
  kind: Service
  metadata: {name: b}
  spec: {clusterIP: 10.0.0.2, ports: [{port: 80}]}
- apiVersion: discovery.k8s.io/v1
  kind: EndpointSlice
  metadata: {name: b-1, labels: {kubernetes.io/service-name: b}}
  addressType: IPv4
  endpoints: [{addresses: [10.1.0.1]}]
...
"#;
    let p = parse_manifest(text, "m.yaml");
    assert!(p.problems.is_empty(), "{:?}", messages(&p));
    assert_eq!(p.objects.len(), 3);
    assert_eq!(p.ignored_kinds, vec!["Deployment"]);
}

/// JSON files, including typed lists whose items omit kind.
#[test]
fn json_typed_list() {
    let text = r#"{"apiVersion": "v1", "kind": "ServiceList", "items": [
        {"metadata": {"name": "a"}, "spec": {"clusterIP": "10.0.0.1", "ports": [{"port": 80}]}}]}"#;
    let p = parse_manifest(text, "m.json");
    assert!(p.problems.is_empty(), "{:?}", messages(&p));
    assert!(matches!(p.objects[0].object, Object::Service(_)));
}

/// Each broken document is reported with file, document, object and field, and the
/// valid documents around it are kept.
#[test]
fn broken_documents_are_isolated() {
    let text = r#"apiVersion: v1
kind: Service
metadata: {namespace: prod, name: typo}
spec: {clusterIP: 10.0.0.1, ports: [{port: 80}], externalTraficPolicy: Local}
---
apiVersion: v1
kind: Service
metadata: {namespace: prod, name: wrongtype}
spec: {clusterIP: 10.0.0.2, ports: [{port: "eighty"}]}
---
apiVersion: v1
kind: Service
metadata: {name: ok}
spec: {clusterIP: 10.0.0.3, ports: [{port: 80}]}
---
kind: Service
metadata: {name: broken
---
apiVersion: v2
kind: Service
metadata: {name: badversion}
---
apiVersion: v1
metadata: {name: nokind}
"#;
    let p = parse_manifest(text, "dir/svc.yaml");
    let msgs = messages(&p);
    assert_eq!(p.objects.len(), 1, "{msgs:?}");
    assert_eq!(msgs.len(), 5, "{msgs:?}");
    assert_eq!(
        msgs[0],
        "dir/svc.yaml: document 1: Service prod/typo: unknown field \"spec.externalTraficPolicy\"; skipped"
    );
    assert!(msgs[1].starts_with("dir/svc.yaml: document 2: Service prod/wrongtype: spec.ports[0].port: invalid type: string \"eighty\""), "{}", msgs[1]);
    assert!(
        msgs[2].starts_with("dir/svc.yaml: document 4: invalid YAML:"),
        "{}",
        msgs[2]
    );
    assert!(
        msgs[2].contains("document starts at line 16"),
        "{}",
        msgs[2]
    );
    assert_eq!(
        msgs[3],
        "dir/svc.yaml: document 5: Service badversion: unsupported apiVersion \"v2\" (expected \"v1\"); skipped"
    );
    assert_eq!(
        msgs[4],
        "dir/svc.yaml: document 6: object nokind: missing field \"kind\"; skipped"
    );
}

/// YAML 1.1 words like `no` and `on` stay strings where a string is expected.
#[test]
fn strict_booleans() {
    let text = "apiVersion: v1\nkind: Service\nmetadata: {name: \"no\", namespace: on}\nspec: {clusterIP: 10.0.0.1, ports: [{port: 80, name: yes}]}\n";
    let p = parse_manifest(text, "m.yaml");
    assert!(p.problems.is_empty(), "{:?}", messages(&p));
    let Object::Service(s) = &p.objects[0].object else {
        panic!()
    };
    assert_eq!(s.metadata.namespace.as_deref(), Some("on"));
    assert_eq!(
        s.spec.as_ref().unwrap().ports.as_ref().unwrap()[0]
            .name
            .as_deref(),
        Some("yes")
    );
}

/// Random input never panics.
#[test]
fn garbage_does_not_panic() {
    for text in [
        "",
        "---",
        "{",
        "[1,2",
        "- a\n- b",
        "kind: List\nitems: 3",
        "\u{0}\u{1}",
        "a: [",
        "apiVersion: v1\nkind: Service\nspec: 7",
    ] {
        let _ = parse_manifest(text, "g");
    }
}

/// A JSON List is decoded item by item (never as one tree); a broken item is
/// reported with its index and the others are kept, as in YAML; a top-level array
/// works the same way; a List whose items are not an array is reported.
#[test]
fn json_list_items_one_by_one() {
    let text = r#"{"apiVersion": "v1", "kind": "List", "metadata": {}, "items": [
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "a"},
         "spec": {"clusterIP": "10.0.0.1", "ports": [{"port": 80}]}},
        {"apiVersion": "v1", "kind": "Service", "metadata": {"namespace": "x", "name": "b"},
         "spec": {"clusterIP": "10.0.0.2", "ports": [{"port": "eighty"}]}},
        7,
        {"apiVersion": "v1", "kind": "ServiceList", "items": [
            {"metadata": {"name": "c"}, "spec": {"clusterIP": "10.0.0.3", "ports": [{"port": 80}]}}]}]}"#;
    let p = parse_manifest(text, "m.json");
    let names: Vec<_> = p
        .objects
        .iter()
        .map(|o| match &o.object {
            Object::Service(s) => s.metadata.name.clone().unwrap_or_default(),
            _ => String::new(),
        })
        .collect();
    assert_eq!(names, ["a", "c"]);
    let m = messages(&p);
    assert_eq!(m.len(), 2, "{m:?}");
    assert!(
        m[0].contains("List items[1]: Service x/b: spec.ports[0].port: invalid type"),
        "{m:?}"
    );
    assert!(
        m[1].contains("List items[2]: not a Kubernetes object"),
        "{m:?}"
    );

    let array = r#"[{"apiVersion": "v1", "kind": "Service", "metadata": {"name": "a"},
        "spec": {"clusterIP": "10.0.0.1", "ports": [{"port": 80}]}}, {"kind": "Service"}]"#;
    let p = parse_manifest(array, "a.json");
    assert_eq!(p.objects.len(), 1);
    assert_eq!(p.problems.len(), 1, "{:?}", messages(&p));

    let p = parse_manifest(
        r#"{"apiVersion": "v1", "kind": "List", "items": 3}"#,
        "b.json",
    );
    assert!(p.objects.is_empty());
    assert!(
        messages(&p)[0].contains("List: missing or invalid field \"items\""),
        "{:?}",
        messages(&p)
    );
    let p = parse_manifest(r#"{"kind": "List", "items": [1,"#, "c.json");
    assert!(
        messages(&p)[0].contains("invalid JSON at line 1"),
        "{:?}",
        messages(&p)
    );
}

/// `kubectl get -o json` writes `items` before `kind`: the list is still known as one
/// (a typed list's items get its kind). A file is read from disk as a stream with the
/// same results, and a file with a syntax error anywhere gives nothing but the error,
/// even when valid items come first.
#[test]
fn json_files_stream_with_kind_after_items() {
    let text = r#"{"apiVersion": "v1", "items": [
        {"metadata": {"name": "a"}, "spec": {"clusterIP": "10.0.0.1", "ports": [{"port": 80}]}},
        {"metadata": {"name": "b"}, "spec": {"clusterIP": "10.0.0.2", "ports": [{"port": 80}]}}],
        "kind": "ServiceList", "metadata": {"resourceVersion": ""}}"#;
    let p = parse_manifest(text, "m.json");
    assert!(p.problems.is_empty(), "{:?}", messages(&p));
    assert_eq!(p.objects.len(), 2);

    let dir = std::env::temp_dir().join(format!("kpr-json-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("services.json");
    std::fs::write(&path, text).unwrap();
    let mut seen = Vec::new();
    let p = parse_json_file_each(&path, "services.json", &mut |o| seen.push(o));
    assert!(
        p.problems.is_empty() && p.objects.is_empty(),
        "{:?}",
        messages(&p)
    );
    assert_eq!(seen.len(), 2);

    let broken = text.replace(
        "\"kind\": \"ServiceList\"",
        "\"kind\": \"ServiceList\" oops",
    );
    std::fs::write(&path, &broken).unwrap();
    let mut seen = Vec::new();
    let p = parse_json_file_each(&path, "services.json", &mut |o| seen.push(o));
    assert!(seen.is_empty(), "nothing of a broken file is used");
    assert!(
        messages(&p)[0].contains("invalid JSON at line 4")
            && messages(&p)[0].contains("file skipped"),
        "{:?}",
        messages(&p)
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
