//! Faults the benchmark injects, and the loopback proxy that makes the network ones.
//!
//! `redis-restart` and `broker-drop` put a TCP proxy between the strategy and the
//! service (only the strategy's connections: the benchmark's observer and readers talk
//! to Redis directly, so the measurement itself does not fail). At the fault the proxy
//! cuts every connection and refuses new ones for the fault's duration — what a restart
//! or a broker failover looks like to a client; Redis keeps its data, as a Redis with
//! persistence would. `daemon-crash` is done by the benchmark itself: the strategy's
//! tasks are aborted at whatever await point they are in, with no drain, and a fresh
//! instance is started after the pause, as a supervisor would restart a killed process.

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::broadcast;

use crate::error::{Error, Result};

/// The fault injected during a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    None,
    /// Redis connections cut and refused for the fault's duration.
    RedisRestart,
    /// The strategy's process killed (no drain) and restarted after the pause.
    DaemonCrash,
    /// RabbitMQ connections cut and refused for the fault's duration (mq only).
    BrokerDrop,
    /// Redis loses the variant's data at once: every key of the variant — rows,
    /// tombstones, markers, the binlog checkpoint, the write-back queue — is deleted, as a
    /// restart without persistence would leave it (the bench shares Redis, so it does not
    /// flush other data); or, with `--fault-command`, that command restarts the Redis
    /// process itself.
    RedisDataLoss,
}

impl Fault {
    pub const ALL: [Fault; 5] = [
        Fault::None,
        Fault::RedisRestart,
        Fault::DaemonCrash,
        Fault::BrokerDrop,
        Fault::RedisDataLoss,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Fault::None => "none",
            Fault::RedisRestart => "redis-restart",
            Fault::DaemonCrash => "daemon-crash",
            Fault::BrokerDrop => "broker-drop",
            Fault::RedisDataLoss => "redis-data-loss",
        }
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Fault {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Fault, String> {
        Fault::ALL
            .into_iter()
            .find(|f| f.name() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = Fault::ALL.iter().map(|f| f.name()).collect();
                format!("unknown fault {s:?}; faults: {}", names.join(", "))
            })
    }
}

/// A loopback TCP proxy that can cut its connections and refuse new ones.
pub struct Proxy {
    pub addr: SocketAddr,
    cut: broadcast::Sender<()>,
    refusing: Arc<AtomicBool>,
    accept: tokio::task::JoinHandle<()>,
}

impl Proxy {
    /// Listens on a free loopback port and forwards to `target`.
    pub async fn start(target: SocketAddr) -> Result<Proxy> {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|source| Error::Io {
                context: "starting the fault proxy on 127.0.0.1".to_owned(),
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| Error::Io {
            context: "starting the fault proxy".to_owned(),
            source,
        })?;
        let (cut, _) = broadcast::channel(1);
        let refusing = Arc::new(AtomicBool::new(false));
        let accept = tokio::spawn(accept_loop(listener, target, cut.clone(), refusing.clone()));
        Ok(Proxy {
            addr,
            cut,
            refusing,
            accept,
        })
    }

    /// Cuts every open connection and refuses new ones until [`Proxy::restore`].
    pub fn cut(&self) {
        self.refusing.store(true, Ordering::SeqCst);
        let _ = self.cut.send(());
    }

    pub fn restore(&self) {
        self.refusing.store(false, Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
        let _ = self.cut.send(());
    }
}

async fn accept_loop(
    listener: TcpListener,
    target: SocketAddr,
    cut: broadcast::Sender<()>,
    refusing: Arc<AtomicBool>,
) {
    loop {
        let Ok((client, _)) = listener.accept().await else {
            continue;
        };
        if refusing.load(Ordering::SeqCst) {
            // Closing at once is what a client of a restarting server sees.
            drop(client);
            continue;
        }
        let mut cut = cut.subscribe();
        tokio::spawn(async move {
            let Ok(mut server) = TcpStream::connect(target).await else {
                return;
            };
            // Without TCP_NODELAY, Nagle's algorithm holds a small frame (an AMQP confirm,
            // a Redis reply) until the previous one is acknowledged: an mq:outbox write
            // took 92 ms at the median through the proxy instead of 8 ms.
            let _ = server.set_nodelay(true);
            let _ = client.set_nodelay(true);
            let mut client = client;
            tokio::select! {
                _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                _ = cut.recv() => {}
            }
        });
    }
}

/// `scheme://[user[:password]@]host[:port][/path]` split around its `host:port`.
struct Authority<'a> {
    before: &'a str,
    host: &'a str,
    port: Option<u16>,
    after: &'a str,
}

fn authority(url: &str) -> Option<Authority<'_>> {
    let scheme_end = url.find("://")? + 3;
    let rest = &url[scheme_end..];
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let userinfo = rest[..end].rfind('@').map_or(0, |i| i + 1);
    let hostport = &rest[userinfo..end];
    let (host, port) = match hostport.find(']') {
        // `[v6]` or `[v6]:port`
        Some(close) => (&hostport[..=close], hostport[close + 1..].strip_prefix(':')),
        None => match hostport.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (hostport, None),
        },
    };
    let port = port.map(str::parse::<u16>).transpose().ok()?;
    Some(Authority {
        before: &url[..scheme_end + userinfo],
        host,
        port,
        after: &rest[end..],
    })
}

/// The address a service URL points at (`default_port` when it names none).
pub async fn service_addr(url: &str, default_port: u16) -> Result<SocketAddr> {
    let shown = crate::redact::redact_url(url);
    let a = authority(url)
        .ok_or_else(|| Error::Config(vec![format!("{shown}: cannot find host:port in the URL")]))?;
    let host = a.host.trim_start_matches('[').trim_end_matches(']');
    tokio::net::lookup_host((host, a.port.unwrap_or(default_port)))
        .await
        .ok()
        .and_then(|mut addrs| addrs.next())
        .ok_or_else(|| Error::Unreachable {
            service: "fault proxy target",
            url: shown.clone(),
            reason: format!("cannot resolve {host}"),
        })
}

/// `url` with its `host:port` replaced by `addr`.
pub fn via(url: &str, addr: SocketAddr) -> String {
    match authority(url) {
        Some(a) => format!("{}{addr}{}", a.before, a.after),
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_rewritten_around_their_address() {
        let proxy: SocketAddr = "127.0.0.1:40001".parse().unwrap();
        assert_eq!(
            via("amqp://guest:guest@127.0.0.1:5672/%2f", proxy),
            "amqp://guest:guest@127.0.0.1:40001/%2f"
        );
        assert_eq!(
            via("redis://localhost/2", proxy),
            "redis://127.0.0.1:40001/2"
        );
        assert_eq!(
            via("redis://:p@ss@h:6380", proxy),
            "redis://:p@ss@127.0.0.1:40001"
        );
        let a = authority("redis://127.0.0.1:6380/0").unwrap();
        assert_eq!((a.host, a.port), ("127.0.0.1", Some(6380)));
        let a = authority("redis://[::1]/0").unwrap();
        assert_eq!((a.host, a.port), ("[::1]", None));
    }

    #[test]
    fn fault_names_round_trip() {
        for fault in Fault::ALL {
            assert_eq!(fault.name().parse::<Fault>(), Ok(fault));
        }
        assert!(
            "meteor"
                .parse::<Fault>()
                .unwrap_err()
                .contains("redis-restart")
        );
    }

    #[tokio::test]
    async fn the_proxy_forwards_cuts_and_refuses() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let echo = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let target = echo.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let (mut s, _) = echo.accept().await.unwrap();
                tokio::spawn(async move {
                    let mut buf = [0u8; 64];
                    while let Ok(n) = s.read(&mut buf).await {
                        if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
        let proxy = Proxy::start(target).await.unwrap();
        let mut c = TcpStream::connect(proxy.addr).await.unwrap();
        c.write_all(b"ping").await.unwrap();
        let mut buf = [0u8; 4];
        c.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"ping");

        proxy.cut();
        let mut rest = Vec::new();
        assert_eq!(
            c.read_to_end(&mut rest).await.unwrap_or(0),
            0,
            "cut closes the stream"
        );
        let mut refused = TcpStream::connect(proxy.addr).await.unwrap();
        assert_eq!(
            refused.read(&mut buf).await.unwrap_or(0),
            0,
            "new connections are closed"
        );

        proxy.restore();
        let mut again = TcpStream::connect(proxy.addr).await.unwrap();
        again.write_all(b"pong").await.unwrap();
        again.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"pong");
    }
}
