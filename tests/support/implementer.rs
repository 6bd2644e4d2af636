//! An implementing client for tests: one resource of the target account, running as a
//! tokio task. It approves the proxy's subscription (or, [`Implementer::refuses_subscriptions`],
//! answers every subscription request `unsubscribed`, as Smack 4.2+ and so Jicofo do), answers proxied requests with the
//! configured [`Behaviour`], and records every exchange so tests can look at the exact
//! stanzas it saw. An [`Inbox`] waits for what else it received (messages, answers to its
//! own requests); [`LateAnswers`] answers a silent one's requests late.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::{sleep, timeout, Instant};
use tokio_xmpp::jid::{FullJid, Jid};
use tokio_xmpp::minidom::rxml::xml_ncname;
use tokio_xmpp::minidom::Element;
use tokio_xmpp::parsers::iq::Iq;
use tokio_xmpp::parsers::presence::{Presence, Type as PresenceType};
use tokio_xmpp::parsers::stanza_error::StanzaError;
use tokio_xmpp::Stanza;

use super::client::{jid, xml, Xmpp};

/// Namespace of the echo payload.
pub const ECHO_NS: &str = "urn:example:client-proxy-test";

/// Namespace of XEP-0115 entity capabilities (`<c/>` in presence).
pub const CAPS_NS: &str = "http://jabber.org/protocol/caps";

/// The caps node Jicofo advertises.
pub const JICOFO_NODE: &str = "http://jitsi.org/jicofo";

/// `<c xmlns=CAPS_NS hash='sha-1' node=node ver='...'/>`, as a client advertising XEP-0115
/// caps sends it in each available presence (the ver is any well-formed hash: the module
/// reads only the node).
pub fn caps_element(node: &str) -> Element {
    Element::builder("c", CAPS_NS)
        .attr(xml_ncname!("hash").to_owned(), "sha-1")
        .attr(xml_ncname!("node").to_owned(), node)
        .attr(
            xml_ncname!("ver").to_owned(),
            "q07IKJEyjvHSyhy//CH0CxmKi8w=",
        )
        .build()
}

/// An available presence with this priority and, when given, a caps node.
pub fn available(priority: Option<i8>, caps: Option<&str>) -> Presence {
    let mut p = Presence::available();
    if let Some(prio) = priority {
        p = p.with_priority(prio);
    }
    if let Some(node) = caps {
        p = p.with_payloads(vec![caps_element(node)]);
    }
    p
}

/// How the implementing client answers requests.
#[derive(Clone, Debug)]
pub enum Behaviour {
    /// A result with `<echo xmlns=ECHO_NS resource='..' jid='..'>` around the request payload.
    Echo,
    /// An error with this `<error/>` element (type, condition, text, app-specific child).
    Error(Element),
    /// No answer at all.
    Silent,
    /// An error `service-unavailable` (cancel) to every request, as an ordinary client
    /// logged in to the target account answers what it does not implement ([`declined`]).
    Decline,
}

/// `<error type='cancel'><service-unavailable/></error>`: what [`Behaviour::Decline`]
/// answers.
pub fn decline_error() -> Element {
    xml("<error xmlns='jabber:client' type='cancel'>\
         <service-unavailable xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error>")
}

/// `<error type='modify'><bad-request/><text>nope</text><oops xmlns='urn:example:app'/></error>`.
pub fn app_error() -> Element {
    xml("<error xmlns='jabber:client' type='modify'>\
         <bad-request xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/>\
         <text xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'>nope</text>\
         <oops xmlns='urn:example:app'/></error>")
}

/// One request as the implementing client received it, and what it answered.
#[derive(Clone, Debug)]
pub struct Exchange {
    /// The request exactly as received.
    pub request: Iq,
    /// The answer sent (None when silent).
    pub reply: Option<Iq>,
    /// Which login of this implementer (0 for the first start, 1 after a restart, ...).
    pub session: usize,
    /// When it arrived.
    pub at: Instant,
}

/// The echo payload the implementer answers with.
pub fn echo_payload(own: &FullJid, request_payload: &Element) -> Element {
    Element::builder("echo", ECHO_NS)
        .attr(xml_ncname!("resource").to_owned(), own.resource().as_str())
        .attr(xml_ncname!("jid").to_owned(), own.to_string())
        .append(request_payload.clone())
        .build()
}

/// The resource that answered, read from an echo result.
pub fn answered_by(iq: &Iq) -> Option<String> {
    echo_of(iq)?.attr("resource").map(str::to_string)
}

/// The full JID that answered, read from an echo result.
pub fn answered_by_jid(iq: &Iq) -> Option<String> {
    echo_of(iq)?.attr("jid").map(str::to_string)
}

fn echo_of(iq: &Iq) -> Option<&Element> {
    match iq {
        Iq::Result {
            payload: Some(p), ..
        } if p.is("echo", ECHO_NS) => Some(p),
        _ => None,
    }
}

#[derive(Default)]
struct Shared {
    behaviour: Mutex<Option<Behaviour>>,
    /// The caps node its available presence advertises (None: no `<c/>`).
    caps: Mutex<Option<String>>,
    exchanges: Mutex<Vec<Exchange>>,
    others: Mutex<Vec<Stanza>>,
    approved: AtomicUsize,
    /// Answer every subscription request `unsubscribed` (Smack 4.2+, Jicofo).
    refuse: AtomicBool,
    refused: AtomicUsize,
    session: AtomicUsize,
    /// The client's counts of new sessions and of resumed streams (stream management).
    reconnects: AtomicUsize,
    resumes: AtomicUsize,
}

enum Command {
    Send(Box<Stanza>),
    /// Send available presence again (priority and caps as set now).
    Announce,
    Stop(oneshot::Sender<()>),
}

struct Running {
    commands: mpsc::UnboundedSender<Command>,
    task: JoinHandle<()>,
}

/// One resource of the target account. Create with [`Implementer::new`], configure,
/// then [`Implementer::start`].
pub struct Implementer {
    addr: String,
    user: String,
    password: String,
    /// The resource name (e.g. "a").
    pub resource: String,
    /// The component host whose subscription it approves.
    pub proxy: String,
    priority: Option<i8>,
    shared: Arc<Shared>,
    running: Option<Running>,
}

impl Implementer {
    /// `user@localhost/resource` with `password`, serving requests proxied by `proxy`.
    pub fn new(addr: &str, user: &str, password: &str, resource: &str, proxy: &str) -> Self {
        let shared = Shared::default();
        *shared.behaviour.lock().unwrap() = Some(Behaviour::Echo);
        Implementer {
            addr: addr.to_string(),
            user: user.to_string(),
            password: password.to_string(),
            resource: resource.to_string(),
            proxy: proxy.to_string(),
            priority: None,
            shared: Arc::new(shared),
            running: None,
        }
    }

    /// Sends this presence priority (next start).
    pub fn priority(mut self, priority: i8) -> Self {
        self.priority = Some(priority);
        self
    }

    /// Advertises this XEP-0115 caps node (None: no `<c/>`) in its available presence, from
    /// the next one sent (a start, a reconnect, [`Implementer::announce`]).
    pub fn set_caps(&self, node: Option<&str>) {
        *self.shared.caps.lock().unwrap() = node.map(str::to_string);
    }

    /// Builder form of [`Implementer::set_caps`].
    pub fn caps(self, node: &str) -> Self {
        self.set_caps(Some(node));
        self
    }

    /// Sends available presence again while running (with the caps node set now), as a
    /// client does when its state or features change.
    pub fn announce(&self) {
        let running = self.running.as_ref().expect("implementer not running");
        running
            .commands
            .send(Command::Announce)
            .expect("implementer task gone");
    }

    /// Answers every subscription request with `unsubscribed`, from anyone, the proxy
    /// included (as Smack 4.2+ does by default, and so Jicofo), instead of approving the
    /// proxy's. Takes effect at once, also while running.
    pub fn refuses_subscriptions(self) -> Self {
        self.shared.refuse.store(true, Ordering::SeqCst);
        self
    }

    /// Sets the behaviour (takes effect at once, also while running).
    pub fn set_behaviour(&self, behaviour: Behaviour) {
        *self.shared.behaviour.lock().unwrap() = Some(behaviour);
    }

    /// Builder form of [`Implementer::set_behaviour`].
    pub fn behaviour(self, behaviour: Behaviour) -> Self {
        self.set_behaviour(behaviour);
        self
    }

    /// The full JID this implementer logs in as.
    pub fn full_jid(&self) -> String {
        format!("{}@{}/{}", self.user, super::DOMAIN, self.resource)
    }

    /// Logs in, sends initial presence and starts answering. Returns once online.
    pub async fn start(&mut self) {
        assert!(
            self.running.is_none(),
            "{} already running",
            self.full_jid()
        );
        let mut xmpp = Xmpp::login(&self.addr, &self.full_jid(), &self.password).await;
        let caps = self.shared.caps.lock().unwrap().clone();
        xmpp.send(available(self.priority, caps.as_deref())).await;
        let (tx, rx) = mpsc::unbounded_channel();
        let shared = self.shared.clone();
        let proxy = self.proxy.clone();
        let priority = self.priority;
        let task = tokio::spawn(serve(xmpp, shared, proxy, priority, rx));
        self.running = Some(Running { commands: tx, task });
    }

    /// Sends unavailable presence and closes the stream; returns once closed (bounded).
    pub async fn stop(&mut self) {
        let Some(running) = self.running.take() else {
            return;
        };
        let (tx, rx) = oneshot::channel();
        if running.commands.send(Command::Stop(tx)).is_ok() {
            let _ = timeout(Duration::from_secs(10), rx).await;
        }
        if timeout(Duration::from_secs(5), running.task).await.is_err() {
            eprintln!("{}: implementer task did not end", self.full_jid());
        }
        self.shared.session.fetch_add(1, Ordering::SeqCst);
    }

    /// Stop, then start again (same resource, same records).
    pub async fn restart(&mut self) {
        self.stop().await;
        self.start().await;
    }

    /// Is the task running?
    pub fn is_running(&self) -> bool {
        self.running.as_ref().is_some_and(|r| !r.task.is_finished())
    }

    /// Sends any stanza from this resource (e.g. an unsolicited result).
    pub fn send(&self, stanza: impl Into<Stanza>) {
        let running = self.running.as_ref().expect("implementer not running");
        running
            .commands
            .send(Command::Send(Box::new(stanza.into())))
            .expect("implementer task gone");
    }

    /// All exchanges so far (all sessions).
    pub fn exchanges(&self) -> Vec<Exchange> {
        self.shared.exchanges.lock().unwrap().clone()
    }

    /// Number of requests received so far.
    pub fn request_count(&self) -> usize {
        self.shared.exchanges.lock().unwrap().len()
    }

    /// The exchange for this request id, if this resource got it.
    pub fn exchange(&self, id: &str) -> Option<Exchange> {
        self.shared
            .exchanges
            .lock()
            .unwrap()
            .iter()
            .find(|e| e.request.id() == id)
            .cloned()
    }

    /// Polls (bounded by `wait`) until this resource got the request `id`; its exchange.
    pub async fn wait_request(&self, id: &str, wait: Duration) -> Option<Exchange> {
        let deadline = Instant::now() + wait;
        loop {
            if let Some(ex) = self.exchange(id) {
                return Some(ex);
            }
            if Instant::now() >= deadline {
                return None;
            }
            sleep(POLL).await;
        }
    }

    /// The current session number (incremented by each stop).
    pub fn session(&self) -> usize {
        self.shared.session.load(Ordering::SeqCst)
    }

    /// Streams resumed so far (XEP-0198: the server kept the session while it hibernated).
    pub fn resumes(&self) -> usize {
        self.shared.resumes.load(Ordering::SeqCst)
    }

    /// New sessions after a lost connection (the server had ended the old one), so far.
    pub fn reconnects(&self) -> usize {
        self.shared.reconnects.load(Ordering::SeqCst)
    }

    /// How many subscription requests from the proxy it approved.
    pub fn approved(&self) -> usize {
        self.shared.approved.load(Ordering::SeqCst)
    }

    /// How many subscription requests it answered `unsubscribed`
    /// ([`Implementer::refuses_subscriptions`]).
    pub fn refused(&self) -> usize {
        self.shared.refused.load(Ordering::SeqCst)
    }

    /// Stanzas it received that were not proxied requests or subscription requests it answered.
    pub fn others(&self) -> Vec<Stanza> {
        self.shared.others.lock().unwrap().drain(..).collect()
    }
}

impl Drop for Implementer {
    fn drop(&mut self) {
        if let Some(running) = self.running.take() {
            running.task.abort();
        }
    }
}

/// The implementer's loop: answer requests, approve the proxy, obey commands.
async fn serve(
    mut xmpp: Xmpp,
    shared: Arc<Shared>,
    proxy: String,
    priority: Option<i8>,
    mut commands: mpsc::UnboundedReceiver<Command>,
) {
    let own = xmpp.jid.clone();
    let session = shared.session.load(Ordering::SeqCst);
    let mut reconnects = 0;
    loop {
        tokio::select! {
            command = commands.recv() => match command {
                Some(Command::Send(stanza)) => xmpp.send(*stanza).await,
                Some(Command::Announce) => {
                    let caps = shared.caps.lock().unwrap().clone();
                    xmpp.send(available(priority, caps.as_deref())).await;
                }
                Some(Command::Stop(done)) => {
                    xmpp.close().await;
                    let _ = done.send(());
                    return;
                }
                None => {
                    xmpp.close().await;
                    return;
                }
            },
            // Short waits, so that a reconnect is noticed soon even when nothing arrives.
            stanza = xmpp.next_stanza(Duration::from_millis(250)) => {
                shared.resumes.store(xmpp.resumes, Ordering::SeqCst);
                shared.reconnects.store(xmpp.reconnects, Ordering::SeqCst);
                if xmpp.reconnects != reconnects {
                    // tokio-xmpp reconnected (e.g. the server restarted): the new session
                    // needs presence again.
                    reconnects = xmpp.reconnects;
                    let caps = shared.caps.lock().unwrap().clone();
                    xmpp.send(available(priority, caps.as_deref())).await;
                }
                let Some(stanza) = stanza else { continue };
                handle(&mut xmpp, &own, &shared, &proxy, session, stanza).await;
            }
        }
    }
}

async fn handle(
    xmpp: &mut Xmpp,
    own: &FullJid,
    shared: &Shared,
    proxy: &str,
    session: usize,
    stanza: Stanza,
) {
    match stanza {
        Stanza::Iq(iq @ (Iq::Get { .. } | Iq::Set { .. })) => {
            let behaviour = shared
                .behaviour
                .lock()
                .unwrap()
                .clone()
                .unwrap_or(Behaviour::Echo);
            let (to, id) = (iq.from().cloned(), iq.id().to_string());
            let reply = match behaviour {
                Behaviour::Silent => None,
                Behaviour::Echo => {
                    let payload = match &iq {
                        Iq::Get { payload, .. } | Iq::Set { payload, .. } => payload,
                        _ => unreachable!(),
                    };
                    Some(Iq::Result {
                        from: None,
                        to,
                        id,
                        payload: Some(echo_payload(own, payload)),
                    })
                }
                Behaviour::Error(element) => Some(Iq::Error {
                    from: None,
                    to,
                    id,
                    error: StanzaError::try_from(element).expect("a valid <error/> element"),
                    payload: None,
                }),
                Behaviour::Decline => Some(declined_to(to, id)),
            };
            shared.exchanges.lock().unwrap().push(Exchange {
                request: iq,
                reply: reply.clone(),
                session,
                at: Instant::now(),
            });
            if let Some(reply) = reply {
                xmpp.send(reply).await;
            }
        }
        Stanza::Presence(p)
            if p.type_ == PresenceType::Subscribe && shared.refuse.load(Ordering::SeqCst) =>
        {
            // As Smack 4.2+: every subscription request refused.
            if let Some(from) = p.from.clone() {
                xmpp.send(Presence::new(PresenceType::Unsubscribed).with_to(from))
                    .await;
                shared.refused.fetch_add(1, Ordering::SeqCst);
            }
        }
        Stanza::Presence(p)
            if p.type_ == PresenceType::Subscribe
                && p.from.as_ref().is_some_and(|f| f.to_string() == proxy) =>
        {
            // The proxy asks to see our presence: approve (this is what makes routing work).
            xmpp.send(Presence::subscribed().with_to(jid(proxy))).await;
            shared.approved.fetch_add(1, Ordering::SeqCst);
        }
        other => shared.others.lock().unwrap().push(other),
    }
}

/// How often an [`Inbox`] looks at what its implementer received.
const POLL: Duration = Duration::from_millis(20);

/// The stanzas an implementing resource received besides proxied requests, in order.
/// [`Implementer::others`] hands each stanza out once; an inbox keeps the ones no wait
/// has asked for yet.
#[derive(Default)]
pub struct Inbox {
    kept: Vec<Stanza>,
}

impl Inbox {
    /// An empty inbox.
    pub fn new() -> Self {
        Inbox::default()
    }

    fn pull(&mut self, imp: &Implementer) {
        self.kept.extend(imp.others());
    }

    /// Waits (at most `wait`) for a stanza matching `pred`, and takes it out.
    pub async fn wait_for(
        &mut self,
        imp: &Implementer,
        wait: Duration,
        mut pred: impl FnMut(&Stanza) -> bool,
    ) -> Option<Stanza> {
        let deadline = Instant::now() + wait;
        loop {
            self.pull(imp);
            if let Some(pos) = self.kept.iter().position(&mut pred) {
                return Some(self.kept.remove(pos));
            }
            if Instant::now() >= deadline {
                return None;
            }
            sleep(POLL).await;
        }
    }

    /// Waits `wait`, then takes everything received (kept ones first).
    pub async fn collect(&mut self, imp: &Implementer, wait: Duration) -> Vec<Stanza> {
        sleep(wait).await;
        self.pull(imp);
        std::mem::take(&mut self.kept)
    }

    /// Forgets everything received so far.
    pub fn clear(&mut self, imp: &Implementer) {
        self.pull(imp);
        self.kept.clear();
    }
}

/// The echo result the implementer would have sent for `ex` (for a resource that is
/// `Silent` and answers later through [`Implementer::send`]).
pub fn late_echo(ex: &Exchange) -> Iq {
    let own = ex
        .request
        .to()
        .and_then(|j| j.clone().try_into_full().ok())
        .expect("the request was addressed to a full JID");
    let payload = match &ex.request {
        Iq::Get { payload, .. } | Iq::Set { payload, .. } => payload,
        other => panic!("not a request: {other:?}"),
    };
    Iq::Result {
        from: None,
        to: ex.request.from().cloned(),
        id: ex.request.id().to_string(),
        payload: Some(echo_payload(&own, payload)),
    }
}

/// The `service-unavailable` (cancel) error answering the request of `ex` (for a resource
/// that is `Silent` and declines later through [`Implementer::send`]).
pub fn declined(ex: &Exchange) -> Iq {
    declined_to(ex.request.from().cloned(), ex.request.id().to_string())
}

fn declined_to(to: Option<Jid>, id: String) -> Iq {
    Iq::Error {
        from: None,
        to,
        id,
        error: StanzaError::try_from(decline_error()).expect("a valid <error/> element"),
        payload: None,
    }
}

/// Answers the requests a `Silent` implementer received, each `delay` after it arrived
/// (call [`LateAnswers::answer_due`] often).
pub struct LateAnswers {
    delay: Duration,
    answered: HashSet<String>,
}

impl LateAnswers {
    pub fn new(delay: Duration) -> Self {
        LateAnswers {
            delay,
            answered: HashSet::new(),
        }
    }

    /// Sends the echo result of every request that has waited `delay`.
    pub fn answer_due(&mut self, imp: &Implementer) {
        for ex in imp.exchanges() {
            let id = ex.request.id().to_string();
            if ex.at.elapsed() >= self.delay && !self.answered.contains(&id) {
                imp.send(late_echo(&ex));
                self.answered.insert(id);
            }
        }
    }
}
