//! What each user has outstanding, in all and per device, for
//! `client_proxy_max_pending_per_user` and `client_proxy_max_pending_per_requester`: one
//! table for both, so that a request touches it once. Records in slots (a freed one
//! reused first), found by an index of slot numbers by the bare JID's hash; a request
//! keeps its user's slot, so that a reply reaches the counts without a hash or a probe.

use super::table::Refusal;
use super::text::Text;
use crate::address::split_at_byte;
use hashbrown::hash_table::Entry as Slot;
use hashbrown::HashTable;

/// The requester's account (bare JID) and resourcepart (empty when it has none).
pub(super) fn user_and_device(requester: &str) -> (&str, &str) {
    split_at_byte(requester, b'/').unwrap_or((requester, ""))
}

/// What one user (bare JID) has outstanding, in all and per device (full JID).
struct User {
    /// The full JID of the device that made the record, so that the usual user (one
    /// device) costs no allocation of its own.
    jid: Text,
    bare_len: usize,
    /// Of the bare JID, for the index.
    hash: u64,
    total: u32,
    /// Of the device named in `jid`.
    first: u32,
    /// Other devices (resourceparts) and theirs.
    others: Vec<(Box<str>, u32)>,
}

impl User {
    /// Whether this is the record of the account `user`.
    fn is(&self, user: &str) -> bool {
        self.jid.as_bytes().get(..self.bare_len) == Some(user.as_bytes())
    }

    /// The resourcepart of the device that made the record.
    fn device(&self) -> &[u8] {
        self.jid.as_bytes().get(self.bare_len + 1..).unwrap_or(b"")
    }

    /// The count of a device (0 when it has none).
    fn count_of(&self, device: &str) -> u32 {
        if self.device() == device.as_bytes() {
            return self.first;
        }
        self.others
            .iter()
            .find(|(d, _)| &**d == device)
            .map_or(0, |(_, n)| *n)
    }

    /// The count of a device, if it has one.
    fn of_device(&mut self, device: &str) -> Option<&mut u32> {
        if self.device() == device.as_bytes() {
            return Some(&mut self.first);
        }
        self.others
            .iter_mut()
            .find(|(d, _)| &**d == device)
            .map(|(_, n)| n)
    }
}

/// What each user has outstanding, for the per-user and per-requester limits: one table
/// for both, so that a request touches it once. Records in slots (a freed one reused
/// first), found by an index of slot numbers by the bare JID's hash.
#[derive(Default)]
pub(super) struct Users {
    records: Vec<Option<User>>,
    free: Vec<u32>,
    index: HashTable<u32>,
}

impl Users {
    fn record(records: &[Option<User>], i: u32) -> Option<&User> {
        records.get(i as usize)?.as_ref()
    }

    /// Users with requests outstanding.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.index.len()
    }

    /// No record in any slot (the tests' check that records go once their counts do).
    #[cfg(test)]
    pub(super) fn all_free(&self) -> bool {
        self.records.iter().all(Option::is_none)
    }

    /// Outstanding requests of the requester's account and of the requester itself;
    /// `hash`: of the account.
    pub(super) fn counts(&self, hash: u64, requester: &str) -> (u32, u32) {
        let (user, device) = user_and_device(requester);
        let records = &self.records;
        let found = self.index.find(hash, |&i| {
            Self::record(records, i).is_some_and(|r| r.is(user))
        });
        found
            .and_then(|&i| Self::record(records, i))
            .map_or((0, 0), |r| (r.total, r.count_of(device)))
    }

    /// Counts a request unless the requester already has `limits.0` requests outstanding
    /// (RequesterFull) or its account `limits.1` (UserFull), or else `otherwise` refuses
    /// it; one probe of the index for the check and the count. `hash`: of the account.
    /// Returns the account's slot.
    pub(super) fn add_within(
        &mut self,
        hash: u64,
        requester: &str,
        (user, device): (&str, &str),
        (per_requester, per_user): (u32, u32),
        otherwise: Result<(), Refusal>,
    ) -> Result<u32, Refusal> {
        let Users {
            records,
            free,
            index,
        } = self;
        let found = index.entry(
            hash,
            |&i| Self::record(records, i).is_some_and(|r| r.is(user)),
            |&i| Self::record(records, i).map_or(0, |r| r.hash),
        );
        match found {
            Slot::Occupied(o) => {
                let i = *o.get();
                let Some(record) = records[i as usize].as_mut() else {
                    unreachable!("the index names only records in their slots")
                };
                if record.count_of(device) >= per_requester {
                    return Err(Refusal::RequesterFull);
                }
                if record.total >= per_user {
                    return Err(Refusal::UserFull);
                }
                otherwise?;
                record.total += 1;
                match record.of_device(device) {
                    Some(n) => *n += 1,
                    None => record.others.push((device.into(), 1)),
                }
                Ok(i)
            }
            Slot::Vacant(v) => {
                if per_requester == 0 {
                    return Err(Refusal::RequesterFull);
                }
                if per_user == 0 {
                    return Err(Refusal::UserFull);
                }
                otherwise?;
                let i = free.pop().unwrap_or_else(|| {
                    records.push(None);
                    (records.len() - 1) as u32
                });
                records[i as usize] = Some(User {
                    jid: Text::new(requester),
                    bare_len: user.len(),
                    hash,
                    total: 1,
                    first: 1,
                    others: Vec::new(),
                });
                v.insert(i);
                Ok(i)
            }
        }
    }

    /// Counts a request whatever the limits (one put back after a retry); `hash`: of the
    /// account. Returns the account's slot.
    pub(super) fn add(&mut self, hash: u64, requester: &str) -> u32 {
        let split = user_and_device(requester);
        let counted = self.add_within(hash, requester, split, (u32::MAX, u32::MAX), Ok(()));
        counted.unwrap_or_else(|_| unreachable!("no count reaches u32::MAX"))
    }

    /// Counts a request of the account in slot `i` no longer outstanding.
    pub(super) fn sub(&mut self, i: u32, requester: &str) {
        let device = user_and_device(requester).1;
        let Some(record) = self.records.get_mut(i as usize).and_then(Option::as_mut) else {
            return;
        };
        record.total -= 1;
        if record.total == 0 {
            let hash = record.hash;
            self.records[i as usize] = None;
            if let Ok(entry) = self.index.find_entry(hash, |&j| j == i) {
                entry.remove();
            }
            self.free.push(i);
            return;
        }
        if let Some(n) = record.of_device(device) {
            *n -= 1;
        }
        record.others.retain(|(_, n)| *n > 0);
    }
}
