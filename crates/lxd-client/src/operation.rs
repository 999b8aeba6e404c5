//! Background operations: typed view, robust waiting, cancellation.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use http::{Method, StatusCode};
use serde::{Deserialize, Serialize};

use crate::client::{decode_envelope, decode_metadata, encode, Client, Request};
use crate::error::{Error, Result};
use crate::instances::instance_path;
use crate::names::InstanceName;

/// An LXD operation (`/1.0/operations/<id>`).
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct Operation {
    /// UUID.
    pub id: String,
    /// `task`, `websocket` or `token`.
    pub class: String,
    /// What it does.
    pub description: String,
    /// Textual status.
    pub status: String,
    /// 100 created, 103 running, 200 success, 400 failure, 401 cancelled.
    pub status_code: i64,
    /// Affected objects by kind.
    pub resources: Option<HashMap<String, Vec<String>>>,
    /// Operation-specific payload (exec: `fds`, `return`, `output`).
    pub metadata: Option<serde_json::Value>,
    /// Whether `DELETE` cancels it.
    pub may_cancel: bool,
    /// Error message when failed.
    pub err: String,
    /// Cluster member running it.
    pub location: String,
}

impl Operation {
    /// Finished (success, failure or cancelled).
    pub fn is_final(&self) -> bool {
        self.status_code >= 200
    }

    /// Finished successfully.
    pub fn is_success(&self) -> bool {
        self.status_code == 200
    }

    /// Turn a finished operation into `Ok` on success or [`Error::OperationFailed`].
    pub fn into_result(self) -> Result<Operation> {
        if self.status_code >= 400 {
            Err(Error::OperationFailed { id: self.id, status_code: self.status_code, message: self.err })
        } else {
            Ok(self)
        }
    }
}

/// How one `/wait` answer is to be read.
#[derive(Debug)]
pub(crate) enum WaitOutcome {
    /// Final: success or failure (already mapped).
    Done(Operation),
    /// Still running after the server-side timeout.
    Running(Operation),
}

/// Read one `/wait` answer. Newer daemons answer HTTP 200 before blocking, so a failure can arrive as an error
/// body with status 200: the body's `type` decides, never the status alone.
pub(crate) fn interpret_wait(status: StatusCode, path: &str, body: &[u8]) -> Result<WaitOutcome> {
    let envelope = decode_envelope(status, path, body)?;
    let operation: Operation = decode_metadata(path, envelope.metadata)?;
    if operation.status_code < 200 {
        Ok(WaitOutcome::Running(operation))
    } else {
        operation.into_result().map(WaitOutcome::Done)
    }
}

impl Client {
    /// `GET /1.0/operations/<id>`.
    pub async fn operation(&self, id: &str) -> Result<Operation> {
        self.get(&format!("/1.0/operations/{}", encode(id))).await
    }

    /// List operation URLs.
    pub async fn operations(&self) -> Result<Vec<Operation>> {
        let map: HashMap<String, Vec<Operation>> =
            self.sync(Request::new(Method::GET, "/1.0/operations").query("recursion", "1")).await?;
        Ok(map.into_values().flatten().collect())
    }

    /// Wait until the operation finishes, at most `timeout`. Success gives the final operation; failure gives
    /// [`Error::OperationFailed`]; running past the timeout gives [`Error::OperationTimeout`] (the operation keeps
    /// running: wait again or [`Client::cancel_operation`]).
    ///
    /// ```no_run
    /// # async fn demo(lxd: &lxd_client::Client, request: &lxd_client::CreateInstance) -> lxd_client::Result<()> {
    /// use std::time::Duration;
    /// let operation = lxd.create_instance_operation(request).await?;
    /// let done = lxd.wait_operation(&operation.id, Duration::from_secs(300)).await?;
    /// assert!(done.is_success());
    /// # Ok(()) }
    /// ```
    pub async fn wait_operation(&self, id: &str, timeout: Duration) -> Result<Operation> {
        let deadline = Instant::now() + timeout;
        let path = format!("/1.0/operations/{}/wait", encode(id));
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            // The server-side wait is bounded in whole seconds; at least 1 so we never spin.
            let server_wait = left.as_secs().clamp(1, 60);
            let req = Request::new(Method::GET, path.clone())
                .query("timeout", server_wait.to_string())
                .timeout(Duration::from_secs(server_wait) + Duration::from_secs(15));
            let response = self.send_raw(req).await?;
            let status = response.status();
            let body =
                self.read_body(response.into_body(), "GET", &path, || format!("the answer to GET {path}")).await?;
            match interpret_wait(status, &path, &body)? {
                WaitOutcome::Done(operation) => return Ok(operation),
                WaitOutcome::Running(op) if Instant::now() >= deadline => {
                    tracing::debug!(id, status = op.status_code, "operation still running at the deadline");
                    return Err(Error::OperationTimeout { id: id.to_string(), after: timeout });
                }
                WaitOutcome::Running(op) => tracing::trace!(id, status = op.status_code, "operation still running"),
            }
        }
    }

    /// Wait (at most `timeout` in all) until no background task operation (create, start, stop, snapshot, ...)
    /// is running on `instance`. A client killed mid-request leaves its operation running in the daemon; acting on
    /// the instance meanwhile fails with "Instance is busy running a ... operation". Websocket operations (exec)
    /// are not waited for: they can legitimately run for hours.
    pub async fn wait_instance_idle(&self, instance: &InstanceName, timeout: Duration) -> Result<()> {
        self.wait_instance_tasks(instance, timeout).await.map(|_| ())
    }

    /// [`Client::wait_instance_idle`]; `true` when there was an operation to wait for.
    pub(crate) async fn wait_instance_tasks(&self, instance: &InstanceName, timeout: Duration) -> Result<bool> {
        let deadline = Instant::now() + timeout;
        let url = instance_path(instance);
        let mut waited = false;
        loop {
            let busy: Vec<Operation> = self
                .operations()
                .await?
                .into_iter()
                .filter(|op| op.status_code < 200 && op.class == "task")
                .filter(|op| {
                    op.resources
                        .as_ref()
                        .map(|r| r.values().flatten().any(|u| u.split('?').next() == Some(url.as_str())))
                        .unwrap_or(false)
                })
                .collect();
            let Some(op) = busy.into_iter().next() else { return Ok(waited) };
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(Error::OperationTimeout { id: op.id, after: timeout });
            }
            tracing::debug!(%instance, operation = %op.id, description = %op.description, "waiting for a running operation");
            waited = true;
            match self.wait_operation(&op.id, left).await {
                // Its outcome belongs to whoever started it; we only wait for the instance to be free.
                Ok(_) | Err(Error::OperationFailed { .. }) | Err(Error::NotFound { .. }) => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// Wait for an operation through the event stream instead of `/wait`: subscribe to `operation` events first,
    /// then read the operation once (so a finish that happened before the subscription is not missed), then
    /// follow its events. Same results as [`Client::wait_operation`]. Useful with many operations in flight
    /// (one event stream instead of one long poll each) and on daemons whose `/wait` misbehaves.
    pub async fn wait_operation_events(&self, id: &str, timeout: Duration) -> Result<Operation> {
        use futures_util::StreamExt;
        let run = async {
            let events = self.events(&["operation"]).await?;
            futures_util::pin_mut!(events);
            let current = self.operation(id).await?;
            if current.is_final() {
                return current.into_result();
            }
            while let Some(event) = events.next().await {
                let event = event?;
                let Ok(operation) = serde_json::from_value::<Operation>(event.metadata) else { continue };
                if operation.id == id && operation.is_final() {
                    return operation.into_result();
                }
            }
            Err(Error::Websocket {
                path: "/1.0/events".into(),
                message: "the event stream ended before the operation".into(),
            })
        };
        match tokio::time::timeout(timeout, run).await {
            Ok(result) => result,
            Err(_) => Err(Error::OperationTimeout { id: id.to_string(), after: timeout }),
        }
    }

    /// Cancel an operation (`DELETE /1.0/operations/<id>`); only works when `may_cancel`.
    pub async fn cancel_operation(&self, id: &str) -> Result<()> {
        let _: serde_json::Value =
            self.sync(Request::new(Method::DELETE, format!("/1.0/operations/{}", encode(id)))).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Recorded answers of `/wait` from LXD 5.0 (blocking, status set by the outcome) and newer daemons (HTTP 200
    // sent before blocking, so failures arrive in a 200 body).
    const SUCCESS: &str = r#"{"type":"sync","status":"Success","status_code":200,"operation":"","error_code":0,
        "error":"","metadata":{"id":"6916c8a6","class":"task","description":"Creating instance","status":"Success",
        "status_code":200,"resources":{"instances":["/1.0/instances/c1"]},"metadata":null,"may_cancel":false,
        "err":"","location":"none"}}"#;
    const FAILURE_IN_200: &str = r#"{"type":"sync","status":"Success","status_code":200,"metadata":{"id":"ab",
        "class":"task","status":"Failure","status_code":400,"err":"Failed creating instance record: Add instance info to the database: This instance already exists","may_cancel":false}}"#;
    const ERROR_BODY_IN_200: &str = r#"{"type":"error","status":"","status_code":0,"error":"Operation not found","error_code":404,"metadata":null}"#;
    const STILL_RUNNING: &str = r#"{"type":"sync","status":"Success","status_code":200,"metadata":{"id":"cd",
        "class":"websocket","status":"Running","status_code":103,"may_cancel":true,"err":""}}"#;
    const CANCELLED: &str = r#"{"type":"sync","status_code":200,"metadata":{"id":"ef","status":"Cancelled",
        "status_code":401,"err":"Operation cancelled"}}"#;

    #[test]
    fn success_is_done() {
        match interpret_wait(StatusCode::OK, "/w", SUCCESS.as_bytes()).expect("interpret_wait") {
            WaitOutcome::Done(op) => {
                assert!(op.is_success());
                assert_eq!(op.resources.expect("resources")["instances"], vec!["/1.0/instances/c1"]);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn failure_inside_http_200_is_an_error() {
        let err = interpret_wait(StatusCode::OK, "/w", FAILURE_IN_200.as_bytes()).unwrap_err();
        match err {
            Error::OperationFailed { status_code, message, id } => {
                assert_eq!((status_code, id.as_str()), (400, "ab"));
                assert!(message.contains("already exists"));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn error_envelope_inside_http_200_is_an_error() {
        let err = interpret_wait(StatusCode::OK, "/w", ERROR_BODY_IN_200.as_bytes()).unwrap_err();
        assert!(err.is_not_found(), "{err:?}");
    }

    #[test]
    fn running_after_timeout_is_not_success() {
        assert!(matches!(
            interpret_wait(StatusCode::OK, "/w", STILL_RUNNING.as_bytes()).expect("interpret_wait"),
            WaitOutcome::Running(op) if op.status_code == 103
        ));
    }

    #[test]
    fn cancelled_is_a_failure() {
        let err = interpret_wait(StatusCode::OK, "/w", CANCELLED.as_bytes()).unwrap_err();
        assert!(matches!(err, Error::OperationFailed { status_code: 401, .. }));
    }
}
