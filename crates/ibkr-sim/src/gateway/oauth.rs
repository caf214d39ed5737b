//! OAuth mode over HTTP: `POST /oauth/live_session_token` and the signature gate that the
//! gateway middleware runs for every other `/v1/api` request. This module gathers what the
//! checks need from the request (method, the rebuilt signed URL, form fields, the
//! `Authorization` header), takes the lock and turns refusals into IBKR's 401 bodies; the
//! protocol itself is `crate::oauth::verify`.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::header;
use axum::response::Response;
use serde_json::json;

use super::json_response;
use crate::oauth::OAuthRefusal;
use crate::oauth::verify::{Incoming, Now, answer_token_request, form_fields, read_token_request};
use crate::server::Wire;
use crate::state::Sim;

/// The request-log outcome a handler chose for a non-200 answer (the middleware logs `ok`
/// otherwise).
#[derive(Debug, Clone)]
pub(crate) struct LogOutcome(pub String);

/// The URL the client signed: the listener's scheme, the `Host` header as sent, and the
/// request target as on the wire (query included; `ibkr_oauth` merges the query into the
/// parameters).
pub(crate) fn signed_url(req: &Request) -> String {
    let (scheme, target) = match req.extensions().get::<Wire>() {
        Some(wire) => (
            wire.scheme,
            wire.target.path_and_query().map_or_else(
                || wire.target.path().to_owned(),
                |pq| pq.as_str().to_owned(),
            ),
        ),
        // Not served through `server` (in-process calls): the router saw the whole target only
        // if it was not nested, so put the prefix back.
        None => (
            "http",
            format!(
                "/v1/api{}",
                req.uri().path_and_query().map_or("/", |pq| pq.as_str())
            ),
        ),
    };
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| req.uri().authority().map(|a| a.as_str()))
        .unwrap_or("localhost");
    format!("{scheme}://{host}{target}")
}

/// Reads the fields of an `application/x-www-form-urlencoded` body (they are signed) and puts
/// the body back; other bodies are left alone and give no fields.
pub(crate) async fn take_form(req: Request) -> Result<(Request, Vec<(String, String)>), Response> {
    let is_form = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| {
            ct.trim_start()
                .to_ascii_lowercase()
                .starts_with("application/x-www-form-urlencoded")
        });
    if !is_form {
        return Ok((req, Vec::new()));
    }
    let (parts, body) = req.into_parts();
    let bytes = axum::body::to_bytes(body, 4 << 20).await.map_err(|_| {
        json_response(
            400,
            &json!({ "error": "Bad Request: unreadable body", "statusCode": 400 }),
        )
    })?;
    let fields = form_fields(&bytes);
    Ok((Request::from_parts(parts, Body::from(bytes)), fields))
}

/// A refusal as IBKR answers it, marked for the request log.
pub(crate) fn refusal_response(refusal: OAuthRefusal) -> Response {
    let mut resp = json_response(refusal.status(), &refusal.body());
    resp.extensions_mut().insert(LogOutcome(outcome(refusal)));
    resp
}

/// The request-log outcome of a refusal: `oauth:<reason>`.
pub(crate) fn outcome(refusal: OAuthRefusal) -> String {
    format!("oauth:{}", refusal.reason())
}

/// Checks an HMAC-signed request (OAuth mode, every path but the token request) and gives the
/// request back for the handler. Accepted requests count as logged in; a refusal is counted
/// and returned.
pub(crate) async fn gate(sim: &Sim, req: Request) -> Result<Request, OAuthRefusal> {
    let Some(cfg) = sim.oauth.as_ref() else {
        return Ok(req);
    };
    let url = signed_url(&req);
    let Ok((req, form)) = take_form(req).await else {
        // A body that cannot be read cannot have been signed.
        sim.lock().oauth.refuse(OAuthRefusal::BadSignature);
        return Err(OAuthRefusal::BadSignature);
    };
    let incoming = Incoming {
        method: req.method().as_str(),
        url: &url,
        form: &form,
        authorization: req
            .headers()
            .get(header::AUTHORIZATION)
            .map(|v| v.as_bytes()),
    };
    let mut st = sim.lock();
    match st.oauth.check_signed_request(cfg, &incoming, Now::wall()) {
        Ok(()) => {
            st.session.logged_in = true;
            drop(st);
            Ok(req)
        }
        Err(refusal) => {
            st.oauth.refuse(refusal);
            Err(refusal)
        }
    }
}

/// `POST /oauth/live_session_token`: checks the RSA-SHA256 signed request, does the server's
/// Diffie-Hellman half on a blocking thread, and makes the new token the current one. A 404
/// in gateway mode.
pub(crate) async fn live_session_token(State(sim): State<Arc<Sim>>, req: Request) -> Response {
    let Some(cfg) = sim.oauth.as_ref() else {
        return super::not_found(req).await;
    };
    let url = signed_url(&req);
    let (req, form) = match take_form(req).await {
        Ok(taken) => taken,
        Err(resp) => return resp,
    };
    let now = Now::wall();
    let incoming = Incoming {
        method: req.method().as_str(),
        url: &url,
        form: &form,
        authorization: req
            .headers()
            .get(header::AUTHORIZATION)
            .map(|v| v.as_bytes()),
    };
    let refuse = |refusal: OAuthRefusal| {
        sim.lock().oauth.refuse(refusal);
        refusal_response(refusal)
    };
    let request = match read_token_request(cfg, &incoming, now) {
        Ok(r) => r,
        Err(refusal) => return refuse(refusal),
    };
    let worker = sim.clone();
    let answered = tokio::task::spawn_blocking(move || {
        let answer = match worker.oauth.as_ref() {
            Some(cfg) => answer_token_request(cfg, &request, now),
            None => Err(OAuthRefusal::InvalidConsumer),
        };
        (request, answer)
    })
    .await;
    let (request, answer) = match answered {
        Ok(done) => done,
        Err(_) => {
            return json_response(
                500,
                &json!({ "error": "Internal Server Error", "statusCode": 500 }),
            );
        }
    };
    let (issued, body) = match answer {
        Ok(a) => a,
        Err(refusal) => return refuse(refusal),
    };
    let mut st = sim.lock();
    match st.oauth.finish_token_request(cfg, &request, issued, now) {
        Ok(()) => {
            st.session.logged_in = true;
            json_response(200, &body)
        }
        Err(refusal) => {
            st.oauth.refuse(refusal);
            refusal_response(refusal)
        }
    }
}
