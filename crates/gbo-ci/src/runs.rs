//! Recent workflow runs through the Forgejo API: `GET /api/v1/repos/{owner}/{repo}/actions/tasks?page=1&limit=N`,
//! authenticated with `Authorization: token <FORGEJO_TOKEN>`. The response is `{"workflow_runs": [...],
//! "total_count": N}` with one object per task (Forgejo/Gitea `ActionTaskResponse`).
//!
//! The token is sent only over https or to a loopback address (127.0.0.0/8, ::1, `localhost`, which is pinned to
//! 127.0.0.1 rather than looked up); any other `http://` URL with a token is refused before any request. Redirects
//! are not followed (a redirect could lead the token elsewhere), and a loopback URL never goes through a proxy.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::event::Observer;
use crate::ssh::Secret;

/// What to list.
#[derive(Debug, Clone)]
pub struct RunsQuery {
    /// Forgejo base URL, e.g. `http://alm.example.com`.
    pub base_url: String,
    /// Repository owner (user or organisation).
    pub owner: String,
    /// Repository name.
    pub repo: String,
    /// How many runs.
    pub limit: u32,
    /// API token (read:repository), from the environment.
    pub token: Option<Secret>,
}

impl RunsQuery {
    /// Build a query from `OWNER/NAME`, validating both parts and the base URL.
    pub fn new(base_url: &str, repository: &str, limit: u32, token: Option<Secret>) -> Result<Self> {
        let (owner, repo) = repository
            .split_once('/')
            .filter(|(owner, repo)| valid_name(owner) && valid_name(repo))
            .ok_or_else(|| Error::invalid("--repo", repository, "OWNER/NAME, e.g. GeneralBots/botserver"))?;
        let base = base_url.trim_end_matches('/');
        let bad_url = || {
            Error::invalid(
                "Forgejo URL",
                base_url,
                "an http:// or https:// base URL (flag --url or FORGEJO_URL), e.g. https://alm.example.com",
            )
        };
        if !(base.starts_with("http://") || base.starts_with("https://")) || base.len() <= "https://".len() {
            return Err(bad_url());
        }
        let parsed = reqwest::Url::parse(base).map_err(|_| bad_url())?;
        if token.is_some() && parsed.scheme() == "http" && !is_loopback(&parsed) {
            return Err(Error::invalid(
                "Forgejo URL",
                base_url,
                "https://, or http:// only to a loopback address (127.0.0.0/8, ::1, localhost), while FORGEJO_TOKEN \
                 is set: the token would cross the network in clear text (nothing was sent; unset FORGEJO_TOKEN for \
                 a public read)",
            ));
        }
        if limit == 0 || limit > 50 {
            return Err(Error::invalid("--limit", limit.to_string(), "1 to 50"));
        }
        Ok(Self { base_url: base.to_string(), owner: owner.into(), repo: repo.into(), limit, token })
    }

    /// The request URL (carries no secret).
    pub fn url(&self) -> String {
        format!("{}/api/v1/repos/{}/{}/actions/tasks?page=1&limit={}", self.base_url, self.owner, self.repo, self.limit)
    }
}

/// Whether the URL's host is a loopback address (or `localhost`, which [`list_runs`] pins to 127.0.0.1).
fn is_loopback(url: &reqwest::Url) -> bool {
    let Some(host) = url.host_str() else { return false };
    match host.trim_start_matches('[').trim_end_matches(']').parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V4(address)) => address.is_loopback(),
        Ok(std::net::IpAddr::V6(address)) => {
            address.is_loopback() || address.to_ipv4_mapped().is_some_and(|mapped| mapped.is_loopback())
        }
        Err(_) => host.eq_ignore_ascii_case("localhost"),
    }
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        && name != "."
        && name != ".."
}

/// One workflow run (task) as Forgejo reports it.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
pub struct ActionTask {
    /// Task id.
    pub id: i64,
    /// Job name.
    #[serde(default)]
    pub name: String,
    /// Branch.
    #[serde(default)]
    pub head_branch: String,
    /// Commit.
    #[serde(default)]
    pub head_sha: String,
    /// Run number.
    #[serde(default)]
    pub run_number: i64,
    /// Trigger event.
    #[serde(default)]
    pub event: String,
    /// Title (usually the commit subject).
    #[serde(default)]
    pub display_title: String,
    /// `success`, `failure`, `running`, `waiting`, `cancelled`, ...
    #[serde(default)]
    pub status: String,
    /// Workflow file name.
    #[serde(default)]
    pub workflow_id: String,
    /// Link to the run.
    #[serde(default)]
    pub url: String,
    /// RFC 3339 creation time.
    #[serde(default)]
    pub created_at: String,
    /// RFC 3339 update time.
    #[serde(default)]
    pub updated_at: String,
    /// RFC 3339 start time.
    #[serde(default)]
    pub run_started_at: String,
}

/// The API's list shape, and what `--output json` prints.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct RunsReport {
    /// The runs, newest first as the server orders them.
    pub workflow_runs: Vec<ActionTask>,
    /// Total number of runs in the repository.
    pub total_count: i64,
}

/// Progress a listing reports; the CLI renders it on stderr.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
#[non_exhaustive]
pub enum RunsEvent {
    /// The request is being sent (the URL carries no secret).
    Requesting {
        /// The request URL.
        url: String,
    },
}

/// Fetch the runs.
pub async fn list_runs(query: &RunsQuery, observer: &mut dyn Observer<RunsEvent>) -> Result<RunsReport> {
    let url = query.url();
    let http = |message: String| Error::Http { url: url.clone(), message };
    let mut builder = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        // A redirect could lead the token somewhere the URL check never saw.
        .redirect(reqwest::redirect::Policy::none());
    if let Ok(parsed) = reqwest::Url::parse(&query.base_url) {
        if is_loopback(&parsed) {
            // Loopback is reached directly (never through a proxy), and `localhost` is never looked up.
            builder = builder.no_proxy().resolve("localhost", std::net::SocketAddr::from(([127, 0, 0, 1], 0)));
        }
    }
    let client = builder.build().map_err(|error| http(error.to_string()))?;
    observer.on_event(&RunsEvent::Requesting { url: url.clone() });
    let mut request = client.get(&url).header("Accept", "application/json");
    if let Some(token) = &query.token {
        request = request.header("Authorization", format!("token {}", token.expose()));
    }
    let response = request.send().await.map_err(|error| http(error.without_url().to_string()))?;
    let status = response.status();
    if !status.is_success() {
        let hint = match status.as_u16() {
            401 | 403 => "; the token (FORGEJO_TOKEN) is missing or lacks read:repository",
            404 => "; no such repository, or Actions are disabled for it",
            _ => "",
        };
        return Err(http(format!("HTTP {status}{hint}")));
    }
    response.json::<RunsReport>().await.map_err(|error| http(format!("unexpected response: {}", error.without_url())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_are_validated() {
        let query = RunsQuery::new("http://alm.example.com/", "GeneralBots/botserver", 5, None).expect("new");
        assert_eq!(
            query.url(),
            "http://alm.example.com/api/v1/repos/GeneralBots/botserver/actions/tasks?page=1&limit=5"
        );
        assert!(RunsQuery::new("http://x", "noslash", 5, None).is_err());
        assert!(RunsQuery::new("http://x", "a/b/c", 5, None).is_err());
        assert!(RunsQuery::new("alm.example.com", "a/b", 5, None).is_err());
        assert!(RunsQuery::new("http://x", "a/b", 0, None).is_err());
    }

    #[test]
    fn the_token_goes_only_over_https_or_to_loopback() {
        let token = || Some(Secret::new("t".into()));
        for allowed in [
            "https://alm.example.com",
            "http://127.0.0.1:3000",
            "http://127.8.9.10",
            "http://[::1]:3000/",
            "http://localhost:3000",
            "http://[::ffff:127.0.0.1]:3000",
        ] {
            assert!(RunsQuery::new(allowed, "a/b", 5, token()).is_ok(), "{allowed}");
        }
        for refused in ["http://alm.example.com", "http://10.16.164.33:3000", "http://0.0.0.0:3000", "http://[::]/"] {
            let error = RunsQuery::new(refused, "a/b", 5, token()).unwrap_err().to_string();
            assert!(error.contains(refused) && error.contains("FORGEJO_TOKEN"), "{error}");
            assert!(RunsQuery::new(refused, "a/b", 5, None).is_ok(), "a public read without a token: {refused}");
        }
    }
}
