//! Session endpoints: auth status, tickle, SSO validation, `ssodh/init`, reauthenticate and
//! logout. The state machine itself lives in `state::session`.

use serde_json::{Value, json};

use super::{Reply, Req, ok};
use crate::state::{Sim, State};

const MAC: &str = "02:5E:51:A0:1B:7C";
const SERVER_NAME: &str = "SimGw1";
const SERVER_VERSION: &str = "Build 10.40.0s, simulated ibkr-sim gateway";
const USER_ID: i64 = 10_203_040;
/// The simulated user name (also the WebSocket login frame's `success`).
pub(crate) const USER_NAME: &str = "simtrader1";

/// The `/iserver/auth/status` body for the current state.
pub(crate) fn auth_status_body(st: &State) -> Value {
    let s = &st.session;
    if s.authenticated() {
        json!({
            "authenticated": true,
            "established": true,
            "competing": false,
            "connected": true,
            "message": "",
            "MAC": MAC,
            "serverInfo": { "serverName": SERVER_NAME, "serverVersion": SERVER_VERSION },
            "hardware_info": format!("5f1d7a2c|{MAC}"),
            "fail": "",
        })
    } else {
        json!({
            "authenticated": false,
            "competing": s.competing,
            "connected": s.logged_in,
            "message": if s.competing { "Another session has taken over the brokerage session" } else { "" },
            "MAC": MAC,
            "serverInfo": { "serverName": Value::Null, "serverVersion": Value::Null },
            "fail": "",
        })
    }
}

/// `POST|GET /iserver/auth/status`.
pub(crate) fn auth_status(sim: &Sim, _r: &Req) -> Reply {
    ok(auth_status_body(&sim.lock()))
}

/// `POST|GET /tickle`.
pub(crate) fn tickle(sim: &Sim, _r: &Req) -> Reply {
    let st = sim.lock();
    let auth = auth_status_body(&st);
    let hmds = if st.session.authenticated() {
        json!({ "authStatus": { "authenticated": true, "connected": true } })
    } else {
        json!({ "error": "no bridge" })
    };
    ok(json!({
        "session": st.session.sso_session,
        "ssoExpires": 600_000,
        "collission": false,
        "userId": USER_ID,
        "hmds": hmds,
        "iserver": { "authStatus": auth },
    }))
}

/// `GET /sso/validate`.
pub(crate) fn sso_validate(sim: &Sim, _r: &Req) -> Reply {
    let st = sim.lock();
    let now = chrono::Utc::now().timestamp_millis();
    let expires = (24 * 3_600_000 - (now - st.session.login_ms)).clamp(0, i64::from(i32::MAX));
    ok(json!({
        "USER_ID": USER_ID,
        "USER_NAME": USER_NAME,
        "RESULT": true,
        "AUTH_TIME": st.session.login_ms,
        "SF_ENABLED": false,
        "IS_FREE_TRIAL": false,
        "CREDENTIAL": USER_NAME,
        "IP": "127.0.0.1",
        "EXPIRES": expires,
        "QUALIFIED_FOR_MOBILE_AUTH": Value::Null,
        "LANDING_APP": "UNIVERSAL",
        "IS_MASTER": false,
        "lastAccessed": now,
        "loginType": 2,
        "PAPER_USER_NAME": USER_NAME,
        "features": { "env": "PROD", "wlms": true, "realtime": true, "bond": true, "optionChains": true, "calendar": true, "newMf": true },
        "region": "NJ",
    }))
}

/// `POST /iserver/auth/ssodh/init`: opens a brokerage session; with `compete: true` it also
/// takes the session over from a competing one.
pub(crate) fn ssodh_init(sim: &Sim, r: &Req) -> Reply {
    let compete = r.field("compete").and_then(Value::as_bool).unwrap_or(false);
    let mut st = sim.lock();
    if st.session.competing && !compete {
        return ok(auth_status_body(&st));
    }
    if !st.session.authenticated() {
        st.open_brokerage();
    }
    ok(auth_status_body(&st))
}

/// `GET|POST /iserver/reauthenticate`: reopens the brokerage session unless another session
/// competes for it.
pub(crate) fn reauthenticate(sim: &Sim, _r: &Req) -> Reply {
    let mut st = sim.lock();
    if !st.session.competing && !st.session.authenticated() {
        st.open_brokerage();
    }
    ok(json!({ "message": "triggered" }))
}

/// `POST|GET /logout`: ends the SSO login; everything answers 401 until the control API logs
/// in again.
pub(crate) fn logout(sim: &Sim, _r: &Req) -> Reply {
    let mut st = sim.lock();
    st.lose_brokerage();
    st.session.logged_in = false;
    st.session.competing = false;
    ok(json!({ "status": true }))
}
