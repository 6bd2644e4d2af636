//! The table's bookkeeping: replies matched, limits, deadlines, hold numbers, keys.

use super::*;
use crate::pending::request::Method;
use crate::pending::text::Text;

/// Limits with no cap per user or per domain.
fn limits(timeout: f64, max_total: usize, max_per_requester: u32) -> Limits {
    Limits {
        timeout,
        max_total,
        max_per_requester,
        max_per_user: u32::MAX,
        max_per_domain: u32::MAX,
    }
}

fn limited(timeout: f64, max_total: usize, max_per_requester: u32) -> PendingTable {
    PendingTable::new(limits(timeout, max_total, max_per_requester))
}

fn table() -> PendingTable {
    limited(10.0, 4, 2)
}

#[test]
fn reply_accepted_once_from_the_right_resource() {
    let mut t = table();
    t.insert("u@x/a", "1", "res1".into(), Method::Get, 0.0, false)
        .unwrap();
    assert_eq!(
        t.take_reply("u@x/a", "1", "res2", false),
        Err(Mismatch::WrongResource)
    );
    assert_eq!(
        t.take_reply("u@x/b", "1", "res1", false),
        Err(Mismatch::Unknown)
    );
    assert_eq!(
        t.take_reply("u@x/a", "2", "res1", false),
        Err(Mismatch::Unknown)
    );
    let r = t.take_reply("u@x/a", "1", "res1", false).unwrap();
    assert_eq!((r.requester(), r.id()), ("u@x/a", "1"));
    assert_eq!(
        t.take_reply("u@x/a", "1", "res1", false),
        Err(Mismatch::Unknown)
    );
    assert!(t.is_empty());
}

#[test]
fn limits_and_duplicates() {
    let mut t = table();
    t.insert("u@x/a", "1", "r".into(), Method::Get, 0.0, false)
        .unwrap();
    assert_eq!(
        t.insert("u@x/a", "1", "r".into(), Method::Get, 0.0, false),
        Err(Refusal::DuplicateId)
    );
    t.insert("u@x/a", "2", "r".into(), Method::Set, 0.0, false)
        .unwrap();
    assert_eq!(
        t.insert("u@x/a", "3", "r".into(), Method::Get, 0.0, false),
        Err(Refusal::RequesterFull)
    );
    t.insert("v@x/a", "1", "r".into(), Method::Get, 0.0, false)
        .unwrap();
    t.insert("w@x/a", "1", "r".into(), Method::Get, 0.0, false)
        .unwrap();
    assert_eq!(
        t.insert("z@x/a", "1", "r".into(), Method::Get, 0.0, false),
        Err(Refusal::TableFull)
    );
    t.take_reply("u@x/a", "1", "r", false).unwrap();
    assert_eq!(t.of_requester("u@x/a"), 1);
    t.insert("u@x/a", "3", "r".into(), Method::Get, 0.0, false)
        .unwrap();
}

#[test]
fn expiry_in_deadline_order() {
    let mut t = table();
    t.insert("u@x/a", "1", "r".into(), Method::Get, 0.0, false)
        .unwrap();
    t.insert("v@x/a", "1", "r".into(), Method::Get, 5.0, false)
        .unwrap();
    assert!(t.expire(9.9).is_empty());
    let gone = t.expire(10.0);
    assert_eq!(gone.len(), 1);
    assert_eq!(gone[0].requester(), "u@x/a");
    assert_eq!(t.expire(100.0).len(), 1);
    assert!(
        t.is_empty()
            && t.deadlines.queued() == 0
            && t.deadlines.entries() == 0
            && t.per_user.len() == 0
            && t.per_user.all_free()
            && t.per_domain.is_empty()
    );
}

#[test]
fn a_new_timeout_applies_to_new_requests_and_expiry_stays_oldest_first() {
    let mut t = limited(10.0, 10, 10);
    t.insert("u@x/a", "1", "r".into(), Method::Get, 0.0, false)
        .unwrap();
    t.set_limits(limits(2.0, 10, 10));
    t.insert("v@x/a", "1", "r".into(), Method::Get, 1.0, false)
        .unwrap();
    t.insert("w@x/a", "1", "r".into(), Method::Get, 9.0, false)
        .unwrap();
    t.set_limits(limits(10.0, 10, 10));
    t.insert("z@x/a", "1", "r".into(), Method::Get, 9.5, false)
        .unwrap();
    assert_eq!(
        t.deadlines.queues(),
        2,
        "one queue per timeout in force: 10 s and 2 s"
    );
    let first: Vec<_> = t
        .expire(3.0)
        .iter()
        .map(|r| r.requester().to_owned())
        .collect();
    assert_eq!(first, ["v@x/a"]);
    let next: Vec<_> = t
        .expire(11.0)
        .iter()
        .map(|r| r.requester().to_owned())
        .collect();
    assert_eq!(next, ["u@x/a", "w@x/a"], "by deadline across the queues");
    assert_eq!(t.expire(19.5).len(), 1);
    assert!(t.is_empty());
}

#[test]
fn a_clock_that_went_back_still_expires_in_deadline_order() {
    let mut t = limited(10.0, 10, 10);
    for (requester, now) in [("u@x/a", 5.0), ("v@x/a", 2.0), ("w@x/a", 3.0)] {
        t.insert(requester, "1", "r".into(), Method::Get, now, false)
            .unwrap();
    }
    assert!(t.expire(11.9).is_empty());
    let order: Vec<_> = t
        .expire(15.0)
        .iter()
        .map(|r| r.requester().to_owned())
        .collect();
    assert_eq!(order, ["v@x/a", "w@x/a", "u@x/a"]);
}

#[test]
fn deadlines_of_answered_requests_do_not_pile_up() {
    let mut t = limited(1.0e6, 10, 10);
    t.insert("held@x/a", "1", "r".into(), Method::Get, 0.0, false)
        .unwrap();
    for i in 0..10_000 {
        let id = i.to_string();
        t.insert("u@x/a", &id, "r".into(), Method::Get, 0.0, false)
            .unwrap();
        let answered = t.take_reply("u@x/a", &id, "r", false).unwrap();
        t.release(answered.held());
        let queued = t.deadlines.entries();
        assert_eq!(queued, t.deadlines.queued());
        assert!(
            queued <= 2 * t.len() + 1025,
            "{queued} deadlines queued for {} requests",
            t.len()
        );
    }
    assert_eq!(
        t.expire(2.0e6).len(),
        1,
        "the request still outstanding expires"
    );
}

#[test]
fn a_deadline_left_by_an_answered_request_does_not_expire_the_next_in_its_slot() {
    let mut t = limited(10.0, 10, 10);
    let first = t
        .insert("u@x/a", "1", "r".into(), Method::Get, 0.0, false)
        .unwrap();
    let answered = t.take_reply("u@x/a", "1", "r", false).unwrap();
    t.release(answered.held());
    let next = t
        .insert("v@x/a", "1", "r".into(), Method::Get, 5.0, false)
        .unwrap();
    assert_eq!(next, first, "the number, and the slot, came back");
    assert!(t.expire(10.0).is_empty(), "the first request's deadline");
    let gone = t.expire(15.0);
    assert_eq!(gone.len(), 1);
    assert_eq!(gone[0].requester(), "v@x/a");
}

#[test]
fn deadlines_follow_their_requests_through_reused_numbers_and_retries() {
    let mut t = limited(1.0e6, 100, 100);
    t.insert("old@x/a", "1", "r".into(), Method::Get, 0.0, false)
        .unwrap();
    // A pseudo-random mix of requests, answers and retargets; answered numbers are
    // released (and reused), as the router does.
    let mut state = 12345u64;
    let mut open: Vec<(String, String)> = Vec::new();
    for i in 0..1_000_000u64 {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let roll = (state >> 33) % 10;
        if roll < 5 || open.is_empty() {
            let (requester, id) = (format!("u{}@x/a", i % 50), i.to_string());
            if t.insert(&requester, &id, "r".into(), Method::Get, 0.0, false)
                .is_ok()
            {
                open.push((requester, id));
            }
        } else {
            let (requester, id) = open.swap_remove((state >> 40) as usize % open.len());
            let request = t.take(&requester, &id).unwrap();
            if roll == 9 {
                t.retarget(request, "r2".into(), false);
                open.push((requester, id));
            } else {
                t.release(request.held());
            }
        }
        if i % 50_021 == 0 {
            assert_eq!(t.len(), open.len() + 1);
            assert!(
                t.numbers_out() == t.len(),
                "numbers of answered requests came back"
            );
            assert!(
                t.deadlines.queued() <= 2 * t.len() + 1024,
                "{} queued",
                t.deadlines.queued()
            );
        }
    }
    assert!(
        t.requests.len() <= 101,
        "{} slots for at most 100 requests",
        t.requests.len()
    );
    let gone = t.expire(2.0e6);
    assert_eq!(
        gone.len(),
        open.len() + 1,
        "every request still outstanding expires"
    );
    assert!(gone.iter().any(|r| r.requester() == "old@x/a"));
    assert!(t.is_empty() && t.per_user.len() == 0);
}

#[test]
fn a_refused_request_counts_nowhere_and_the_first_limit_reached_is_named() {
    let mut t = PendingTable::new(Limits {
        max_per_user: 2,
        max_per_domain: 1,
        ..limits(10.0, 3, 2)
    });
    t.insert("u@x/a", "1", "r".into(), Method::Get, 0.0, true)
        .unwrap();
    let refused = t.insert("u@x/b", "1", "r".into(), Method::Get, 0.0, true);
    assert_eq!(refused, Err(Refusal::DomainFull));
    t.insert("u@x/b", "1", "r".into(), Method::Get, 0.0, false)
        .unwrap();
    // The account is full, the table too: the account is named.
    t.insert("v@y/a", "1", "r".into(), Method::Get, 0.0, false)
        .unwrap();
    let refused = t.insert("u@x/c", "1", "r".into(), Method::Get, 0.0, false);
    assert_eq!(refused, Err(Refusal::UserFull));
    assert_eq!(
        t.insert("w@y/a", "1", "r".into(), Method::Get, 0.0, false),
        Err(Refusal::TableFull)
    );
    assert_eq!((t.of_user("u@x"), t.of_requester("u@x/c")), (2, 0));
    assert_eq!((t.of_user("w@y"), t.of_domain("x")), (0, 1));
    assert!(t.per_user.len() == 2 && t.len() == 3);
}

#[test]
fn hold_numbers_stay_few_and_come_back_once_released() {
    let mut t = limited(10.0, 10, 10);
    let held: Vec<u64> = ["1", "2", "3"]
        .iter()
        .map(|id| {
            t.insert("u@x/a", id, "r".into(), Method::Get, 0.0, false)
                .unwrap()
        })
        .collect();
    assert_eq!(held, [1, 2, 3]);
    let answered = t.take_reply("u@x/a", "2", "r", false).unwrap();
    assert_eq!(answered.held(), 2);
    let next = t.insert("u@x/a", "4", "r".into(), Method::Get, 0.0, false);
    assert_eq!(next, Ok(4), "not before the shim let go of it");
    t.release(answered.held());
    let again = t.insert("u@x/a", "5", "r".into(), Method::Get, 0.0, false);
    assert_eq!(again, Ok(2));
}

#[test]
fn a_number_released_while_in_use_or_twice_is_not_shared() {
    let mut t = limited(10.0, 10, 10);
    let live = t
        .insert("u@x/a", "1", "r".into(), Method::Get, 0.0, false)
        .unwrap();
    t.release(live); // still outstanding: not given out
    let answered = t
        .insert("u@x/a", "2", "r".into(), Method::Get, 0.0, false)
        .unwrap();
    t.take_reply("u@x/a", "2", "r", false).unwrap();
    t.release(answered);
    t.release(answered); // twice
    let numbers: Vec<u64> = ["3", "4"]
        .iter()
        .map(|id| {
            t.insert("u@x/a", id, "r".into(), Method::Get, 0.0, false)
                .unwrap()
        })
        .collect();
    assert!(
        !numbers.contains(&live) && numbers[0] != numbers[1],
        "{live} {numbers:?}"
    );
    for id in ["1", "3", "4"] {
        assert!(
            t.take_reply("u@x/a", id, "r", false).is_ok(),
            "request {id}"
        );
    }
}

#[test]
fn resource_loss_takes_only_its_requests() {
    let mut t = table();
    t.insert("u@x/a", "1", "r1".into(), Method::Get, 0.0, false)
        .unwrap();
    t.insert("v@x/a", "1", "r2".into(), Method::Set, 0.0, false)
        .unwrap();
    t.insert("w@x/a", "1", "r1".into(), Method::Set, 0.0, false)
        .unwrap();
    let lost = t.take_resource("r1");
    assert_eq!(lost.len(), 2);
    assert_eq!(t.len(), 1);
    assert_eq!(t.of_resource("r2"), 1);
    assert_eq!(t.take_all().len(), 1);
    assert!(t.is_empty());
}

#[test]
fn retarget_keeps_number_and_deadline() {
    let mut t = table();
    let seq = t
        .insert("u@x/a", "1", "r1".into(), Method::Get, 0.0, false)
        .unwrap();
    let lost = t.take_resource("r1").pop().unwrap();
    assert!(lost.earlier().is_empty());
    t.retarget(lost, "r2".into(), false);
    assert_eq!(t.of_resource("r2"), 1);
    assert_eq!(t.of_requester("u@x/a"), 1);
    assert!(t.expire(9.0).is_empty());
    let gone = t.expire(10.0).pop().unwrap();
    assert_eq!((gone.held(), &**gone.resource()), (seq, "r2"));
    assert_eq!(gone.earlier(), [Arc::<str>::from("r1")]);
}

#[test]
fn a_hibernating_resources_gets_leave_its_sets_stay() {
    let mut t = table();
    t.insert("u@x/a", "g", "r1".into(), Method::Get, 0.0, false)
        .unwrap();
    t.insert("u@x/a", "s", "r1".into(), Method::Set, 0.0, false)
        .unwrap();
    t.insert("u@x/b", "g", "r2".into(), Method::Get, 0.0, false)
        .unwrap();
    let gets = t.take_gets("r1");
    assert_eq!(gets.len(), 1);
    assert_eq!(gets[0].id(), "g");
    assert_eq!((t.of_resource("r1"), t.of_resource("r2")), (1, 1));
    let get = gets.into_iter().next().unwrap();
    let seq = get.held();
    t.put_back(get);
    assert_eq!(t.of_resource("r1"), 2, "back as it was");
    assert!(t.expire(9.0).is_empty());
    let due: Vec<u64> = t.expire(10.0).iter().map(Request::held).collect();
    assert!(due.contains(&seq), "its deadline still finds it");
}

#[test]
fn the_first_result_of_either_resource_answers_a_get_moved_off_a_sleeper() {
    for first in ["r1", "r2"] {
        let mut t = table();
        t.insert("u@x/a", "1", "r1".into(), Method::Get, 0.0, false)
            .unwrap();
        let get = t.take_gets("r1").pop().unwrap();
        t.retarget(get, "r2".into(), true);
        assert_eq!(
            t.take_reply("u@x/a", "1", "r1", false),
            Err(Mismatch::WrongResource),
            "only when the caller accepts the sleeper's answer"
        );
        let r = t.take_reply("u@x/a", "1", first, true).unwrap();
        assert_eq!(&**r.resource(), "r2", "still held by the new one");
        assert!(r.left_asleep("r1") && !r.left_asleep("r2"));
        t.release(r.held());
        for other in ["r1", "r2"] {
            assert_eq!(
                t.take_reply("u@x/a", "1", other, true),
                Err(Mismatch::Unknown),
                "the other answer is dropped"
            );
        }
    }
}

#[test]
fn a_resource_left_on_a_decline_does_not_answer_any_more() {
    let mut t = table();
    t.insert("u@x/a", "1", "r1".into(), Method::Get, 0.0, false)
        .unwrap();
    let get = t.take_reply("u@x/a", "1", "r1", false).unwrap();
    t.retarget(get, "r2".into(), false);
    assert_eq!(
        t.take_reply("u@x/a", "1", "r1", true),
        Err(Mismatch::WrongResource)
    );
}

#[test]
fn one_pass_hashes_the_key_and_the_account_as_lookups_do() {
    let t = table();
    for (requester, id) in [
        ("u@x/a", "1"),
        (
            "a-requester-longer-than-inline@a-long-domain.example.org/device",
            "id-1",
        ),
        ("", ""),
        ("u@x", "1"),
        ("a@x", "b/c"),
        ("é@x/ü", "\u{1F600}"),
    ] {
        let user = user_and_device(requester).0;
        assert_eq!(
            hashes(&t.hasher, requester, user, id),
            (
                key_hash(&t.hasher, requester, id),
                user_hash(&t.hasher, user)
            ),
            "{requester} {id}"
        );
        let key = Text::key(requester, id);
        assert!(key.is_key(requester, id));
        assert_eq!(key, Text::new(&format!("{requester}\0{id}")));
    }
    assert!(!Text::key("u@x/a", "1").is_key("u@x", "a1"));
    assert!(!Text::key("u@x/a", "1").is_key("u@x/a", "12"));
}

#[test]
fn ids_with_nul_free_text_keep_requesters_apart() {
    let mut t = limited(10.0, 10, 10);
    t.insert("a@x/b", "c", "r".into(), Method::Get, 0.0, false)
        .unwrap();
    t.insert("a@x", "b/c", "r".into(), Method::Get, 0.0, false)
        .unwrap();
    assert_eq!(
        t.take_reply("a@x", "b/c", "r", false).unwrap().requester(),
        "a@x"
    );
    assert_eq!(t.take_reply("a@x/b", "c", "r", false).unwrap().id(), "c");
}

#[test]
fn a_forgotten_request_counts_nowhere_and_a_withheld_number_waits() {
    let mut t = PendingTable::new(Limits {
        max_per_domain: 5,
        ..limits(10.0, 10, 10)
    });
    let n = t
        .insert("u@x/a", "1", "r".into(), Method::Get, 0.0, true)
        .unwrap();
    assert_eq!(t.forget(n).map(|r| r.id().to_owned()), Some("1".into()));
    assert!(t.forget(n).is_none(), "once");
    assert_eq!((t.len(), t.of_user("u@x"), t.of_domain("x")), (0, 0, 0));
    assert!(t.expire(100.0).is_empty(), "its deadline finds nothing");
    let n = t
        .insert("u@x/a", "2", "r".into(), Method::Get, 0.0, false)
        .unwrap();
    t.take_reply("u@x/a", "2", "r", false).unwrap();
    t.release(n);
    assert!(t.withhold(n) && !t.withhold(n));
    let next = t
        .insert("u@x/a", "3", "r".into(), Method::Get, 0.0, false)
        .unwrap();
    assert_ne!(next, n, "withheld: not handed out");
    t.release(n);
    let again = t.insert("u@x/a", "4", "r".into(), Method::Get, 0.0, false);
    assert_eq!(again, Ok(n));
}
