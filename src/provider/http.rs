//! HTTP plumbing shared by the remote backends.
//!
//! One pooled client per provider, built with: rustls, an explicit connect
//! timeout, no redirects (reqwest follows ten by default and would forward
//! headers such as `x-api-key` to the new host), and no overall timeout —
//! deadlines are per attempt, applied here with tokio's timers so that a
//! provider that accepts a connection and then stalls is caught at the
//! first-token deadline instead of hanging until the total one.
//!
//! Errors are mapped to [`ProviderError`] kinds without the request URL or
//! headers: messages may be logged and journaled, keys must not be.

use std::time::Duration;

use reqwest::header::HeaderMap;
use tokio::time::Instant;

use super::{AttemptDeadline, ProviderError};

/// Builds the pooled client of one provider.
pub fn client(connect_timeout: Duration) -> Result<reqwest::Client, ProviderError> {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(connect_timeout)
        .pool_idle_timeout(Duration::from_secs(90))
        .tcp_nodelay(true)
        .build()
        .map_err(|e| ProviderError::Connect(format!("cannot build HTTP client: {}", describe(&e))))
}

/// Sends a request and waits for the response headers until `until`.
pub async fn send_until(
    request: reqwest::RequestBuilder,
    until: Instant,
    started: Instant,
    first_token: bool,
) -> Result<reqwest::Response, ProviderError> {
    match tokio::time::timeout_at(until, request.send()).await {
        Ok(Ok(response)) => Ok(response),
        Ok(Err(error)) => Err(map_error(&error, started)),
        Err(_) if first_token => Err(ProviderError::FirstTokenTimeout(started.elapsed())),
        Err(_) => Err(ProviderError::Timeout(started.elapsed())),
    }
}

/// When the first byte of an answer must have arrived.
pub fn first_token_until(deadline: &AttemptDeadline, started: Instant) -> Instant {
    (started + deadline.first_token).min(deadline.end)
}

/// Reads the whole body until `until`.
pub async fn body_until(
    response: reqwest::Response,
    until: Instant,
    started: Instant,
) -> Result<bytes::Bytes, ProviderError> {
    match tokio::time::timeout_at(until, response.bytes()).await {
        Ok(Ok(body)) => Ok(body),
        Ok(Err(error)) => Err(map_error(&error, started)),
        Err(_) => Err(ProviderError::Timeout(started.elapsed())),
    }
}

/// Maps a transport error to its kind.
pub fn map_error(error: &reqwest::Error, started: Instant) -> ProviderError {
    let message = describe(error);
    // A connect timeout is a connect failure (reqwest flags it as both).
    if error.is_connect() {
        ProviderError::Connect(message)
    } else if error.is_timeout() {
        ProviderError::Timeout(started.elapsed())
    } else if error.is_decode() {
        ProviderError::Malformed(message)
    } else {
        // Resets, closed connections and truncated bodies all land here:
        // the upstream went away mid-exchange.
        ProviderError::Reset(message)
    }
}

/// The error and its causes, without the URL.
fn describe(error: &reqwest::Error) -> String {
    let mut message = String::new();
    let mut source: Option<&dyn std::error::Error> = std::error::Error::source(error);
    let head = match (error.is_connect(), error.is_timeout(), error.is_body()) {
        (true, _, _) => "connection failed",
        (_, true, _) => "timed out",
        (_, _, true) => "response body failed",
        _ => "request failed",
    };
    message.push_str(head);
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    message
}

/// `Retry-After` in seconds, or OpenAI's `retry-after-ms`. HTTP-date values
/// are ignored (no LLM API sends them): the caller then fails over at once.
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    // Upstream text: anything not a sane number of seconds is ignored
    // rather than trusted (`inf`, `1e20` would overflow a Duration).
    let seconds = |text: &str, scale: f64| {
        text.trim()
            .parse::<f64>()
            .ok()
            .filter(|v| v.is_finite() && *v >= 0.0)
            .map(|v| (v / scale).min(MAX_RETRY_AFTER.as_secs_f64()))
            .and_then(|v| Duration::try_from_secs_f64(v).ok())
    };
    if let Some(wait) = header_str(headers, "retry-after-ms").and_then(|v| seconds(v, 1000.0)) {
        return Some(wait);
    }
    header_str(headers, "retry-after").and_then(|v| seconds(v, 1.0))
}

/// No upstream gets to make Baton wait longer than this, whatever it says.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

pub fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// The error for a redirect answer, which Baton never follows.
pub fn redirect_refused(status: u16) -> ProviderError {
    ProviderError::Status {
        status,
        retry_after: None,
        message: "provider answered with a redirect; Baton does not follow redirects (a key could reach another host)".into(),
    }
}

/// Maps a non-2xx answer (status, headers, body) to its kind; one per protocol.
pub type ErrorMapper = fn(u16, &HeaderMap, &[u8]) -> ProviderError;

/// Sends a request for a whole answer: headers and body must arrive before
/// the attempt's end. Returns the headers and body of a 2xx answer.
pub async fn send_whole(
    request: reqwest::RequestBuilder,
    deadline: AttemptDeadline,
    error_from: ErrorMapper,
) -> Result<(HeaderMap, bytes::Bytes), ProviderError> {
    let started = Instant::now();
    let response = send_until(request, deadline.end, started, false).await?;
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = body_until(response, deadline.end, started).await?;
    if !(200..300).contains(&status) {
        return Err(error_from(status, &headers, &body));
    }
    Ok((headers, body))
}

/// Posts a request for a streamed answer: the headers must arrive before
/// the first-token deadline. Returns the open 2xx response and when the
/// attempt started (the stream's deadlines count from it).
pub async fn post_stream(
    request: reqwest::RequestBuilder,
    deadline: AttemptDeadline,
    error_from: ErrorMapper,
) -> Result<(reqwest::Response, Instant), ProviderError> {
    let started = Instant::now();
    let until = first_token_until(&deadline, started);
    let response = send_until(request, until, started, true).await?;
    let status = response.status().as_u16();
    if !(200..300).contains(&status) {
        let headers = response.headers().clone();
        let body = body_until(response, deadline.end, started).await?;
        return Err(error_from(status, &headers, &body));
    }
    Ok((response, started))
}

/// Shortens an upstream error body for messages.
pub fn excerpt(body: &[u8]) -> String {
    const MAX: usize = 300;
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if text.chars().count() <= MAX {
        text.to_owned()
    } else {
        format!("{}…", text.chars().take(MAX).collect::<String>())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_reads_seconds_and_milliseconds() {
        let mut headers = HeaderMap::new();
        headers.insert("retry-after", "2".parse().unwrap());
        assert_eq!(retry_after(&headers), Some(Duration::from_secs(2)));
        headers.insert("retry-after-ms", "150".parse().unwrap());
        assert_eq!(retry_after(&headers), Some(Duration::from_millis(150)));
        let mut dated = HeaderMap::new();
        dated.insert(
            "retry-after",
            "Wed, 21 Oct 2015 07:28:00 GMT".parse().unwrap(),
        );
        assert_eq!(retry_after(&dated), None);
        let mut absurd = HeaderMap::new();
        absurd.insert("retry-after-ms", "inf".parse().unwrap());
        assert_eq!(retry_after(&absurd), None);
        absurd.insert("retry-after", "1e20".parse().unwrap());
        assert_eq!(retry_after(&absurd), Some(MAX_RETRY_AFTER));
    }
}
