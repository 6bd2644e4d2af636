//! Jabber Address Translation: the requester's address hidden in the resource of the
//! component's own address, so the implementing client can answer without knowing
//! how to reach the requester.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;

/// Prosody refuses resources of 1024 bytes or more; anything longer is replaced by a token.
pub const MAX_RESOURCE_BYTES: usize = 1023;

/// Opaque tokens start with a character no encoding can start with: a JID never begins
/// with '@' (empty localpart) and '@' is not in the base64url alphabet.
pub const TOKEN_PREFIX: char = '@';

/// How the requester's full JID is written into the resource.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// The full JID as it is (the original's format; Jicofo parses it).
    Plain,
    /// base64url without padding, for clients that want plain ASCII resources.
    Base64,
}

/// Why a resource could not be translated back or a JID could not be encoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JatError {
    /// The encoding would pass Prosody's resource limit.
    TooLong,
    /// Not something this module produced.
    Invalid(&'static str),
    /// An opaque token this module does not (or no longer) know.
    UnknownToken,
}

impl fmt::Display for JatError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JatError::TooLong => write!(f, "encoded address exceeds {MAX_RESOURCE_BYTES} bytes"),
            JatError::Invalid(why) => write!(f, "not a JAT resource: {why}"),
            JatError::UnknownToken => write!(f, "unknown or expired JAT token"),
        }
    }
}

/// Encodes a requester's full JID; fails only when the result would be too long.
pub fn encode(mode: Mode, requester: &str) -> Result<String, JatError> {
    let encoded = match mode {
        Mode::Plain => requester.to_owned(),
        Mode::Base64 => URL_SAFE_NO_PAD.encode(requester.as_bytes()),
    };
    if encoded.len() > MAX_RESOURCE_BYTES {
        return Err(JatError::TooLong);
    }
    Ok(encoded)
}

/// Decodes a resource back to the requester's JID. Strict: anything that is not a valid
/// JID in the chosen encoding is refused; tokens are not handled here (see `TokenMap`).
pub fn decode(mode: Mode, resource: &str) -> Result<String, JatError> {
    if resource.is_empty() {
        return Err(JatError::Invalid("empty"));
    }
    if resource.starts_with(TOKEN_PREFIX) {
        return Err(JatError::UnknownToken);
    }
    let text = match mode {
        Mode::Plain => resource.to_owned(),
        Mode::Base64 => {
            let bytes = URL_SAFE_NO_PAD
                .decode(resource.as_bytes())
                .map_err(|_| JatError::Invalid("bad base64url"))?;
            String::from_utf8(bytes).map_err(|_| JatError::Invalid("not UTF-8"))?
        }
    };
    jid::Jid::new(&text).map_err(|_| JatError::Invalid("not a JID"))?;
    Ok(text)
}

struct TokenEntry {
    requester: String,
    last_used: f64,
}

/// Maps requesters whose encoding would be too long to short opaque tokens and back.
/// Bounded (oldest evicted first) and expiring (unused for `ttl` seconds).
pub struct TokenMap {
    by_token: HashMap<String, TokenEntry>,
    by_requester: HashMap<String, String>,
    capacity: usize,
    ttl: f64,
}

impl TokenMap {
    /// A map holding at most `capacity` tokens, each forgotten `ttl` seconds after last use.
    pub fn new(capacity: usize, ttl: f64) -> Self {
        TokenMap {
            by_token: HashMap::new(),
            by_requester: HashMap::new(),
            capacity: capacity.max(1),
            ttl,
        }
    }

    /// The token for this requester, made on first use.
    pub fn token_for(&mut self, requester: &str, now: f64) -> String {
        if let Some(token) = self.by_requester.get(requester) {
            if let Some(entry) = self.by_token.get_mut(token) {
                entry.last_used = now;
                return token.clone();
            }
        }
        if self.by_token.len() >= self.capacity {
            self.evict_oldest();
        }
        let token = loop {
            let candidate = format!("{TOKEN_PREFIX}{:016x}", rand::random::<u64>());
            if !self.by_token.contains_key(&candidate) {
                break candidate;
            }
        };
        self.by_token.insert(
            token.clone(),
            TokenEntry {
                requester: requester.to_owned(),
                last_used: now,
            },
        );
        self.by_requester
            .insert(requester.to_owned(), token.clone());
        token
    }

    /// The requester behind a token, refreshing its lifetime.
    pub fn resolve(&mut self, token: &str, now: f64) -> Result<String, JatError> {
        match self.by_token.get_mut(token) {
            Some(entry) => {
                entry.last_used = now;
                Ok(entry.requester.clone())
            }
            None => Err(JatError::UnknownToken),
        }
    }

    /// Forgets tokens unused for longer than the ttl.
    pub fn expire(&mut self, now: f64) {
        let ttl = self.ttl;
        let by_requester = &mut self.by_requester;
        self.by_token.retain(|_, entry| {
            let keep = now - entry.last_used <= ttl;
            if !keep {
                by_requester.remove(&entry.requester);
            }
            keep
        });
    }

    /// Number of live tokens.
    pub fn len(&self) -> usize {
        self.by_token.len()
    }

    /// True when no token is live.
    pub fn is_empty(&self) -> bool {
        self.by_token.is_empty()
    }

    fn evict_oldest(&mut self) {
        let oldest = self
            .by_token
            .iter()
            .min_by(|a, b| a.1.last_used.total_cmp(&b.1.last_used))
            .map(|(token, _)| token.clone());
        if let Some(token) = oldest {
            if let Some(entry) = self.by_token.remove(&token) {
                self.by_requester.remove(&entry.requester);
            }
        }
    }
}

/// Encoding and the token fallback together: what a proxy uses for every requester.
pub struct Translator {
    mode: Mode,
    tokens: TokenMap,
}

impl Translator {
    /// A translator for one component.
    pub fn new(mode: Mode, tokens: TokenMap) -> Self {
        Translator { mode, tokens }
    }

    /// The configured encoding.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// The resource for a requester: its encoding, or a token when that is too long.
    pub fn encode(&mut self, requester: &str, now: f64) -> String {
        match encode(self.mode, requester) {
            Ok(resource) => resource,
            Err(_) => self.tokens.token_for(requester, now),
        }
    }

    /// `host/resource` for a requester: the component's address for it, written in one
    /// allocation when the requester is its own resource (plain JAT, the usual case).
    pub fn address(&mut self, host: &str, requester: &str, now: f64) -> String {
        let plain_fits = self.mode == Mode::Plain && requester.len() <= MAX_RESOURCE_BYTES;
        let mut address = String::with_capacity(host.len() + 1 + requester.len());
        address.push_str(host);
        address.push('/');
        if plain_fits {
            address.push_str(requester);
        } else {
            address.push_str(&self.encode(requester, now));
        }
        address
    }

    /// The requester behind a resource this translator produced.
    pub fn decode(&mut self, resource: &str, now: f64) -> Result<String, JatError> {
        if resource.starts_with(TOKEN_PREFIX) {
            self.tokens.resolve(resource, now)
        } else {
            decode(self.mode, resource)
        }
    }

    /// The requester a reply addresses, for looking up the request it answers: cheaper
    /// than `decode` (a plain resource is taken as it is, without parsing it as a JID),
    /// and as strict, because only a requester with an outstanding request is accepted.
    pub fn requester_of<'r>(&mut self, resource: &'r str, now: f64) -> Option<Cow<'r, str>> {
        if resource.starts_with(TOKEN_PREFIX) {
            return self.tokens.resolve(resource, now).ok().map(Cow::Owned);
        }
        match self.mode {
            Mode::Plain => (!resource.is_empty()).then_some(Cow::Borrowed(resource)),
            Mode::Base64 => {
                let bytes = URL_SAFE_NO_PAD.decode(resource.as_bytes()).ok()?;
                String::from_utf8(bytes).ok().map(Cow::Owned)
            }
        }
    }

    /// Forgets stale tokens.
    pub fn expire(&mut self, now: f64) {
        self.tokens.expire(now);
    }

    /// Number of live tokens.
    pub fn tokens(&self) -> usize {
        self.tokens.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn plain_is_the_full_jid_as_the_original_writes_it() {
        assert_eq!(
            encode(Mode::Plain, "user@example.org/abc").unwrap(),
            "user@example.org/abc"
        );
        assert_eq!(
            decode(Mode::Plain, "user@example.org/abc").unwrap(),
            "user@example.org/abc"
        );
    }

    #[test]
    fn base64_is_url_safe_without_padding() {
        let enc = encode(Mode::Base64, "user@example.org/abc?").unwrap();
        assert_eq!(enc, "dXNlckBleGFtcGxlLm9yZy9hYmM_");
        assert!(!enc.contains('='));
        assert_eq!(decode(Mode::Base64, &enc).unwrap(), "user@example.org/abc?");
    }

    #[test]
    fn too_long_is_refused_by_encode() {
        let jid = format!("u@example.org/{}", "r".repeat(1023));
        assert_eq!(encode(Mode::Plain, &jid), Err(JatError::TooLong));
        let jid = format!("u@example.org/{}", "r".repeat(760));
        assert_eq!(encode(Mode::Base64, &jid), Err(JatError::TooLong));
    }

    #[test]
    fn garbage_is_refused() {
        for bad in [
            "",
            "@",
            "@abc",
            "@example.org",
            "/res",
            "a@/b",
            "a@b@c/\u{0}",
        ] {
            assert!(decode(Mode::Plain, bad).is_err(), "plain accepted {bad:?}");
        }
        for bad in ["", "!!!", "dXNlcg=", "@0011", "_w", "QA"] {
            assert!(
                decode(Mode::Base64, bad).is_err(),
                "base64 accepted {bad:?}"
            );
        }
    }

    #[test]
    fn tokens_map_back_and_expire() {
        let mut t = Translator::new(Mode::Plain, TokenMap::new(2, 10.0));
        let long = format!("u@example.org/{}", "r".repeat(1023));
        let token = t.encode(&long, 0.0);
        assert!(token.starts_with('@') && token.len() < 32);
        assert_eq!(t.encode(&long, 1.0), token, "same requester, same token");
        assert_eq!(t.decode(&token, 2.0).unwrap(), long);
        t.expire(11.0);
        assert_eq!(t.tokens(), 1, "used at 2.0, still live at 11.0");
        t.expire(12.5);
        assert_eq!(t.decode(&token, 13.0), Err(JatError::UnknownToken));
        assert_eq!(
            t.decode("@ffffffffffffffff", 13.0),
            Err(JatError::UnknownToken)
        );
    }

    #[test]
    fn token_map_is_bounded() {
        let mut map = TokenMap::new(3, 1e9);
        let first = map.token_for("a", 0.0);
        for (i, r) in ["b", "c", "d", "e"].iter().enumerate() {
            map.token_for(r, 1.0 + i as f64);
        }
        assert_eq!(map.len(), 3);
        assert_eq!(map.resolve(&first, 9.0), Err(JatError::UnknownToken));
    }

    fn part(extra: &'static str) -> impl Strategy<Value = String> {
        proptest::collection::vec(
            prop_oneof![
                proptest::char::range('a', 'z'),
                proptest::char::range('0', '9'),
                proptest::sample::select(extra.chars().collect::<Vec<_>>()),
                proptest::sample::select(vec!['é', 'ß', 'ж', '中', '☃']),
            ],
            1..20,
        )
        .prop_map(|chars| chars.into_iter().collect())
    }

    fn full_jid() -> impl Strategy<Value = String> {
        (part("-._"), part("-"), part("/@' -_.é"), any::<bool>()).prop_filter_map(
            "valid and canonical JIDs only",
            |(node, domain, resource, with_node)| {
                let text = if with_node {
                    format!("{node}@{domain}.example/{resource}")
                } else {
                    format!("{domain}.example/{resource}")
                };
                // Only JIDs as Prosody would hand them to us (already prepped).
                let jid = jid::Jid::new(&text).ok()?;
                (jid.to_string() == text).then_some(text)
            },
        )
    }

    proptest! {
        #[test]
        fn round_trip_plain(jid in full_jid()) {
            let enc = encode(Mode::Plain, &jid).unwrap();
            prop_assert_eq!(decode(Mode::Plain, &enc).unwrap(), jid);
        }

        #[test]
        fn round_trip_base64(jid in full_jid()) {
            let enc = encode(Mode::Base64, &jid).unwrap();
            prop_assert!(enc.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
            prop_assert_eq!(decode(Mode::Base64, &enc).unwrap(), jid);
        }

        #[test]
        fn round_trip_through_translator_any_length(jid in full_jid(), pad in 0usize..1100) {
            let mut t = Translator::new(Mode::Plain, TokenMap::new(16, 60.0));
            let long = format!("{jid}{}", "x".repeat(pad));
            if jid::Jid::new(&long).is_ok() {
                let enc = t.encode(&long, 0.0);
                prop_assert!(enc.len() <= MAX_RESOURCE_BYTES);
                prop_assert_eq!(t.decode(&enc, 1.0).unwrap(), long);
            }
        }

        #[test]
        fn decode_never_panics(s in "\\PC{0,64}", b in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = decode(Mode::Plain, &s);
            let _ = decode(Mode::Base64, &s);
            let lossy = String::from_utf8_lossy(&b);
            let _ = decode(Mode::Plain, &lossy);
            let _ = decode(Mode::Base64, &lossy);
        }
    }
}
