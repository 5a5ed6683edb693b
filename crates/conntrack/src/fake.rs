//! An in-memory conntrack table with the kernel's delete semantics, for tests of
//! code that runs cleanups (here and, with feature `fake`, in other crates).
//! Like upstream's `pkg/proxy/conntrack/fake.go`, it counts requests.

use kpr_model::{IpFamily, Protocol};

use crate::entry::Entry;
use crate::error::ConntrackError;
use crate::netlink::{ConntrackTable, Dump};

/// An in-memory conntrack table.
#[derive(Clone, Debug, Default)]
pub struct FakeConntrack {
    /// The entries, in insertion order.
    pub entries: Vec<Entry>,
    /// Dump requests served.
    pub dumps: usize,
    /// Delete requests received (one per entry asked for, found or not).
    pub delete_requests: usize,
    /// When set, the next dump fails with this errno.
    pub fail_next_dump: Option<i32>,
}

impl FakeConntrack {
    /// A table holding `entries`; ids are assigned as the kernel would (unique).
    pub fn new(entries: impl IntoIterator<Item = Entry>) -> Self {
        let entries = entries
            .into_iter()
            .enumerate()
            .map(|(i, mut e)| {
                e.id = e.id.or(Some(i as u32 + 1));
                e
            })
            .collect();
        Self {
            entries,
            ..Self::default()
        }
    }
}

impl ConntrackTable for FakeConntrack {
    fn dump(&mut self, family: IpFamily, protocol: Protocol) -> Result<Dump, ConntrackError> {
        if let Some(errno) = self.fail_next_dump.take() {
            return Err(ConntrackError::Kernel {
                operation: "dump",
                done: 0,
                failed: 0,
                source: std::io::Error::from_raw_os_error(errno),
            });
        }
        self.dumps += 1;
        Ok(Dump {
            entries: self
                .entries
                .iter()
                .filter(|e| e.protocol == protocol && e.family() == family)
                .copied()
                .collect(),
            ..Dump::default()
        })
    }

    fn delete(&mut self, entries: &[Entry]) -> Result<usize, ConntrackError> {
        self.delete_requests += entries.len();
        let mut deleted = 0;
        for target in entries {
            // The kernel looks the entry up by original tuple and zone, then
            // checks the id when one is given.
            let found = self.entries.iter().position(|e| {
                e.protocol == target.protocol
                    && e.original == target.original
                    && e.zone == target.zone
                    && target.id.is_none_or(|id| e.id == Some(id))
            });
            if let Some(i) = found {
                self.entries.remove(i);
                deleted += 1;
            }
        }
        Ok(deleted)
    }
}
