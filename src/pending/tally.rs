//! Outstanding requests per domain, for `client_proxy_max_pending_per_domain`: a plain
//! count by name (few domains, touched only for requests from capped ones), kept apart
//! from the users table because a domain is not part of a user's record.

use hashbrown::hash_map::EntryRef;
use hashbrown::HashMap;
use std::collections::hash_map::RandomState;

/// Outstanding requests counted by a part of the requester's address.
pub(super) struct Tally(HashMap<String, u32, RandomState>);

impl Default for Tally {
    fn default() -> Self {
        Tally(HashMap::with_hasher(RandomState::new()))
    }
}

impl Tally {
    pub(super) fn get(&self, key: &str) -> u32 {
        self.0.get(key).copied().unwrap_or(0)
    }

    pub(super) fn add(&mut self, key: &str) {
        *self.0.entry_ref(key).or_insert(0) += 1;
    }

    pub(super) fn sub(&mut self, key: &str) {
        if let EntryRef::Occupied(mut n) = self.0.entry_ref(key) {
            *n.get_mut() -= 1;
            if *n.get() == 0 {
                n.remove();
            }
        }
    }

    /// Nothing counted (the tests' check that counts go back to zero).
    #[cfg(test)]
    pub(super) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}
