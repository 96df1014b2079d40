//! HTTP into a room: `GET|POST|PUT|PATCH|DELETE /rooms/{topic}/http/{*path}`
//! runs the kind's `onRequest(req)` (PartyKit's `onRequest`, a Durable
//! Object's `fetch`) as a journaled event, and answers with what it returns.
//!
//! The request passes the rules of `POST /api/rooms/{topic}/messages`: the
//! per-address rate limit (the same layer), the connect checks (token,
//! origin, user), and the frame size limit on its body. The hook gets
//! `{method, path, query, headers, body}`: the path after `/http` (`/` when
//! none), the query as an object (the connection token left out), headers
//! lower-cased without hop-by-hop ones and without `cookie` and
//! `authorization` (the event is journaled on disk: credentials stay out of
//! it), and the body as text. It returns `{status, headers?, body?}` (only
//! those keys, `status` an integer 100–599) for a response of its own, or
//! any other JSON value, answered `200 application/json`. A throw answers
//! `500 {reason}`; a kind without `onRequest`, `404`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::value::RawValue;
use serde_json::{Map, Value, json};

use super::WebState;
use super::api::{ApiError, parse_topic};
use super::connect::{Transport, identify};
use super::{BodyError, read_body};
use crate::room::RoomError;

/// How long a request waits for the room's answer.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Request headers a room never sees: hop-by-hop ones (RFC 9110 §7.6.1) and
/// credentials, which would be journaled.
const HIDDEN_HEADERS: [&str; 10] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "cookie",
    "authorization",
];

/// Response headers a room may not set: the server frames the response.
const FRAMING_HEADERS: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "content-length",
];

/// `/rooms/{topic}/http`: the path is `/`.
pub(crate) async fn root(
    state: State<Arc<WebState>>,
    Path(topic): Path<String>,
    method: Method,
    query: Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    handle(state, topic, String::new(), method, query, headers, body).await
}

/// `/rooms/{topic}/http/{*path}`.
pub(crate) async fn path(
    state: State<Arc<WebState>>,
    Path((topic, path)): Path<(String, String)>,
    method: Method,
    query: Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    handle(state, topic, path, method, query, headers, body).await
}

async fn handle(
    State(web): State<Arc<WebState>>,
    topic: String,
    path: String,
    method: Method,
    Query(params): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let topic = parse_topic(&topic)?;
    let conn = identify(&web, &params, &headers, Transport::Http)?;
    let limit = web.config.max_frame_bytes;
    let body = read_body(body, limit).await.map_err(|e| match e {
        BodyError::TooLarge => ApiError(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request body larger than {limit} bytes"),
        ),
        BodyError::Unreadable(why) => ApiError(StatusCode::BAD_REQUEST, why),
    })?;
    let body = String::from_utf8(body.to_vec()).map_err(|_| {
        ApiError(
            StatusCode::BAD_REQUEST,
            "the request body must be UTF-8 text".into(),
        )
    })?;
    let req = describe(&method, &path, params, &headers, body);
    let req = RawValue::from_string(req.to_string())
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    web.metrics.messages_in(Transport::Http.label(), 1);
    let room = web.rooms.handle(topic)?;
    let answer = tokio::time::timeout(REQUEST_TIMEOUT, room.request(conn, req))
        .await
        .map_err(|_| {
            ApiError(
                StatusCode::GATEWAY_TIMEOUT,
                "the room did not answer within 30 s".into(),
            )
        })?;
    match answer {
        Ok(json) => respond(&json),
        // The script threw: its error, as a server error.
        Err(RoomError::Refused(reason)) => Ok((
            StatusCode::INTERNAL_SERVER_ERROR,
            Json(json!({ "reason": reason })),
        )
            .into_response()),
        Err(other) => Err(other.into()),
    }
}

/// `{method, path, query, headers, body}` for `onRequest`.
fn describe(
    method: &Method,
    path: &str,
    mut params: HashMap<String, String>,
    headers: &HeaderMap,
    body: String,
) -> Value {
    params.remove("token");
    let query: Map<String, Value> = params.into_iter().map(|(k, v)| (k, v.into())).collect();
    let mut seen: Map<String, Value> = Map::new();
    for (name, value) in headers {
        let name = name.as_str();
        if HIDDEN_HEADERS.contains(&name) {
            continue;
        }
        let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
        match seen.get_mut(name) {
            Some(Value::String(joined)) => {
                joined.push_str(", ");
                joined.push_str(&value);
            }
            _ => {
                seen.insert(name.to_string(), value.into());
            }
        }
    }
    json!({
        "method": method.as_str(),
        "path": format!("/{}", path.trim_start_matches('/')),
        "query": query,
        "headers": seen,
        "body": body,
    })
}

/// The HTTP response for what `onRequest` returned.
fn respond(json: &str) -> Result<Response, ApiError> {
    let invalid = |why: String| {
        ApiError(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("onRequest returned {why}"),
        )
    };
    let value: Value = serde_json::from_str(json).map_err(|e| invalid(e.to_string()))?;
    let Some(response) = value.as_object().filter(|o| is_response(o)) else {
        return Ok((
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            json.to_string(),
        )
            .into_response());
    };
    let status = response["status"]
        .as_u64()
        .and_then(|s| StatusCode::from_u16(s as u16).ok())
        .ok_or_else(|| invalid("an invalid status".into()))?;
    let (body, default_type) = match response.get("body") {
        None | Some(Value::Null) => (String::new(), None),
        Some(Value::String(text)) => (text.clone(), Some("text/plain; charset=utf-8")),
        Some(other) => (other.to_string(), Some("application/json")),
    };
    let mut reply = (status, body).into_response();
    let out = reply.headers_mut();
    if let Some(default_type) = default_type {
        out.insert(header::CONTENT_TYPE, HeaderValue::from_static(default_type));
    }
    if let Some(headers) = response.get("headers") {
        let headers = headers
            .as_object()
            .ok_or_else(|| invalid("headers that are not an object".into()))?;
        for (name, value) in headers {
            let name = HeaderName::from_bytes(name.to_ascii_lowercase().as_bytes())
                .map_err(|_| invalid(format!("an invalid header name {name:?}")))?;
            if FRAMING_HEADERS.contains(&name.as_str()) {
                return Err(invalid(format!("the header {name}, which the server sets")));
            }
            let text = value
                .as_str()
                .ok_or_else(|| invalid(format!("a header {name} that is not a string")))?;
            let value = HeaderValue::from_str(text)
                .map_err(|_| invalid(format!("an invalid value for header {name}")))?;
            out.insert(name, value);
        }
    }
    Ok(reply)
}

/// Whether a returned object is a response: an integer `status` of
/// 100–599 and no keys but `status`, `headers` and `body`.
fn is_response(object: &Map<String, Value>) -> bool {
    object
        .get("status")
        .and_then(Value::as_u64)
        .is_some_and(|s| (100..=599).contains(&s))
        && object
            .keys()
            .all(|k| matches!(k.as_str(), "status" | "headers" | "body"))
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn body_of(response: Response) -> String {
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    #[tokio::test]
    async fn a_returned_value_becomes_a_response() {
        let plain = respond(r#"{"count":3}"#).unwrap();
        assert_eq!(plain.status(), 200);
        assert_eq!(plain.headers()["content-type"], "application/json");
        assert_eq!(body_of(plain).await, r#"{"count":3}"#);

        let own = respond(r#"{"status":201,"headers":{"X-Id":"7"},"body":"made"}"#).unwrap();
        assert_eq!(own.status(), 201);
        assert_eq!(own.headers()["x-id"], "7");
        assert_eq!(own.headers()["content-type"], "text/plain; charset=utf-8");
        assert_eq!(body_of(own).await, "made");

        let json_body = respond(r#"{"status":404,"body":{"reason":"no"}}"#).unwrap();
        assert_eq!(json_body.headers()["content-type"], "application/json");
        assert_eq!(body_of(json_body).await, r#"{"reason":"no"}"#);

        // Data that merely has a status field is data.
        let data = respond(r#"{"status":200,"items":[]}"#).unwrap();
        assert_eq!(body_of(data).await, r#"{"status":200,"items":[]}"#);
        assert_eq!(respond("[1,2]").unwrap().status(), 200);
    }

    #[test]
    fn bad_responses_are_server_errors() {
        for bad in [
            r#"{"status":200,"headers":{"content-length":"9"}}"#,
            r#"{"status":200,"headers":{"bad name":"x"}}"#,
            r#"{"status":200,"headers":{"x":1}}"#,
            r#"{"status":200,"headers":[]}"#,
        ] {
            assert_eq!(respond(bad).unwrap_err().0, 500, "{bad}");
        }
    }

    #[test]
    fn requests_are_described_without_credentials_or_hop_by_hop_headers() {
        let mut headers = HeaderMap::new();
        headers.insert("x-a", "1".parse().unwrap());
        headers.append("x-a", "2".parse().unwrap());
        headers.insert("cookie", "secret".parse().unwrap());
        headers.insert("authorization", "Bearer t".parse().unwrap());
        headers.insert("connection", "keep-alive".parse().unwrap());
        let params = HashMap::from([
            ("token".to_string(), "t".to_string()),
            ("q".to_string(), "x".to_string()),
        ]);
        let req = describe(&Method::POST, "a/b", params, &headers, "hi".into());
        assert_eq!(
            req,
            json!({"method": "POST", "path": "/a/b", "query": {"q": "x"},
                   "headers": {"x-a": "1, 2"}, "body": "hi"})
        );
        let req = describe(
            &Method::GET,
            "",
            HashMap::new(),
            &HeaderMap::new(),
            String::new(),
        );
        assert_eq!(req["path"], "/");
    }
}
