//! The event stream (`/1.0/events`): lifecycle, operation and logging events.

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

impl Client {
    /// Subscribe to events of the given types (`lifecycle`, `operation`, `logging`). The subscription is live when
    /// this returns, so events of requests sent afterwards are not missed.
    pub async fn events(&self, types: &[&str]) -> Result<impl Stream<Item = Result<Event>>> {
        let mut req = Request::new(Method::GET, "/1.0/events");
        if !types.is_empty() {
            req = req.query("type", types.join(","));
        }
        let path = self.path_and_query(&req);
        let ws = self.websocket(&path).await?;
        Ok(ws.filter_map(move |message| {
            let path = path.clone();
            async move {
                match message {
                    Ok(Message::Text(text)) => {
                        Some(serde_json::from_str::<Event>(&text).map_err(|e| Error::Decode { path, message: e.to_string() }))
                    }
                    Ok(Message::Binary(data)) => {
                        Some(serde_json::from_slice::<Event>(&data).map_err(|e| Error::Decode { path, message: e.to_string() }))
                    }
                    Ok(_) => None,
                    Err(e) => Some(Err(Error::Websocket { path, message: e.to_string() })),
                }
            }
        }))
    }
}
