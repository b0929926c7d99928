//! A rogue peer: a test client that holds a real host's key (so the
//! daemon's pinning lets it in) and speaks the protocol, sending what it
//! likes: forged versions, paths it may not touch, clocks from the
//! future, requests for content it may not read.

use super::cluster::Cluster;
use omirr_proto::Message;
use std::fs;
use std::time::Duration;
use tokio::io::AsyncWriteExt;

type Stream = tokio_rustls::client::TlsStream<tokio::net::TcpStream>;

/// An open session to a daemon, as host `as_host`.
pub struct Rogue {
    rt: tokio::runtime::Runtime,
    stream: Stream,
    /// The daemon's greeting: its `Hello`, then what followed it.
    pub greeting: Vec<Message>,
}

/// This machine's wall clock, in nanoseconds since the epoch.
pub fn wall_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

impl Rogue {
    /// Connects to `to` as `as_host` (with `as_host`'s key from its state
    /// directory), reads the daemon's `Hello` and `Clock`, and sends its
    /// own `Hello`, a `Clock` reading `wall` and a `Forgotten` that says
    /// nothing was forgotten (the daemon's own `Forgotten` is the next
    /// message it sends, unless it refuses the clock).
    pub fn connect(cluster: &Cluster, as_host: &str, to: &str, wall: u64) -> Rogue {
        Rogue::connect_with(cluster, as_host, to, wall, omirr_proto::Hello::new(as_host))
    }

    /// As [`Rogue::connect`], greeting with `hello` (an older peer's
    /// capabilities, say).
    pub fn connect_with(
        cluster: &Cluster,
        as_host: &str,
        to: &str,
        wall: u64,
        hello: omirr_proto::Hello,
    ) -> Rogue {
        use omirr_net::tls;
        let identity =
            omirr_net::identity::load(&cluster.state_dir(as_host)).expect("the host's key");
        let text = fs::read_to_string(cluster.peers()).expect("peers");
        let (peers, _) = omirr_config::peers::Peers::parse(&text, cluster.peers()).expect("peers");
        let pins = tls::SharedPins::new(tls::PinSet::from_peers(&peers));
        let config = tls::client_config(&identity, pins, to).expect("config");
        let port = cluster.port(to);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let to = to.to_string();
        let (stream, greeting) = rt.block_on(async move {
            let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .expect("connect");
            let connector = tokio_rustls::TlsConnector::from(config);
            let mut s = connector
                .connect(tls::server_name(&to), tcp)
                .await
                .expect("TLS");
            let mut greeting = Vec::new();
            for _ in 0..2 {
                match tokio::time::timeout(
                    Duration::from_secs(10),
                    omirr_proto::read_message(&mut s),
                )
                .await
                {
                    Ok(Ok(Some(m))) => greeting.push(m),
                    other => panic!("no greeting from {to}: {other:?}"),
                }
            }
            // A Hello that lists `expiry` makes the third message its
            // `Forgotten`: nothing forgotten, nothing had from the daemon.
            let expiry = hello
                .capabilities
                .iter()
                .any(|c| c == omirr_proto::CAP_EXPIRY);
            let mut greeting_out = vec![Message::Hello(hello), Message::Clock { wall, index: 1 }];
            if expiry {
                greeting_out.push(Message::Forgotten {
                    forgot_seq: 0,
                    forgot_below: omirr_proto::Timestamp(0),
                    cursor: 0,
                    last: 0,
                });
            }
            for m in greeting_out {
                omirr_proto::write_message(&mut s, &m).await.expect("greet");
            }
            s.flush().await.expect("flush");
            (s, greeting)
        });
        Rogue {
            rt,
            stream,
            greeting,
        }
    }

    /// Sends `m`; `false` if the daemon has closed the connection.
    pub fn send(&mut self, m: &Message) -> bool {
        let frame = omirr_proto::encode(m).expect("encode");
        self.send_raw(&frame)
    }

    /// Sends bytes as they are (a hand-made frame); `false` if the daemon
    /// has closed the connection.
    pub fn send_raw(&mut self, bytes: &[u8]) -> bool {
        let s = &mut self.stream;
        self.rt
            .block_on(async move { s.write_all(bytes).await.is_ok() && s.flush().await.is_ok() })
    }

    /// The next message within `timeout`; `None` when the daemon closed
    /// the connection, or nothing came.
    pub fn recv(&mut self, timeout: Duration) -> Option<Message> {
        let s = &mut self.stream;
        self.rt.block_on(async move {
            match tokio::time::timeout(timeout, omirr_proto::read_message(s)).await {
                Ok(Ok(m)) => m,
                _ => None,
            }
        })
    }

    /// Reads messages for up to `timeout` and returns the first that
    /// `want` picks; `None` if none came before the daemon closed or the
    /// time ran out.
    pub fn recv_until(
        &mut self,
        timeout: Duration,
        mut want: impl FnMut(&Message) -> bool,
    ) -> Option<Message> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let left = deadline.checked_duration_since(std::time::Instant::now())?;
            let m = self.recv(left)?;
            if want(&m) {
                return Some(m);
            }
        }
    }
}
