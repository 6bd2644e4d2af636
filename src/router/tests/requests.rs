//! Forwarding a user's get/set: to which address, and the refusals that need no table.

use super::*;

#[test]
fn request_is_forwarded_from_the_jat_address_as_in_the_original_readme() {
    let mut p = proxy();
    online(&mut p, "a");
    for to in [H, "proxy.example/x", "node@proxy.example"] {
        let v = forwarded(request(&mut p, R, to, to));
        assert_eq!(v, ("service@example.org/a".into(), R_JAT.into()));
    }
    assert_eq!(p.pending.len(), 3);
}

#[test]
fn no_resource_is_service_unavailable() {
    let mut p = proxy();
    assert_eq!(request(&mut p, R, "1", H), Verdict::Error(NO_RESOURCE));
    assert_eq!(NO_RESOURCE.condition, "service-unavailable");
    assert!(p.pending.is_empty());
}

#[test]
fn error_stanzas_are_never_answered() {
    let mut p = proxy();
    for name in ["iq", "message", "presence"] {
        for from in [R, "service@example.org/a"] {
            for to in [H, "proxy.example/u@x/y"] {
                let v = p.route(head(name, Some("error"), from, to, "e"), 0.0);
                assert!(
                    !matches!(v, Verdict::Error(_)),
                    "{name} from {from} to {to}: {v:?}"
                );
            }
        }
    }
}

#[test]
fn iq_without_id_or_from() {
    let mut p = proxy();
    online(&mut p, "a");
    let mut h = head("iq", Some("get"), R, H, "");
    h.id = None;
    assert_eq!(p.route(h, 0.0), Verdict::Error(NO_ID));
    h.from = None;
    assert!(matches!(p.route(h, 0.0), Verdict::Drop { .. }));
}

#[test]
fn overlong_requester_gets_a_token_that_maps_back() {
    let mut p = proxy();
    online(&mut p, "a");
    let long = format!("user@example.org/{}", "r".repeat(1023));
    let (_, from) = forwarded(request(&mut p, &long, "1", H));
    let res = from.strip_prefix("proxy.example/").unwrap();
    assert!(res.starts_with('@') && res.len() < 64);
    assert_eq!(
        delivered(reply(&mut p, "a", "result", &from, "1")),
        (long, H.into())
    );
}

#[test]
fn base64_mode_round_trips() {
    let mut p = Proxy::new(config(|o| o.jat = Some("base64".into())));
    online(&mut p, "a");
    let (_, from) = forwarded(request(&mut p, R, "1", H));
    assert_eq!(from, "proxy.example/dXNlckBleGFtcGxlLm9yZy9hYmM");
    assert_eq!(
        delivered(reply(&mut p, "a", "result", &from, "1")),
        (R.into(), H.into())
    );
}
