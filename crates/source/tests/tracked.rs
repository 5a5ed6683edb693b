//! Re-reading a manifest directory file by file ends where a full read would: real
//! files in a temporary directory, real stores compared snapshot to snapshot.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::time::Duration;

use kpr_model::Store;
use kpr_source::TrackedDir;

const NODE: &str = "node-a";

fn service(name: &str, ip: &str, port: u16) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: default}}\n\
         spec: {{clusterIP: {ip}, ports: [{{port: {port}, protocol: TCP}}]}}\n"
    )
}

fn slice(service: &str, suffix: &str, address: &str) -> String {
    format!(
        "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n\
         metadata: {{name: {service}-{suffix}, namespace: default, \
         labels: {{kubernetes.io/service-name: {service}}}}}\naddressType: IPv4\n\
         endpoints: [{{addresses: [{address}], conditions: {{ready: true}}, nodeName: {NODE}}}]\n\
         ports: [{{port: 8080, protocol: TCP}}]\n"
    )
}

fn endpoints(name: &str, address: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Endpoints\nmetadata: {{name: {name}, namespace: default}}\n\
         subsets: [{{addresses: [{{ip: {address}}}], ports: [{{port: 9090}}]}}]\n"
    )
}

fn node(zone: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Node\nmetadata: {{name: {NODE}, \
         labels: {{topology.kubernetes.io/zone: {zone}}}}}\n"
    )
}

/// A file's content from its documents.
fn docs(parts: &[String]) -> String {
    parts.join("---\n")
}

/// Writes `path` the way `n` says: in place, or replaced through a rename.
fn write(path: &Path, text: &str, in_place: bool) {
    if in_place {
        std::fs::write(path, text).unwrap();
    } else {
        let tmp = path.with_file_name(".tmp");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, path).unwrap();
    }
}

/// What a store would program, comparable (the snapshot's Debug form is ordered).
fn state(store: &mut Store) -> String {
    format!("{:?}", store.snapshot())
}

/// A fresh store and source given the whole directory at once.
fn full_read(dir: &Path) -> (String, Vec<String>) {
    let mut store = Store::new(NODE);
    let read = TrackedDir::new(dir.to_path_buf())
        .reload(&mut store)
        .unwrap();
    (state(&mut store), read.problems)
}

/// Lets file times move past the window in which a stamp is not trusted.
fn settle() {
    std::thread::sleep(Duration::from_millis(150));
}

#[test]
fn only_changed_files_are_decoded() {
    let dir = tempfile::tempdir().unwrap();
    let big: Vec<String> = (0..20)
        .flat_map(|i| {
            let name = format!("svc{i}");
            [
                service(&name, &format!("10.96.0.{}", i + 10), 80),
                slice(&name, "a", &format!("10.0.0.{}", i + 10)),
            ]
        })
        .collect();
    write(&dir.path().join("a-big.yaml"), &docs(&big), false);
    write(
        &dir.path().join("b-one.yaml"),
        &service("one", "10.96.1.1", 80),
        false,
    );
    settle();

    let mut store = Store::new(NODE);
    let mut source = TrackedDir::new(dir.path().to_path_buf());
    let first = source.reload(&mut store).unwrap();
    assert!(first.full);
    assert_eq!((first.files, first.decoded), (2, 2));
    assert_eq!(store.service_count(), 21);

    // Nothing changed: nothing decoded.
    let again = source.reload(&mut store).unwrap();
    assert_eq!((again.full, again.decoded), (false, 0));

    // One small file rewritten in place: it alone is decoded.
    let one = docs(&[
        service("one", "10.96.1.1", 81),
        slice("one", "x", "10.0.1.1"),
    ]);
    write(&dir.path().join("b-one.yaml"), &one, true);
    let changed = source.reload(&mut store).unwrap();
    assert_eq!((changed.full, changed.decoded), (false, 1));
    assert_eq!(state(&mut store), full_read(dir.path()).0);

    // A new file, then the file removed: its Service comes and goes.
    write(
        &dir.path().join("c-new.yaml"),
        &service("new", "10.96.2.1", 80),
        false,
    );
    settle();
    let added = source.reload(&mut store).unwrap();
    assert_eq!((added.full, added.decoded, added.files), (false, 1, 3));
    assert_eq!(store.service_count(), 22);
    std::fs::remove_file(dir.path().join("c-new.yaml")).unwrap();
    let removed = source.reload(&mut store).unwrap();
    assert_eq!(
        (removed.full, removed.decoded, removed.files),
        (false, 0, 2)
    );
    assert_eq!(store.service_count(), 21);
    assert_eq!(state(&mut store), full_read(dir.path()).0);
}

#[test]
fn changes_reaching_beyond_a_file_read_everything() {
    let dir = tempfile::tempdir().unwrap();
    write(
        &dir.path().join("a.yaml"),
        &service("a", "10.96.0.1", 80),
        false,
    );
    write(&dir.path().join("node.yaml"), &node("z1"), false);
    settle();
    let mut store = Store::new(NODE);
    let mut source = TrackedDir::new(dir.path().to_path_buf());
    source.reload(&mut store).unwrap();

    // The Node's file changed: everything is read (the node's zone affects all).
    write(&dir.path().join("node.yaml"), &node("z2"), false);
    assert!(source.reload(&mut store).unwrap().full);
    settle();

    // An object also defined in another file: the later file wins, read whole.
    write(
        &dir.path().join("b.yaml"),
        &service("a", "10.96.0.2", 80),
        false,
    );
    let dup = source.reload(&mut store).unwrap();
    assert!(dup.full);
    assert!(
        dup.problems
            .iter()
            .any(|p| p.contains("is also defined in")),
        "{:?}",
        dup.problems
    );
    assert_eq!(state(&mut store), full_read(dir.path()).0);
    settle();

    // Once the duplicate is gone, its former files still read everything once.
    std::fs::remove_file(dir.path().join("b.yaml")).unwrap();
    assert!(source.reload(&mut store).unwrap().full);
    settle();
    assert!(!source.reload(&mut store).unwrap().full);

    // A Service needing a ClusterIP: allocation avoids every other Service, so
    // every re-read is whole while one is allocated.
    let alloc = "apiVersion: v1\nkind: Service\nmetadata: {name: c}\n\
                 spec: {ports: [{port: 80}]}\n";
    write(&dir.path().join("c.yaml"), alloc, false);
    let read = source.reload(&mut store).unwrap();
    assert!(read.full && !read.allocations.is_empty(), "{read:?}");
    settle();
    assert!(source.reload(&mut store).unwrap().full);
}

/// A small deterministic generator (no test depends on a random seed).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

#[test]
fn random_edits_end_where_a_full_read_does() {
    let dir = tempfile::tempdir().unwrap();
    let files = ["a.yaml", "b.yaml", "c.yml", "d.yaml"];
    let mut rng = Lcg(7);
    let mut store = Store::new(NODE);
    let mut source = TrackedDir::new(dir.path().to_path_buf());
    // The reference: a store given the whole directory on every round, as the
    // source did before it tracked files (history matters: a Node that was there
    // and is gone is "deleted", not "never seen").
    let mut reference = Store::new(NODE);
    let (mut partial, mut full) = (0, 0);
    for round in 0..60 {
        // Rewrite one or two files with a random set of objects.
        for _ in 0..=rng.next(2) {
            let file = dir.path().join(files[rng.next(4) as usize]);
            if rng.next(6) == 0 {
                let _ = std::fs::remove_file(&file);
                continue;
            }
            let mut parts = Vec::new();
            for i in 0..8 {
                if rng.next(3) != 0 {
                    continue;
                }
                let name = format!("s{i}");
                let v = rng.next(3);
                parts.push(match rng.next(5) {
                    0 | 1 => service(&name, &format!("10.96.0.{}", 10 + i), 80 + v as u16),
                    2 | 3 => slice(&name, "p", &format!("10.0.{v}.{i}")),
                    _ => endpoints(&name, &format!("10.1.{v}.{i}")),
                });
            }
            match rng.next(12) {
                0 => parts.push(node(&format!("z{}", rng.next(2)))),
                1 => parts.push("kind: Service\nmetadata: {name: [bad\n".to_string()),
                2 => parts.push(service("bad", "10.96.0.300", 80)),
                _ => {}
            }
            write(&file, &docs(&parts), rng.next(2) == 0);
        }
        if rng.next(3) == 0 {
            settle();
        }
        let read = source.reload(&mut store).unwrap();
        if read.full {
            full += 1;
        } else {
            partial += 1;
        }
        let set = kpr_source::load_dir(dir.path()).unwrap();
        reference.replace_all_owned(set.objects);
        assert_eq!(state(&mut store), state(&mut reference), "round {round}");
        let (_, problems) = full_read(dir.path());
        assert_eq!(read.problems, problems, "round {round}");
    }
    // Both paths were exercised.
    assert!(partial >= 10 && full >= 5, "partial {partial}, full {full}");
}
