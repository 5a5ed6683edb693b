//! The `nft` tool for one family's table: with [`crate::netlink`], the only code here
//! that touches the kernel. Transactions go over netlink when a socket is attached
//! (see [`Nft::with_netlink`]) and through `nft -f -` otherwise or when an operation
//! has no netlink form; both are atomic. The table is read back over netlink too
//! ([`crate::netlink::NfTables::list`]), with `nft --json list` as the fallback.

use std::sync::{Arc, Mutex, MutexGuard};

use kpr_exec::{Output, Runner};

use crate::listing::{Listing, ListingError};
use crate::names::TABLE;
use crate::netlink::{ApplyError, NetlinkError, NfTables};
use crate::objects::Family;
use crate::transaction::Transaction;

/// A failure talking to nft.
#[derive(Debug, thiserror::Error)]
pub enum NftError {
    /// The program could not be started.
    #[error("cannot run nft (is the nftables package installed?): {0}")]
    Spawn(#[from] std::io::Error),
    /// nft ran and failed.
    #[error("`nft {command}` failed (exit {status}): {stderr}")]
    Failed {
        /// What was run.
        command: String,
        /// Exit status.
        status: i32,
        /// The first lines nft wrote to stderr.
        stderr: String,
    },
    /// The listing did not parse.
    #[error(transparent)]
    Listing(#[from] ListingError),
    /// A netlink transaction failed.
    #[error(transparent)]
    Netlink(#[from] NetlinkError),
}

fn short(stderr: &str) -> String {
    let lines: Vec<&str> = stderr
        .lines()
        .filter(|l| !l.trim().is_empty())
        .take(6)
        .collect();
    lines.join(" | ")
}

/// `nft` for one family.
#[derive(Clone)]
pub struct Nft {
    family: Family,
    runner: Arc<dyn Runner>,
    netlink: Option<Arc<Mutex<NfTables>>>,
}

impl std::fmt::Debug for Nft {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Nft")
            .field("family", &self.family.word())
            .finish()
    }
}

impl Nft {
    /// nft for `family`, run through `runner`.
    pub fn new(family: Family, runner: Arc<dyn Runner>) -> Self {
        Self {
            family,
            runner,
            netlink: None,
        }
    }

    /// Sends transactions over `socket` (in the namespace it was opened in) instead of
    /// `nft -f`, except those with an operation it has no form for.
    pub fn with_netlink(mut self, socket: Arc<Mutex<NfTables>>) -> Self {
        self.netlink = Some(socket);
        self
    }

    /// True if transactions go over netlink.
    pub fn uses_netlink(&self) -> bool {
        self.netlink.is_some()
    }

    /// The family.
    pub fn family(&self) -> Family {
        self.family
    }

    fn run(&self, args: &[&str], stdin: Option<&str>) -> Result<Output, NftError> {
        let out = self.runner.run("nft", args, stdin.map(str::as_bytes))?;
        if out.success() {
            Ok(out)
        } else {
            Err(NftError::Failed {
                command: args.join(" "),
                status: out.status,
                stderr: short(&out.stderr),
            })
        }
    }

    /// The netlink socket, if attached (a panic elsewhere while holding it leaves
    /// nothing half-done in it: each use is one request and its answers).
    fn socket(&self) -> Option<MutexGuard<'_, NfTables>> {
        let socket = self.netlink.as_ref()?;
        Some(
            socket
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner()),
        )
    }

    /// Applies a transaction atomically; an empty one is not sent.
    pub fn apply(&self, tx: &Transaction) -> Result<(), NftError> {
        if tx.is_empty() {
            return Ok(());
        }
        if let Some(mut socket) = self.socket() {
            match socket.apply(tx) {
                Ok(()) => return Ok(()),
                Err(ApplyError::Failed(e)) => return Err(e.into()),
                Err(ApplyError::Unsupported(why)) => {
                    tracing::debug!(family = self.family.word(), "sending with nft -f: {why}");
                }
            }
        }
        self.run(&["-f", "-"], Some(&tx.text())).map(|_| ())
    }

    /// Checks a transaction without applying it (`nft --check`).
    pub fn check(&self, tx: &Transaction) -> Result<(), NftError> {
        self.run(&["--check", "-f", "-"], Some(&tx.text()))
            .map(|_| ())
    }

    /// Reads our table: chains, sets, maps and their elements. A missing table is an
    /// empty listing.
    pub fn list(&self) -> Result<Listing, NftError> {
        let mut listing = Listing::default();
        // Over netlink when a socket is attached: nft 1.0.6 loads every table's sets
        // and elements before listing (at 10,000 IPv4 Services, 30 s for the empty
        // IPv6 family and over two minutes for IPv4).
        if let Some(mut socket) = self.socket() {
            match socket.list(self.family.0, &crate::sync::DIFFED_SETS) {
                Ok(listing) => return Ok(listing),
                // Read it with nft instead; the sync is what matters.
                Err(e) => tracing::warn!(
                    family = self.family.word(),
                    error = %e,
                    "reading the table over netlink failed; listing it with nft"
                ),
            }
            if !socket.table_exists(self.family.0)? {
                return Ok(listing);
            }
        }
        for what in ["chains", "sets", "maps"] {
            let out = self.run(&["--json", "list", what, self.family.word()], None)?;
            listing.add_json(self.family, &out.stdout)?;
        }
        Ok(listing)
    }

    /// The whole table as `nft --json list table` prints it, rules included (for
    /// `show`); `None` when there is no table.
    pub fn table_json(&self) -> Result<Option<String>, NftError> {
        if !self.table_present()? {
            return Ok(None);
        }
        let out = self.run(
            &["--json", "list", "table", self.family.word(), TABLE],
            None,
        )?;
        Ok(Some(out.stdout))
    }

    /// True if our table exists.
    pub fn table_present(&self) -> Result<bool, NftError> {
        if let Some(mut socket) = self.socket() {
            return Ok(socket.table_exists(self.family.0)?);
        }
        let out = self.run(&["list", "tables", self.family.word()], None)?;
        let want = format!("table {} {TABLE}", self.family.word());
        Ok(out.stdout.lines().any(|l| l.trim() == want))
    }

    /// Deletes our table (upstream's `CleanupLeftovers`); true if there was one.
    pub fn delete_table(&self) -> Result<bool, NftError> {
        if !self.table_present()? {
            return Ok(false);
        }
        let mut tx = Transaction::new(self.family);
        tx.delete_table();
        self.apply(&tx)?;
        Ok(true)
    }
}
