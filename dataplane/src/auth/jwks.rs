//! Where a project's JWT keys come from at run time: a fixed set (read from a Secret when the
//! configuration was compiled; a new Secret is a new configuration, hot-reloaded), or a set
//! fetched from a URL off the request path. A fetched set is refreshed every interval, and
//! early when a token names a `kid` the set lacks (at most once per [`KID_MISS_COOLDOWN`], so
//! tokens with made-up ids cannot hammer the identity provider): that is how a rotation is
//! picked up. A failed fetch keeps the last good set and logs a warning (the URL, never a
//! response body).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, PoisonError, Weak};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper::Uri;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::{Client, connect::HttpConnector};
use hyper_util::rt::TokioExecutor;
use tokio::sync::Notify;

use super::jwt::KeySet;

/// Shortest time between two fetches triggered by unknown key ids.
pub const KID_MISS_COOLDOWN: Duration = Duration::from_secs(30);
/// Longest a fetch may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);
/// Wait before retrying a failed fetch, when the interval is longer.
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(30);

type FetchClient = Client<HttpsConnector<HttpConnector>, Empty<Bytes>>;

/// A project's verification keys.
#[derive(Debug)]
pub enum KeySource {
    /// Compiled into the configuration.
    Fixed(Arc<KeySet>),
    /// Fetched from a URL.
    Fetched(Arc<JwksFetcher>),
}

impl KeySource {
    /// The keys now.
    pub fn current(&self) -> Arc<KeySet> {
        match self {
            Self::Fixed(keys) => keys.clone(),
            Self::Fetched(fetcher) => fetcher.keys.load_full(),
        }
    }

    /// A token named `kid` and the set lacks it: a fetched set is refreshed soon (rate-limited).
    pub fn kid_missed(&self) {
        if let Self::Fetched(fetcher) = self {
            fetcher.kid_missed();
        }
    }
}

/// One JWKS URL's keys, refreshed by a task of its own while the fetcher lives.
#[derive(Debug)]
pub struct JwksFetcher {
    url: String,
    every: Duration,
    keys: ArcSwap<KeySet>,
    wake: Arc<Notify>,
    last_kid_miss: Mutex<Option<Instant>>,
}

impl Drop for JwksFetcher {
    fn drop(&mut self) {
        // The task sees the fetcher gone and ends.
        self.wake.notify_one();
    }
}

impl JwksFetcher {
    fn kid_missed(&self) {
        let mut last = self.last_kid_miss.lock().unwrap_or_else(PoisonError::into_inner);
        if last.is_none_or(|at| at.elapsed() >= KID_MISS_COOLDOWN) {
            *last = Some(Instant::now());
            self.wake.notify_one();
        }
    }
}

/// The JWKS fetchers of every project, kept across reloads so a reload neither refetches nor
/// forgets the keys.
#[derive(Default)]
pub struct JwksFetchers {
    fetchers: Mutex<HashMap<(String, String, u32), Arc<JwksFetcher>>>,
    client: OnceLock<Option<FetchClient>>,
}

impl JwksFetchers {
    /// The fetcher of `project`'s `url`, started on first use (outside a Tokio runtime, as in
    /// unit tests, it never fetches).
    pub fn fetcher(&self, project: &str, url: &str, refresh_seconds: u32) -> Arc<JwksFetcher> {
        let mut fetchers = self.fetchers.lock().unwrap_or_else(PoisonError::into_inner);
        let key = (project.to_owned(), url.to_owned(), refresh_seconds);
        if let Some(fetcher) = fetchers.get(&key) {
            return fetcher.clone();
        }
        let fetcher = Arc::new(JwksFetcher {
            url: url.to_owned(),
            every: Duration::from_secs(u64::from(refresh_seconds.max(1))),
            keys: ArcSwap::from_pointee(KeySet::default()),
            wake: Arc::new(Notify::new()),
            last_kid_miss: Mutex::new(None),
        });
        if let (Ok(runtime), Some(client)) =
            (tokio::runtime::Handle::try_current(), self.client.get_or_init(fetch_client).clone())
        {
            let wake = fetcher.wake.clone();
            runtime.spawn(refresh(Arc::downgrade(&fetcher), wake, client, project.to_owned()));
        }
        fetchers.insert(key, fetcher.clone());
        fetcher
    }

    /// Forgets the fetchers no configuration names any more (their tasks end).
    pub fn retain(&self, live: &[(String, String, u32)]) {
        let mut fetchers = self.fetchers.lock().unwrap_or_else(PoisonError::into_inner);
        fetchers.retain(|key, _| live.contains(key));
    }
}

fn fetch_client() -> Option<FetchClient> {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_connect_timeout(Some(FETCH_TIMEOUT));
    match hyper_rustls::HttpsConnectorBuilder::new()
        .with_provider_and_webpki_roots(rustls::crypto::aws_lc_rs::default_provider())
    {
        Ok(builder) => {
            let https = builder.https_or_http().enable_http1().wrap_connector(http);
            Some(Client::builder(TokioExecutor::new()).build(https))
        }
        Err(error) => {
            tracing::error!(%error, "TLS setup for fetching JWKS failed; JWKS URLs are not fetched");
            None
        }
    }
}

/// Fetches the set now, then every interval or when woken, until the fetcher is dropped.
async fn refresh(fetcher: Weak<JwksFetcher>, wake: Arc<Notify>, client: FetchClient, project: String) {
    loop {
        let Some(strong) = fetcher.upgrade() else { return };
        let url = strong.url.clone();
        let every = strong.every;
        drop(strong);
        let wait = match tokio::time::timeout(FETCH_TIMEOUT, fetch(&client, &url)).await {
            Ok(Ok(keys)) => {
                let Some(strong) = fetcher.upgrade() else { return };
                tracing::debug!(%project, %url, keys = keys.len(), "JWKS fetched");
                strong.keys.store(Arc::new(keys));
                every
            }
            outcome => {
                let error = match outcome {
                    Ok(Err(error)) => error,
                    _ => format!("no answer within {FETCH_TIMEOUT:?}"),
                };
                tracing::warn!(%project, %url, %error, "JWKS fetch failed; the last good key set stays in use");
                every.min(RETRY_AFTER_FAILURE)
            }
        };
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = wake.notified() => {}
        }
    }
}

async fn fetch(client: &FetchClient, url: &str) -> Result<KeySet, String> {
    let uri: Uri = url.parse().map_err(|_| "not a valid URL".to_owned())?;
    let response = client.get(uri).await.map_err(|e| format!("GET: {e}"))?;
    if !response.status().is_success() {
        return Err(format!("status {}", response.status()));
    }
    let body = Limited::new(response.into_body(), sluice_crds::jwks::MAX_DOCUMENT_BYTES)
        .collect()
        .await
        .map_err(|e| format!("body: {e}"))?
        .to_bytes();
    let jwks = sluice_crds::jwks::parse(&body)?;
    for skipped in &jwks.skipped {
        tracing::debug!(%url, %skipped, "JWKS key left out");
    }
    Ok(KeySet::new(&jwks.keys))
}
