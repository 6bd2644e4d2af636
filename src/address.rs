//! Splitting addresses: the byte searches every stanza makes (its sender's bare JID,
//! account and domain, a request key's requester and id). They run on short strings,
//! where `str::split_once`'s memchr costs more in setting up than in searching (callgrind:
//! about a tenth of a request+reply's instructions); here a word of eight bytes is checked
//! at a time, inline.

/// Where `byte` first occurs in `text`.
#[inline]
pub fn find_byte(text: &[u8], byte: u8) -> Option<usize> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    let pattern = ONES * u64::from(byte);
    let mut at = 0;
    while let Some(chunk) = text.get(at..at + 8) {
        let word = u64::from_le_bytes(chunk.try_into().expect("eight bytes")) ^ pattern;
        // The lowest byte flagged is the first zero byte of `word` (a flag above a zero
        // byte may be false; the lowest never is).
        let zeros = word.wrapping_sub(ONES) & !word & HIGHS;
        if zeros != 0 {
            return Some(at + zeros.trailing_zeros() as usize / 8);
        }
        at += 8;
    }
    text[at..].iter().position(|&b| b == byte).map(|i| at + i)
}

/// `text` split around the first `byte` (an ASCII character), if it has one.
#[inline]
pub fn split_at_byte(text: &str, byte: u8) -> Option<(&str, &str)> {
    debug_assert!(byte.is_ascii());
    let i = find_byte(text.as_bytes(), byte)?;
    // An ASCII byte is a character boundary on both sides.
    Some((&text[..i], &text[i + 1..]))
}

/// A JID's bare part and resourcepart, if it has one.
#[inline]
pub fn split_resource(jid: &str) -> (&str, Option<&str>) {
    match split_at_byte(jid, b'/') {
        Some((bare, resource)) => (bare, Some(resource)),
        None => (jid, None),
    }
}

/// The requester's account (bare JID) and domain.
pub fn user_and_domain(requester: &str) -> (&str, &str) {
    let bare = split_resource(requester).0;
    let domain = split_at_byte(bare, b'@').map_or(bare, |(_, domain)| domain);
    (bare, domain)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn finds_what_a_plain_search_finds(text in proptest::collection::vec(any::<u8>(), 0..80), byte in any::<u8>()) {
            prop_assert_eq!(find_byte(&text, byte), text.iter().position(|&b| b == byte));
        }

        #[test]
        fn splits_as_split_once(text in "[a-z@/\u{e9}\u{1F600}]{0,40}") {
            prop_assert_eq!(split_at_byte(&text, b'/'), text.split_once('/'));
            prop_assert_eq!(split_at_byte(&text, b'@'), text.split_once('@'));
        }
    }

    #[test]
    fn a_match_in_every_position_of_a_word_and_the_tail() {
        let text: Vec<u8> = (1..=20).collect();
        for (i, &b) in text.iter().enumerate() {
            assert_eq!(find_byte(&text, b), Some(i));
        }
        assert_eq!(find_byte(&text, 0), None);
        assert_eq!(
            find_byte(&[0x80, 0x01, 0x00, 0x00, 0, 0, 0, 0, 7], 0x00),
            Some(2)
        );
    }

    #[test]
    fn accounts_and_domains() {
        assert_eq!(
            user_and_domain("u@d.example/r/x"),
            ("u@d.example", "d.example")
        );
        assert_eq!(user_and_domain("d.example/r@x"), ("d.example", "d.example"));
        assert_eq!(split_resource("u@d"), ("u@d", None));
    }
}
