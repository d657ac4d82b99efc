//! Building responses: JSON bodies and `Status` errors.

use axum::body::Body;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::Value;
use waggle_api::StatusError;

/// A JSON response with the given status and Content-Type.
pub fn json_with(code: StatusCode, content_type: &str, body: &Value) -> Response {
    let bytes = serde_json::to_vec(body).unwrap_or_default();
    let mut resp = Response::new(Body::from(bytes));
    *resp.status_mut() = code;
    if let Ok(v) = HeaderValue::from_str(content_type) {
        resp.headers_mut().insert(header::CONTENT_TYPE, v);
    }
    resp
}

/// A plain `application/json` response.
pub fn json(code: StatusCode, body: &Value) -> Response {
    json_with(code, "application/json", body)
}

/// Answers with the error's `Status`.
pub fn error(err: &StatusError) -> Response {
    let code = StatusCode::from_u16(err.code()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    json(code, &err.to_status())
}

/// Lets handlers return `Result<Response, ApiError>` and use `?`.
#[derive(Debug)]
pub struct ApiError(pub StatusError);

impl From<StatusError> for ApiError {
    fn from(e: StatusError) -> Self {
        Self(e)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        error(&self.0)
    }
}

pub type ApiResult = Result<Response, ApiError>;
