//! The event stream (`/1.0/events`): lifecycle, operation and logging events.
//!
//! The websocket is read by a task of its own, whatever the caller does with the stream: LXD writes every event
//! to every listener, and a listener that stops reading can stall the daemon's event delivery. Events wait in an
//! unbounded queue until the caller polls; dropping the stream closes the subscription.

use futures_util::{Stream, StreamExt};
use http::Method;
use serde::{Deserialize, Serialize};
use tokio_tungstenite::tungstenite::Message;

use crate::client::{Client, Request};
use crate::error::{Error, Result};

/// One event.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct Event {
    /// `lifecycle`, `operation` or `logging`.
    #[serde(rename = "type")]
    pub kind: String,
    /// When (RFC 3339).
    pub timestamp: String,
    /// Payload: for lifecycle `{action, source, context}`, for operation the operation.
    pub metadata: serde_json::Value,
    /// Cluster member.
    pub location: String,
    /// Project.
    pub project: String,
}

impl Event {
    /// The lifecycle action (`instance-created`, `instance-exec`, ...), if this is a lifecycle event.
    pub fn action(&self) -> Option<&str> {
        self.metadata.get("action").and_then(|a| a.as_str())
    }
}

pub(crate) fn decode(
    path: &str,
    message: std::result::Result<Message, tokio_tungstenite::tungstenite::Error>,
) -> Option<Result<Event>> {
    let decoded = |r: std::result::Result<Event, serde_json::Error>| {
        r.map_err(|e| Error::Decode { path: path.to_string(), message: e.to_string() })
    };
    match message {
        Ok(Message::Text(text)) => Some(decoded(serde_json::from_str::<Event>(&text))),
        Ok(Message::Binary(data)) => Some(decoded(serde_json::from_slice::<Event>(&data))),
        Ok(_) => None,
        Err(e) => Some(Err(Error::Websocket { path: path.to_string(), message: e.to_string() })),
    }
}

impl Client {
    /// Subscribe to events of the given types (`lifecycle`, `operation`, `logging`). The subscription is live when
    /// this returns, so events of requests sent afterwards are not missed.
    ///
    /// ```no_run
    /// # async fn demo(lxd: &lxd_client::Client) -> lxd_client::Result<()> {
    /// use futures_util::StreamExt;
    /// let events = lxd.events(&["lifecycle"]).await?;
    /// futures_util::pin_mut!(events);
    /// while let Some(event) = events.next().await {
    ///     println!("{:?}", event?.action());
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn events(&self, types: &[&str]) -> Result<impl Stream<Item = Result<Event>>> {
        let mut req = Request::new(Method::GET, "/1.0/events");
        if !types.is_empty() {
            req = req.query("type", types.join(","));
        }
        let path = self.path_and_query(&req);
        let mut ws = self.websocket(&path).await?;
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<Result<Event>>();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    // The caller dropped the stream: close the subscription.
                    _ = tx.closed() => {
                        let _ = ws.close(None).await;
                        return;
                    }
                    message = ws.next() => {
                        let Some(message) = message else { return };
                        let failed = message.is_err();
                        if let Some(item) = decode(&path, message) {
                            if tx.send(item).is_err() {
                                return;
                            }
                        }
                        if failed {
                            return;
                        }
                    }
                }
            }
        });
        Ok(tokio_stream_from(rx))
    }
}

fn tokio_stream_from<T: Send + 'static>(mut rx: tokio::sync::mpsc::UnboundedReceiver<T>) -> impl Stream<Item = T> {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}
