//! [`Gate`]: a TCP relay between a client and the server for the stream management tests.
//! [`Gate::close`] resets every connection open now (the server sees the connection drop,
//! without a stream end: with `smacks` the session hibernates) and holds new ones: the
//! client's reconnects wait, unanswered, with nothing reaching the server.
//! [`Gate::open`] lets them through, so that the client's next stream asks to resume the
//! session (tokio-xmpp's stanza stream does that by itself). [`Gate::stall`] holds what
//! the server sends to the client (it is read, so the server's writes succeed, and never
//! delivered if the gate closes meanwhile): stanzas the client never saw nor acknowledged,
//! which mod_smacks keeps for a resumption or bounces when the hibernation ends.
//!
//! Unlike [`super::traffic::Relay`], whose cut lets the client reconnect at once, the gate
//! keeps the client away for as long as a test needs (a hibernation, or its end).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::traffic::reset;

/// Whether connections pass, and how many times the gate closed (a connection lives in
/// one such epoch).
#[derive(Clone, Copy, Debug)]
struct State {
    open: bool,
    stalled: bool,
    closings: u64,
}

/// A TCP relay on 127.0.0.1 to a server, whose connections can be reset and held.
pub struct Gate {
    /// `127.0.0.1:<port>`: give this to the client instead of the server's address.
    pub addr: String,
    state: watch::Sender<State>,
    passed: Arc<AtomicUsize>,
    accept: JoinHandle<()>,
}

impl Gate {
    /// Listens on a free port, open, relaying every connection to `upstream`.
    pub async fn start(upstream: &str) -> Gate {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the gate");
        let addr = listener.local_addr().expect("gate address").to_string();
        let (state, _) = watch::channel(State {
            open: true,
            stalled: false,
            closings: 0,
        });
        let passed = Arc::new(AtomicUsize::new(0));
        let upstream = upstream.to_string();
        let (state2, passed2) = (state.clone(), passed.clone());
        let accept = tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    continue;
                };
                let mut watch = state2.subscribe();
                let (upstream, passed) = (upstream.clone(), passed2.clone());
                tokio::spawn(async move {
                    // Held while closed (the client waits for the server's stream header).
                    let Ok(state) = watch.wait_for(|s| s.open).await.map(|s| *s) else {
                        return;
                    };
                    let Ok(server) = TcpStream::connect(&upstream).await else {
                        reset(client);
                        return;
                    };
                    passed.fetch_add(1, Ordering::SeqCst);
                    let _ = client.set_nodelay(true);
                    let _ = server.set_nodelay(true);
                    let (mut client, mut server) = (client, server);
                    let mut stall = watch.clone();
                    let closed = {
                        let (mut from_client, mut to_client) = client.split();
                        let (mut from_server, mut to_server) = server.split();
                        let up = async {
                            let _ = tokio::io::copy(&mut from_client, &mut to_server).await;
                            let _ = to_server.shutdown().await;
                        };
                        let down = async {
                            let mut buf = vec![0u8; 16 * 1024];
                            loop {
                                let n = match from_server.read(&mut buf).await {
                                    Ok(0) | Err(_) => break,
                                    Ok(n) => n,
                                };
                                // A close ends a stall too: what it held is never written.
                                let passing = stall
                                    .wait_for(|s| !s.stalled || s.closings != state.closings)
                                    .await
                                    .is_ok_and(|s| s.closings == state.closings);
                                if !passing || to_client.write_all(&buf[..n]).await.is_err() {
                                    break;
                                }
                            }
                            let _ = to_client.shutdown().await;
                        };
                        tokio::select! {
                            _ = async { tokio::join!(up, down) } => false,
                            _ = watch.wait_for(|s| s.closings != state.closings) => true,
                        }
                    };
                    if closed {
                        reset(server);
                        reset(client);
                    }
                });
            }
        });
        Gate {
            addr,
            state,
            passed,
            accept,
        }
    }

    /// Resets every connection open now, both ways (RST, nothing more written: what a
    /// stall held is lost), and holds the new ones until [`Gate::open`].
    pub fn close(&self) {
        self.state.send_modify(|s| {
            s.open = false;
            s.stalled = false;
            s.closings += 1;
        });
    }

    /// Lets held and new connections through.
    pub fn open(&self) {
        self.state.send_modify(|s| s.open = true);
    }

    /// Holds what the server sends to the client from now on (until [`Gate::close`]).
    pub fn stall(&self) {
        self.state.send_modify(|s| s.stalled = true);
    }

    /// Connections relayed to the server so far (the first login, then one per reconnect
    /// that got through).
    pub fn passed(&self) -> usize {
        self.passed.load(Ordering::SeqCst)
    }
}

impl Drop for Gate {
    fn drop(&mut self) {
        self.accept.abort();
    }
}
