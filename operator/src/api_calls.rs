//! Counts the operator's requests to the apiserver by verb and resource, with the time each took
//! to answer, for `/metrics` and the reconcile benchmark: most of an operator's time goes into
//! these calls, and the counts show which writes a change saves.
//!
//! The time is until the response's headers: a list's body is read after it, and a watch counts
//! from its start to its first byte.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::http::{Method, Request, Response, header};
use kube::Client;
use kube::client::ClientBuilder;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use tower::{Layer, Service};

/// `verb` and `resource` labels.
type CallLabels = [(&'static str, String); 2];

/// What the requests of one verb and resource came to.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Tally {
    /// Requests made.
    pub count: u64,
    /// Requests answered with an error status (conflicts and not-found included) or not at all.
    pub failures: u64,
    /// Time until each response's headers, summed.
    pub seconds: f64,
}

/// The tallies by verb and resource, shared by every clone (one per client and the registry).
#[derive(Clone, Debug, Default)]
pub struct ApiCalls {
    tallies: Arc<Mutex<BTreeMap<(&'static str, String), Tally>>>,
}

impl ApiCalls {
    /// A kube client for `config` whose requests are counted here.
    pub fn client(&self, config: kube::Config) -> kube::Result<Client> {
        Ok(ClientBuilder::try_from(config)?.with_layer(&CountCalls(self.clone())).build())
    }

    /// Every tally so far, by `(verb, resource)`.
    pub fn snapshot(&self) -> BTreeMap<(&'static str, String), Tally> {
        self.tallies.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    fn record(&self, verb: &'static str, resource: String, took: Duration, failed: bool) {
        let mut tallies = self.tallies.lock().unwrap_or_else(PoisonError::into_inner);
        let tally = tallies.entry((verb, resource)).or_default();
        tally.count += 1;
        tally.seconds += took.as_secs_f64();
        tally.failures += u64::from(failed);
    }
}

impl Collector for ApiCalls {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let tallies = self.snapshot();
        if tallies.is_empty() {
            return Ok(());
        }
        let requests = Family::<CallLabels, Counter>::default();
        let failures = Family::<CallLabels, Counter>::default();
        let seconds = Family::<CallLabels, Counter<f64, AtomicU64>>::default();
        for ((verb, resource), tally) in tallies {
            let labels = [("verb", verb.to_owned()), ("resource", resource)];
            requests.get_or_create(&labels).inc_by(tally.count);
            failures.get_or_create(&labels).inc_by(tally.failures);
            seconds.get_or_create(&labels).inc_by(tally.seconds);
        }
        requests.encode(encoder.encode_descriptor(
            "sluice_operator_api_requests",
            "Requests to the apiserver, by verb (get, list, watch, create, update, apply, patch, delete) and resource",
            None,
            requests.metric_type(),
        )?)?;
        failures.encode(encoder.encode_descriptor(
            "sluice_operator_api_request_failures",
            "Requests to the apiserver answered with an error status (conflicts and not-found included) or not answered",
            None,
            failures.metric_type(),
        )?)?;
        seconds.encode(encoder.encode_descriptor(
            "sluice_operator_api_request_seconds",
            "Time until the apiserver's response headers, summed, by verb and resource",
            None,
            seconds.metric_type(),
        )?)
    }
}

/// The tower layer that counts each request of a kube client.
#[derive(Clone, Debug)]
pub struct CountCalls(ApiCalls);

impl<S> Layer<S> for CountCalls {
    type Service = Counted<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Counted { inner, calls: self.0.clone() }
    }
}

/// A kube client's service stack with each request counted.
#[derive(Clone, Debug)]
pub struct Counted<S> {
    inner: S,
    calls: ApiCalls,
}

impl<S, B, R> Service<Request<B>> for Counted<S>
where
    S: Service<Request<B>, Response = Response<R>>,
    S::Future: Send + 'static,
{
    type Response = Response<R>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response<R>, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let content_type = request.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok());
        let (verb, resource) = call_labels(request.method(), request.uri().path(), request.uri().query(), content_type);
        let calls = self.calls.clone();
        let started = Instant::now();
        let response = self.inner.call(request);
        Box::pin(async move {
            let result = response.await;
            let failed = result.as_ref().map_or(true, |r| r.status().is_client_error() || r.status().is_server_error());
            calls.record(verb, resource, started.elapsed(), failed);
            result
        })
    }
}

/// The verb and resource of a request: `resource` is the plural, with `/<subresource>` when
/// there is one (`apikeys/status`).
fn call_labels(method: &Method, path: &str, query: Option<&str>, content_type: Option<&str>) -> (&'static str, String) {
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let rest = match segments.first() {
        Some(&"api") => segments.get(2..),
        Some(&"apis") => segments.get(3..),
        _ => None,
    }
    .unwrap_or_default();
    let rest = match rest {
        ["namespaces", _, resource, tail @ ..] => std::iter::once(*resource).chain(tail.iter().copied()).collect(),
        other => other.to_vec(),
    };
    let (resource, named) = match rest.as_slice() {
        [] => ("other".to_owned(), false),
        [resource] => ((*resource).to_owned(), false),
        [resource, _] => ((*resource).to_owned(), true),
        [resource, _, subresource, ..] => (format!("{resource}/{subresource}"), true),
    };
    let watching = query.is_some_and(|q| q.split('&').any(|pair| pair == "watch=true" || pair == "watch=1"));
    let verb = match *method {
        Method::GET if watching => "watch",
        Method::GET if named => "get",
        Method::GET => "list",
        Method::POST => "create",
        Method::PUT => "update",
        Method::PATCH if content_type.is_some_and(|t| t.starts_with("application/apply-patch")) => "apply",
        Method::PATCH => "patch",
        Method::DELETE if named => "delete",
        Method::DELETE => "deletecollection",
        _ => "other",
    };
    (verb, resource)
}

#[cfg(test)]
mod tests {
    use prometheus_client::registry::Registry;

    use super::*;

    fn labels(method: Method, path: &str, query: Option<&str>, content_type: Option<&str>) -> (String, String) {
        let (verb, resource) = call_labels(&method, path, query, content_type);
        (verb.to_owned(), resource)
    }

    #[test]
    fn requests_are_named_by_verb_and_resource() {
        let pair = |verb: &str, resource: &str| (verb.to_owned(), resource.to_owned());
        assert_eq!(
            labels(
                Method::PATCH,
                "/apis/sluice.dev/v1alpha1/namespaces/t/apikeys/k/status",
                None,
                Some("application/apply-patch+yaml")
            ),
            pair("apply", "apikeys/status")
        );
        assert_eq!(
            labels(
                Method::GET,
                "/api/v1/namespaces/t/secrets",
                Some("labelSelector=a&watch=true&timeoutSeconds=290"),
                None
            ),
            pair("watch", "secrets")
        );
        assert_eq!(labels(Method::GET, "/api/v1/secrets", Some("limit=500"), None), pair("list", "secrets"));
        assert_eq!(labels(Method::GET, "/api/v1/namespaces/t/secrets/s", None, None), pair("get", "secrets"));
        assert_eq!(labels(Method::POST, "/api/v1/namespaces/t/secrets", None, None), pair("create", "secrets"));
        assert_eq!(labels(Method::PUT, "/api/v1/namespaces/t/secrets/s", None, None), pair("update", "secrets"));
        assert_eq!(
            labels(
                Method::PATCH,
                "/apis/events.k8s.io/v1/namespaces/t/events/e",
                None,
                Some("application/merge-patch+json")
            ),
            pair("patch", "events")
        );
        assert_eq!(labels(Method::DELETE, "/api/v1/namespaces/t/secrets/s", None, None), pair("delete", "secrets"));
        assert_eq!(
            labels(Method::GET, "/apis/sluice.dev/v1alpha1/servicetiers", None, None),
            pair("list", "servicetiers")
        );
        assert_eq!(labels(Method::GET, "/api/v1/namespaces/t", None, None), pair("get", "namespaces"));
        assert_eq!(labels(Method::GET, "/version", None, None), pair("list", "other"));
    }

    #[test]
    fn every_request_is_counted_with_its_time_and_failures() {
        let calls = ApiCalls::default();
        calls.record("apply", "apikeys/status".to_owned(), Duration::from_millis(250), false);
        calls.record("apply", "apikeys/status".to_owned(), Duration::from_millis(500), true);
        assert_eq!(
            calls.snapshot()[&("apply", "apikeys/status".to_owned())],
            Tally { count: 2, failures: 1, seconds: 0.75 }
        );
        let mut registry = Registry::default();
        registry.register_collector(Box::new(calls.clone()));
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).expect("encodes");
        let series = "{verb=\"apply\",resource=\"apikeys/status\"}";
        assert!(text.contains(&format!("sluice_operator_api_requests_total{series} 2")), "{text}");
        assert!(text.contains(&format!("sluice_operator_api_request_failures_total{series} 1")), "{text}");
        assert!(text.contains(&format!("sluice_operator_api_request_seconds_total{series} 0.75")), "{text}");
    }
}
