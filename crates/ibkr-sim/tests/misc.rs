//! Alerts, watchlists, FYI, allocation groups, scanners and contract lookups over real HTTP:
//! what is created can be read back, what is deleted is gone.

mod common;

use serde_json::json;

#[tokio::test]
async fn watchlist_round_trip() {
    let sim = common::start(common::unpaced()).await;
    let (s, v) = common::post(&sim, "/iserver/watchlist", json!({ "id": "77", "name": "Mine", "rows": [{ "C": 8314 }, { "H": "" }, { "C": 12087792 }] })).await;
    assert_eq!(s, 200);
    assert_eq!(
        v["instruments"],
        json!([]),
        "the create answer lists no instruments, as live"
    );
    let (_, v) = common::get(&sim, "/iserver/watchlist?id=77").await;
    assert_eq!(v["name"], "Mine");
    assert_eq!(v["instruments"][0]["ticker"], "IBM");
    assert_eq!(v["instruments"][1], json!({ "H": "" }));
    assert_eq!(v["instruments"][2]["assetClass"], "CASH");
    let (_, v) = common::get(&sim, "/iserver/watchlists?SC=USER_WATCHLIST").await;
    assert!(
        v["data"]["user_lists"]
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l["id"] == "77")
    );
    let (_, v) = common::delete(&sim, "/iserver/watchlist?id=77").await;
    assert_eq!(v["data"]["deleted"], "77");
    assert_eq!(common::get(&sim, "/iserver/watchlist?id=77").await.0, 400);
    let (s, _) = common::post(
        &sim,
        "/iserver/watchlist",
        json!({ "id": "78", "name": "Bad", "rows": [{ "C": 1 }] }),
    )
    .await;
    assert_eq!(s, 400, "unknown conid");
    sim.shutdown().await;
}

#[tokio::test]
async fn alert_create_deactivate_delete() {
    let sim = common::start(common::unpaced()).await;
    let body = json!({ "alertName": "KO below 10", "alertMessage": "cheap", "alertRepeatable": 0, "outsideRth": 0, "tif": "GTC",
        "conditions": [{ "type": 1, "conidex": "8894@SMART", "operator": "<=", "triggerMethod": "0", "value": "10", "logicBind": "n" }] });
    let (_, v) = common::post(&sim, "/iserver/account/DU7654321/alert", body).await;
    assert_eq!(v["success"], true);
    let id = v["order_id"].as_i64().unwrap();
    let (_, list) = common::get(&sim, "/iserver/account/DU7654321/alerts").await;
    assert!(
        list.as_array()
            .unwrap()
            .iter()
            .any(|a| a["order_id"] == id && a["alert_active"] == 1)
    );
    common::post(
        &sim,
        "/iserver/account/DU7654321/alert/activate",
        json!({ "alertId": id, "alertActive": 0 }),
    )
    .await;
    let (_, v) = common::get(&sim, &format!("/iserver/account/alert/{id}?type=Q")).await;
    assert_eq!(v["alert_active"], 0);
    assert_eq!(v["alert_triggered"], false);
    assert_eq!(v["conditions"][0]["condition_value"], "10");
    let (_, v) = common::delete(&sim, &format!("/iserver/account/DU7654321/alert/{id}")).await;
    assert_eq!(v["success"], true);
    let (_, list) = common::get(&sim, "/iserver/account/DU7654321/alerts").await;
    assert!(list.as_array().unwrap().iter().all(|a| a["order_id"] != id));
    assert_eq!(
        common::delete(&sim, &format!("/iserver/account/DU7654321/alert/{id}"))
            .await
            .0,
        400
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn fyi_mark_read_and_settings() {
    let sim = common::start(common::unpaced()).await;
    let unread = common::get(&sim, "/fyi/unreadnumber").await.1["BN"]
        .as_i64()
        .unwrap();
    assert!(unread > 0);
    let (_, notes) = common::get(&sim, "/fyi/notifications?max=10").await;
    let id = notes
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["R"] == 0)
        .unwrap()["ID"]
        .as_str()
        .unwrap()
        .to_string();
    let (s, v) = common::put(&sim, &format!("/fyi/notifications/{id}"), json!({})).await;
    assert_eq!(s, 200);
    assert_eq!(v["P"]["ID"], id.as_str());
    assert_eq!(
        common::get(&sim, "/fyi/unreadnumber").await.1["BN"]
            .as_i64()
            .unwrap(),
        unread - 1
    );
    common::post(&sim, "/fyi/settings/TI", json!({ "enabled": true })).await;
    let (_, settings) = common::get(&sim, "/fyi/settings").await;
    assert_eq!(
        settings
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["FC"] == "TI")
            .unwrap()["A"],
        1
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn allocation_groups_add_rename_delete() {
    let sim = common::start(common::unpaced()).await;
    let accounts = json!([{ "name": "DU1234567", "amount": 1 }]);
    common::post(
        &sim,
        "/iserver/account/allocation/group",
        json!({ "name": "G1", "accounts": accounts, "default_method": "N" }),
    )
    .await;
    let (_, v) = common::put(
        &sim,
        "/iserver/account/allocation/group",
        json!({ "name": "G2", "prev_name": "G1", "accounts": accounts, "default_method": "E" }),
    )
    .await;
    assert_eq!(v["success"], true);
    let (_, v) = common::get(&sim, "/iserver/account/allocation/group").await;
    let names: Vec<&str> = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["name"].as_str().unwrap())
        .collect();
    assert!(names.contains(&"G2") && !names.contains(&"G1"), "{names:?}");
    let (_, v) = common::post(
        &sim,
        "/iserver/account/allocation/group/single",
        json!({ "name": "G2" }),
    )
    .await;
    assert_eq!(v["default_method"], "E");
    assert_eq!(
        common::post(
            &sim,
            "/iserver/account/allocation/group/delete",
            json!({ "name": "G2" })
        )
        .await
        .1["success"],
        true
    );
    assert_eq!(
        common::post(
            &sim,
            "/iserver/account/allocation/group/delete",
            json!({ "name": "G2" })
        )
        .await
        .1["success"],
        false
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn scanner_ranks_by_change_and_lookups_find_contracts() {
    let sim = common::start(common::unpaced()).await;
    let (_, v) = common::post(&sim, "/iserver/scanner/run", json!({ "instrument": "STK", "type": "TOP_PERC_GAIN", "location": "STK.US.MAJOR", "filter": [] })).await;
    let changes: Vec<f64> = v["contracts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            c["scan_data"]
                .as_str()
                .unwrap()
                .trim_end_matches('%')
                .parse()
                .unwrap()
        })
        .collect();
    assert!(changes.len() >= 10);
    assert!(changes.windows(2).all(|w| w[0] >= w[1]), "{changes:?}");
    let (_, v) = common::get(&sim, "/iserver/secdef/search?symbol=apple&name=true").await;
    assert_eq!(v[0]["conid"], "265598");
    assert!(
        v[0]["sections"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["secType"] == "OPT")
    );
    let (_, v) = common::get(&sim, "/trsrv/stocks?symbols=MSFT,NOPE").await;
    assert_eq!(v["MSFT"][0]["contracts"][0]["conid"], 272093);
    assert_eq!(v["NOPE"], json!([]));
    let (_, v) = common::get(&sim, "/iserver/currency/pairs?currency=USD").await;
    assert_eq!(v["USD"].as_array().unwrap().len(), 3);
    let (_, a) = common::get(&sim, "/iserver/exchangerate?source=EUR&target=USD").await;
    let (_, b) = common::get(&sim, "/iserver/exchangerate?source=USD&target=EUR").await;
    let product = a["rate"].as_f64().unwrap() * b["rate"].as_f64().unwrap();
    assert!((product - 1.0).abs() < 0.01, "{a} {b}");
    let (_, v) = common::get(
        &sim,
        "/portfolio/DU1234567/positions/0?sort=mktValue&direction=d",
    )
    .await;
    let mv: Vec<f64> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["mktValue"].as_f64().unwrap())
        .collect();
    assert!(mv.windows(2).all(|w| w[0] >= w[1]), "{mv:?}");
    assert_eq!(
        common::get(&sim, "/portfolio/DU1234567/positions/1")
            .await
            .1,
        json!([])
    );
    sim.shutdown().await;
}
