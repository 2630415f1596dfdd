//! Redis Sentinel: `--redis redis+sentinel://[user:password@]h1:26379,h2:26379/master-name[/db][?sentinel_username=U&sentinel_password=P]`,
//! or `rediss+sentinel://…` for TLS to the Sentinels and the master.
//!
//! The redis crate can ask Sentinels for the master, but its reconnecting
//! connection (`ConnectionManager`) and pub/sub reconnect to the address they
//! were made with. So a node with a Sentinel URL runs a small forwarder on
//! 127.0.0.1 (a random port) and gives every Redis connection of the process
//! that address: each connection made through it goes to the master the
//! Sentinels name at that moment. A task asks them again every half second;
//! when the master changed (a failover), every forwarded connection is closed,
//! so every connection of the node reconnects, to the new master, and does
//! what it does after any lost connection (subscriptions, leases, and the
//! io-node's re-push of what may have been lost: see [`failovers`]).
//!
//! The URL's password and database go to the master (in the plain URL the
//! node's clients use, through the forwarder: the `AUTH` travels inside the
//! TLS connection when there is one); the Sentinels get
//! `sentinel_username` / `sentinel_password` when given. With
//! `rediss+sentinel://` the forwarder speaks TLS to the master (verified
//! against the system's roots, or the file `SSL_CERT_FILE` names, for the
//! address the Sentinels give: an IP address needs an IP entry in the
//! certificate) and the Sentinels are asked over TLS too.

use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_rustls::TlsConnector;

/// A parsed `redis+sentinel://` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentinelUrl {
    pub sentinels: Vec<String>,
    pub master: String,
    /// `user:password@` or `:password@`, as given, for the master.
    pub credentials: Option<String>,
    pub db: u32,
    /// TLS to the Sentinels and the master (`rediss+sentinel://`).
    pub tls: bool,
    /// `user:password` (user possibly empty) for the Sentinels, from
    /// `sentinel_username` and `sentinel_password`.
    pub sentinel_credentials: Option<String>,
}

/// The scheme of a Sentinel URL.
pub const SCHEME: &str = "redis+sentinel://";

/// The scheme of a Sentinel URL with TLS.
pub const TLS_SCHEME: &str = "rediss+sentinel://";

/// Reads a Sentinel URL; `None` if `url` is not one.
pub fn parse(url: &str) -> Option<Result<SentinelUrl, String>> {
    if let Some(rest) = url.strip_prefix(SCHEME) {
        return Some(parse_rest(rest, false));
    }
    let rest = url.strip_prefix(TLS_SCHEME)?;
    Some(parse_rest(rest, true))
}

fn parse_rest(rest: &str, tls: bool) -> Result<SentinelUrl, String> {
    let (rest, query) = match rest.split_once('?') {
        Some((rest, query)) => (rest, query),
        None => (rest, ""),
    };
    let mut sentinel_user = String::new();
    let mut sentinel_password = None;
    for (key, value) in url::form_urlencoded::parse(query.as_bytes()) {
        match &*key {
            "sentinel_username" => sentinel_user = value.into_owned(),
            "sentinel_password" => sentinel_password = Some(value.into_owned()),
            other => return Err(format!("unknown Sentinel URL parameter {other:?}")),
        }
    }
    let sentinel_credentials = sentinel_password.map(|password| {
        let user: String = url::form_urlencoded::byte_serialize(sentinel_user.as_bytes()).collect();
        let password: String = url::form_urlencoded::byte_serialize(password.as_bytes()).collect();
        format!("{user}:{password}")
    });
    let (credentials, rest) = match rest.rsplit_once('@') {
        Some((credentials, rest)) => (Some(credentials.to_owned()), rest),
        None => (None, rest),
    };
    let (hosts, path) = rest
        .split_once('/')
        .ok_or("a Sentinel URL names the master: redis+sentinel://host:port,.../master-name")?;
    let sentinels: Vec<String> = hosts
        .split(',')
        .filter(|host| !host.is_empty())
        .map(|host| {
            if host.contains(':') {
                host.to_owned()
            } else {
                format!("{host}:26379")
            }
        })
        .collect();
    if sentinels.is_empty() {
        return Err("no Sentinel address".into());
    }
    let (master, db) = match path.split_once('/') {
        Some((master, db)) => (
            master,
            db.parse::<u32>()
                .map_err(|_| format!("{db:?} is not a database number"))?,
        ),
        None => (path, 0),
    };
    if master.is_empty() {
        return Err("no master name".into());
    }
    Ok(SentinelUrl {
        sentinels,
        master: master.to_owned(),
        credentials,
        db,
        tls,
        sentinel_credentials,
    })
}

/// Asks the Sentinels, in turn, for the master's address.
async fn ask(url: &SentinelUrl) -> Option<String> {
    let scheme = if url.tls { "rediss" } else { "redis" };
    let credentials = url
        .sentinel_credentials
        .as_deref()
        .map(|c| format!("{c}@"))
        .unwrap_or_default();
    for sentinel in &url.sentinels {
        let Ok(client) = redis::Client::open(format!("{scheme}://{credentials}{sentinel}")) else {
            continue;
        };
        let asked = tokio::time::timeout(Duration::from_secs(1), async {
            let mut connection = client.get_multiplexed_async_connection().await?;
            redis::cmd("SENTINEL")
                .arg("get-master-addr-by-name")
                .arg(&url.master)
                .query_async::<Option<(String, u16)>>(&mut connection)
                .await
        })
        .await;
        if let Ok(Ok(Some((host, port)))) = asked {
            return Some(format!("{host}:{port}"));
        }
    }
    None
}

/// The plain URL the node's Redis clients use for a Sentinel URL: the
/// forwarder's, started (inside a Tokio runtime) on the first call for that
/// URL and shared by later ones.
pub fn local_url(url: &str, parsed: &SentinelUrl) -> std::io::Result<String> {
    static STARTED: std::sync::Mutex<Vec<(String, String)>> = std::sync::Mutex::new(Vec::new());
    let mut started = STARTED
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some((_, local)) = started.iter().find(|(known, _)| known == url) {
        return Ok(local.clone());
    }
    let local = start(parsed)?;
    started.push((url.to_owned(), local.clone()));
    Ok(local)
}

fn start(url: &SentinelUrl) -> std::io::Result<String> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    listener.set_nonblocking(true)?;
    let local = listener.local_addr()?;
    let listener = TcpListener::from_std(listener)?;
    let (master_tx, master_rx) = watch::channel::<Option<String>>(None);
    let tls = if url.tls {
        Some(tls_connector()?)
    } else {
        None
    };
    tokio::spawn(watch_master(url.clone(), master_tx));
    tokio::spawn(accept(listener, master_rx, tls));
    let credentials = url
        .credentials
        .as_deref()
        .map(|c| format!("{c}@"))
        .unwrap_or_default();
    tracing::info!(sentinels = ?url.sentinels, master = %url.master, forwarder = %local, "Redis through Sentinel");
    Ok(format!("redis://{credentials}{local}/{}", url.db))
}

/// Keeps the master's address current; a change closes every forwarded
/// connection (their tasks watch the same channel).
async fn watch_master(url: SentinelUrl, master: watch::Sender<Option<String>>) {
    let mut unknown_logged = false;
    loop {
        match ask(&url).await {
            Some(address) => {
                unknown_logged = false;
                let changed = master.borrow().as_deref() != Some(address.as_str());
                if changed {
                    let first = master.borrow().is_none();
                    if !first {
                        crate::store::count_failover();
                    }
                    tracing::info!(master = %address, "Sentinels name the Redis master");
                    master.send_replace(Some(address));
                }
            }
            None if !unknown_logged => {
                unknown_logged = true;
                tracing::warn!(sentinels = ?url.sentinels, "no Sentinel answers with the master; asking again");
            }
            None => {}
        }
        if master.is_closed() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The TLS client of the forwarder's connections to the master: the
/// system's roots (or `SSL_CERT_FILE`'s).
fn tls_connector() -> std::io::Result<TlsConnector> {
    let mut roots = tokio_rustls::rustls::RootCertStore::empty();
    let found = rustls_native_certs::load_native_certs();
    for error in &found.errors {
        tracing::warn!(%error, "a trusted root certificate could not be read");
    }
    let (added, _) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        return Err(std::io::Error::other(
            "no trusted root certificate for TLS to Redis (set SSL_CERT_FILE)",
        ));
    }
    let config = tokio_rustls::rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(TlsConnector::from(std::sync::Arc::new(config)))
}

async fn accept(
    listener: TcpListener,
    master: watch::Receiver<Option<String>>,
    tls: Option<TlsConnector>,
) {
    loop {
        let Ok((inbound, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let _ = inbound.set_nodelay(true);
        tokio::spawn(forward(inbound, master.clone(), tls.clone()));
    }
}

/// Relays one connection to the current master (over TLS when `tls`)
/// until either side closes or the master changes.
async fn forward(
    mut inbound: TcpStream,
    mut master: watch::Receiver<Option<String>>,
    tls: Option<TlsConnector>,
) {
    // Before the first answer from the Sentinels, wait a little for one.
    let address = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            if let Some(address) = master.borrow_and_update().clone() {
                return Some(address);
            }
            if master.changed().await.is_err() {
                return None;
            }
        }
    })
    .await
    .ok()
    .flatten();
    let Some(address) = address else { return };
    let outbound = tokio::time::timeout(Duration::from_secs(2), TcpStream::connect(&address)).await;
    let Ok(Ok(outbound)) = outbound else {
        return;
    };
    let _ = outbound.set_nodelay(true);
    let changed = async {
        loop {
            if master.changed().await.is_err() {
                return;
            }
            if master.borrow().as_deref() != Some(address.as_str()) {
                return;
            }
        }
    };
    match tls {
        None => {
            let mut outbound = outbound;
            tokio::select! {
                _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                () = changed => {}
            }
        }
        Some(connector) => {
            let host = address
                .rsplit_once(':')
                .map_or(address.as_str(), |(host, _)| host)
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned();
            let Ok(name) = tokio_rustls::rustls::pki_types::ServerName::try_from(host) else {
                return;
            };
            let handshake =
                tokio::time::timeout(Duration::from_secs(5), connector.connect(name, outbound))
                    .await;
            let mut outbound = match handshake {
                Ok(Ok(stream)) => stream,
                Ok(Err(error)) => {
                    tracing::warn!(%error, master = %address, "TLS to the Redis master failed");
                    return;
                }
                Err(_) => return,
            };
            tokio::select! {
                _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                () = changed => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sentinel_urls_are_read() {
        let url = parse("redis+sentinel://a:1,b/mymaster").unwrap().unwrap();
        assert_eq!(url.sentinels, ["a:1", "b:26379"]);
        assert_eq!(url.master, "mymaster");
        assert_eq!((url.credentials, url.db), (None, 0));
        let url = parse("redis+sentinel://:secret@a:1/m/3").unwrap().unwrap();
        assert_eq!(url.credentials.as_deref(), Some(":secret"));
        assert_eq!(url.db, 3);
        assert!(parse("redis://a:1").is_none());
        assert!(parse("redis+sentinel://a:1").unwrap().is_err());
        assert!(parse("redis+sentinel:///m").unwrap().is_err());
        assert!(parse("redis+sentinel://a:1/").unwrap().is_err());
        assert!(parse("redis+sentinel://a:1/m/x").unwrap().is_err());
        let url = parse("rediss+sentinel://u:p@a:1,b:2/m/1?sentinel_password=s%40cret")
            .unwrap()
            .unwrap();
        assert!(url.tls);
        assert_eq!(url.credentials.as_deref(), Some("u:p"));
        assert_eq!(url.sentinel_credentials.as_deref(), Some(":s%40cret"));
        assert_eq!((url.master.as_str(), url.db), ("m", 1));
        assert!(parse("redis+sentinel://a:1/m?bogus=1").unwrap().is_err());
        assert!(!parse("redis+sentinel://a:1/m").unwrap().unwrap().tls);
    }
}
