//! Tests' objects from YAML manifests (Services and EndpointSlices only).

use kpr_model::Objects;

/// The Services and EndpointSlices of `yaml`, which must parse without problems.
pub(crate) fn from_yaml(yaml: &str) -> Objects {
    let parsed = kpr_source::parse_manifest(yaml, "test.yaml");
    assert!(parsed.problems.is_empty(), "{:?}", parsed.problems);
    let mut objects = Objects::default();
    for o in parsed.objects {
        match o.object {
            kpr_source::Object::Service(s) => objects.services.push(*s),
            kpr_source::Object::EndpointSlice(s) => objects.slices.push(*s),
            _ => {}
        }
    }
    objects
}
