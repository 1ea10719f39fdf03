//! Response helpers of the API server: `Status` bodies for errors, the plain-text answers of
//! the filters in front of the API (404, 429), `Warning` headers.

use axum::body::Body;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::error::ApiError;

pub use crate::respond::json_response;

/// The Status response of an error.
pub fn error_response(e: &ApiError) -> Response {
    json_response(e.code, &e.to_status())
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        error_response(&self)
    }
}

pub(super) fn not_found_text() -> Response {
    let mut r = Response::new(Body::from("404 page not found\n"));
    *r.status_mut() = StatusCode::NOT_FOUND;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// kube-apiserver's overload answer (max-in-flight and priority-and-fairness filters): 429 with
/// a `Retry-After` header and a plain-text body (`http.Error`), not a `Status`.
pub(super) fn too_many_requests(retry_after_seconds: u64) -> Response {
    let mut r = Response::new(Body::from("Too many requests, please try again later.\n"));
    *r.status_mut() = StatusCode::TOO_MANY_REQUESTS;
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    h.insert(
        header::HeaderName::from_static("x-content-type-options"),
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::RETRY_AFTER, HeaderValue::from(retry_after_seconds));
    r
}

pub(super) fn with_warnings(mut r: Response, warnings: &[String]) -> Response {
    for w in warnings {
        let v = format!("299 - {}", serde_json::to_string(w).unwrap_or_default());
        if let Ok(h) = HeaderValue::from_str(&v) {
            r.headers_mut().append(header::WARNING, h);
        }
    }
    r
}
