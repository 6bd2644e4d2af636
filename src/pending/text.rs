//! The string a request's key (`requester NUL id`) and a user's address are kept in: in
//! the slot's own memory when it is short, as most JIDs and ids are, so that a key
//! compared in a lookup is read from the slot the lookup has just loaded, not from a
//! pointer to elsewhere (at 200,000 entries each such pointer is a cache miss).

use std::ops::Range;

/// A string, inline when it fits in `SHORT_TEXT` bytes.
#[derive(Clone)]
pub(super) enum Text {
    Short { len: u8, bytes: [u8; SHORT_TEXT] },
    Long(Box<str>),
}

/// Bytes a `Text` keeps inline (the enum is then 48 bytes, a long one's box included).
const SHORT_TEXT: usize = 46;

impl Text {
    pub(super) fn new(text: &str) -> Self {
        if text.len() <= SHORT_TEXT {
            let mut bytes = [0; SHORT_TEXT];
            bytes[..text.len()].copy_from_slice(text.as_bytes());
            Text::Short {
                len: text.len() as u8,
                bytes,
            }
        } else {
            Text::Long(text.into())
        }
    }

    /// `requester NUL id`, the key of a request (NUL cannot occur in XML, so the split is
    /// unambiguous).
    pub(super) fn key(requester: &str, id: &str) -> Self {
        let len = requester.len() + 1 + id.len();
        if len > SHORT_TEXT {
            return Text::Long([requester, "\0", id].concat().into());
        }
        let mut bytes = [0; SHORT_TEXT];
        bytes[..requester.len()].copy_from_slice(requester.as_bytes());
        bytes[requester.len() + 1..len].copy_from_slice(id.as_bytes());
        Text::Short {
            len: len as u8,
            bytes,
        }
    }

    /// The bytes, for comparisons (which need no UTF-8 check).
    pub(super) fn as_bytes(&self) -> &[u8] {
        match self {
            Text::Short { len, bytes } => &bytes[..usize::from(*len)],
            Text::Long(text) => text.as_bytes(),
        }
    }

    /// The part of the text in `range`, which must fall on the boundaries of the `&str`s
    /// it was made of. Checked as UTF-8 rather than trusted (only the binding's C API
    /// code may skip a check): a scan of a few dozen bytes, where a request's requester or id is read.
    pub(super) fn part(&self, range: Range<usize>) -> &str {
        self.as_bytes()
            .get(range)
            .and_then(|bytes| std::str::from_utf8(bytes).ok())
            .unwrap_or_default()
    }

    /// Byte length.
    pub(super) fn len(&self) -> usize {
        self.as_bytes().len()
    }

    /// Whether this is the key of `requester`'s request `id`.
    pub(super) fn is_key(&self, requester: &str, id: &str) -> bool {
        let (key, r) = (self.as_bytes(), requester.len());
        key.len() == r + 1 + id.len()
            && key[r] == 0
            && key.starts_with(requester.as_bytes())
            && key.ends_with(id.as_bytes())
    }
}

impl std::fmt::Debug for Text {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.part(0..self.len()).fmt(f)
    }
}

impl PartialEq for Text {
    fn eq(&self, other: &Self) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}
