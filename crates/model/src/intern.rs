//! Shared copies of the strings many endpoints repeat (node names): one allocation per
//! distinct name instead of one per endpoint. At 50,000 Services of 10 endpoints the
//! half-million `nodeName`s name a few thousand nodes.
//!
//! Written here because the job is twenty lines on `std` and none of the interning
//! crates frees names no longer used; this one drops them when the table has doubled.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

struct Table {
    names: HashSet<Arc<str>>,
    /// Size at which names nobody else holds any more are dropped.
    sweep_at: usize,
}

static TABLE: Mutex<Option<Table>> = Mutex::new(None);

/// The shared copy of `name`.
pub fn intern(name: &str) -> Arc<str> {
    let Ok(mut guard) = TABLE.lock() else {
        // A panic elsewhere poisoned the table: an unshared copy is still correct.
        return Arc::from(name);
    };
    let table = guard.get_or_insert_with(|| Table {
        names: HashSet::new(),
        sweep_at: 1024,
    });
    if let Some(shared) = table.names.get(name) {
        return Arc::clone(shared);
    }
    if table.names.len() >= table.sweep_at {
        table.names.retain(|n| Arc::strong_count(n) > 1);
        table.sweep_at = (table.names.len() * 2).max(1024);
    }
    let shared: Arc<str> = Arc::from(name);
    table.names.insert(Arc::clone(&shared));
    shared
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_copy_per_name_and_unused_names_go() {
        let a = intern("intern-test-node-a");
        let b = intern("intern-test-node-a");
        assert!(Arc::ptr_eq(&a, &b));
        assert_eq!(&*a, "intern-test-node-a");
        drop((a, b));
        // Fill past a sweep: the unused name is dropped, so a new copy is made.
        let kept: Vec<_> = (0..3000)
            .map(|i| intern(&format!("intern-test-{i}")))
            .collect();
        let again = intern("intern-test-node-a");
        assert_eq!(Arc::strong_count(&again), 2, "table and this copy only");
        assert!(Arc::ptr_eq(&kept[7], &intern("intern-test-7")));
    }
}
