//! The label and field selector forms the API server accepts and kube-proxy uses:
//! comma-separated `key`, `!key`, `key=value`, `key==value`, `key!=value`.

use serde_json::Value;

#[derive(Clone, Debug, PartialEq, Eq)]
enum Term {
    Exists(String),
    NotExists(String),
    Equals(String, String),
    NotEquals(String, String),
}

/// A parsed selector (empty: everything matches).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Selector(Vec<Term>);

impl Selector {
    pub fn parse(text: &str) -> Self {
        let terms = text
            .split(',')
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(|t| {
                if let Some((k, v)) = t.split_once("!=") {
                    Term::NotEquals(k.into(), v.into())
                } else if let Some((k, v)) = t.split_once("==").or_else(|| t.split_once('=')) {
                    Term::Equals(k.into(), v.into())
                } else if let Some(k) = t.strip_prefix('!') {
                    Term::NotExists(k.into())
                } else {
                    Term::Exists(t.into())
                }
            })
            .collect();
        Self(terms)
    }

    fn matches(&self, lookup: impl Fn(&str) -> Option<String>) -> bool {
        self.0.iter().all(|term| match term {
            Term::Exists(k) => lookup(k).is_some(),
            Term::NotExists(k) => lookup(k).is_none(),
            Term::Equals(k, v) => lookup(k).as_deref() == Some(v.as_str()),
            Term::NotEquals(k, v) => lookup(k).as_deref() != Some(v.as_str()),
        })
    }

    /// Matches `metadata.labels`.
    pub fn matches_labels(&self, object: &Value) -> bool {
        self.matches(|k| object["metadata"]["labels"][k].as_str().map(str::to_owned))
    }

    /// Matches dotted field paths (`metadata.name`, `spec.clusterIP`); a missing field
    /// is the empty string, as the API server's field sets have it.
    pub fn matches_fields(&self, object: &Value) -> bool {
        self.matches(|path| {
            let value = path.split('.').fold(object, |v, seg| &v[seg]);
            Some(value.as_str().unwrap_or_default().to_owned())
        })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn kube_proxy_selectors() {
        let headless = json!({"metadata": {"labels": {"service.kubernetes.io/headless": ""}}});
        let plain = json!({"metadata": {"name": "n1", "labels": {"app": "x"}}, "spec": {"clusterIP": "10.0.0.1"}});
        let none = json!({"metadata": {"name": "n2"}, "spec": {"clusterIP": "None"}});
        let s = Selector::parse("!service.kubernetes.io/headless");
        assert!(!s.matches_labels(&headless));
        assert!(s.matches_labels(&plain));
        let f = Selector::parse("spec.clusterIP!=None");
        assert!(f.matches_fields(&plain));
        assert!(!f.matches_fields(&none));
        assert!(Selector::parse("metadata.name=n1").matches_fields(&plain));
        assert!(!Selector::parse("metadata.name=n1").matches_fields(&none));
        assert!(Selector::parse("").matches_labels(&none));
    }
}
