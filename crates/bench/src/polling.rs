//! A Socket.IO client over HTTP long-polling, just far enough to be admitted
//! to namespace `/`: what a browser does when WebSocket is unavailable or
//! before it upgrades. The connect storm measures it; nothing else needs it.

use std::net::IpAddr;
use std::time::Duration;

use anyhow::{Context, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use iocluster_protocol::engine;

/// One HTTP/1.1 connection to an Engine.IO server.
pub struct Polling {
    sender: SendRequest<Full<Bytes>>,
    authority: String,
    sid: String,
}

/// Most long-poll GETs to wait for the CONNECT (each is answered within the
/// server's ping interval at the latest).
const MAX_POLLS: usize = 10;

impl Polling {
    /// Opens an Engine.IO session over polling and connects to namespace `/`;
    /// returns once the server sent CONNECT (an error for CONNECT_ERROR).
    pub async fn connect(url: &str, local: Option<IpAddr>) -> anyhow::Result<Polling> {
        let authority = url
            .strip_prefix("http://")
            .context("polling URLs start with http://")?
            .trim_end_matches('/')
            .to_owned();
        let stream = iocluster_client::tcp_connect(&authority, local).await?;
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .context("HTTP handshake")?;
        tokio::spawn(connection);
        let mut client = Polling {
            sender,
            authority,
            sid: String::new(),
        };
        let open = client.request("GET", None).await?;
        let open = open
            .strip_prefix('0')
            .with_context(|| format!("expected the open packet, got {open:?}"))?;
        let open: serde_json::Value = serde_json::from_str(open)?;
        client.sid = open["sid"].as_str().context("no sid")?.to_owned();
        let posted = client.request("POST", Some("40")).await?;
        if posted != "ok" {
            bail!("POST answered {posted:?}");
        }
        for _ in 0..MAX_POLLS {
            let payload = client.request("GET", None).await?;
            for record in engine::split_payload(&payload) {
                if record.starts_with("40") {
                    return Ok(client);
                }
                if let Some(error) = record.strip_prefix("44") {
                    bail!("connection refused: {error}");
                }
                if record.starts_with('1') {
                    bail!("the server closed the session");
                }
            }
        }
        bail!("no CONNECT after {MAX_POLLS} polls")
    }

    async fn request(&mut self, method: &str, body: Option<&str>) -> anyhow::Result<String> {
        let mut uri = "/socket.io/?EIO=4&transport=polling".to_owned();
        if !self.sid.is_empty() {
            uri.push_str("&sid=");
            uri.push_str(&self.sid);
        }
        let request = Request::builder()
            .method(method)
            .uri(uri)
            .header(hyper::header::HOST, &self.authority)
            .header(hyper::header::CONTENT_TYPE, "text/plain;charset=UTF-8")
            .body(Full::new(Bytes::from(body.unwrap_or_default().to_owned())))?;
        let response = tokio::time::timeout(REQUEST_TIMEOUT, self.sender.send_request(request))
            .await
            .context("request timed out")??;
        let status = response.status();
        let body = response.into_body().collect().await?.to_bytes();
        let text = String::from_utf8(body.to_vec()).context("body is not UTF-8")?;
        if !status.is_success() {
            bail!("{method} answered {status}: {text}");
        }
        Ok(text)
    }
}

/// Longer than any server's ping interval: a long-poll GET is answered by then.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
