//! Smaller stateful features: price alerts (and the MTA alert), watchlists, FYI notifications
//! and settings, and financial-advisor allocation groups and presets.
//!
//! Each keeps its own seeded objects so that a fresh simulator can list, read and delete
//! something; rendering to the gateway's JSON lives in `gateway`.

use std::collections::BTreeMap;

use serde_json::{Value, json};

/// One alert condition.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Condition {
    pub ctype: i64,
    pub conidex: String,
    pub operator: String,
    pub trigger_method: String,
    pub value: String,
    pub logic_bind: String,
    pub time_zone: Option<String>,
}

/// A price (or MTA) alert.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Alert {
    pub id: i64,
    pub account: String,
    pub name: String,
    pub message: String,
    pub active: bool,
    pub repeatable: bool,
    pub tif: String,
    pub expire_time: Option<String>,
    pub email: String,
    pub send_message: bool,
    pub show_popup: bool,
    pub itws_only: bool,
    pub outside_rth: bool,
    pub conditions: Vec<Condition>,
    pub created_ms: i64,
    pub triggered: bool,
    pub mta: bool,
}

/// Alerts of all accounts.
#[derive(Debug, Clone)]
pub(crate) struct Alerts {
    pub items: BTreeMap<i64, Alert>,
    pub next_id: i64,
    pub next_request: i64,
}

impl Alerts {
    /// One price alert and one MTA alert per account.
    pub(crate) fn seed(accounts: &[&str], now_ms: i64) -> Self {
        let mut items = BTreeMap::new();
        let mut id = 1_900_000_000;
        for (i, acct) in accounts.iter().enumerate() {
            id += 1;
            items.insert(
                id,
                Alert {
                    id,
                    account: acct.to_string(),
                    name: if i == 0 {
                        "AAPL above 260".into()
                    } else {
                        "IBM below 200".into()
                    },
                    message: if i == 0 {
                        "AAPL traded above 260".into()
                    } else {
                        "IBM traded below 200".into()
                    },
                    active: true,
                    repeatable: false,
                    tif: "GTC".into(),
                    expire_time: None,
                    email: String::new(),
                    send_message: false,
                    show_popup: true,
                    itws_only: false,
                    outside_rth: false,
                    conditions: vec![Condition {
                        ctype: 1,
                        conidex: if i == 0 {
                            "265598@SMART".into()
                        } else {
                            "8314@SMART".into()
                        },
                        operator: if i == 0 { ">=".into() } else { "<=".into() },
                        trigger_method: "0".into(),
                        value: if i == 0 {
                            "260.00".into()
                        } else {
                            "200.00".into()
                        },
                        logic_bind: "n".into(),
                        time_zone: Some("US/Eastern".into()),
                    }],
                    created_ms: now_ms - 86_400_000,
                    triggered: false,
                    mta: false,
                },
            );
            id += 1;
            items.insert(
                id,
                Alert {
                    id,
                    account: acct.to_string(),
                    name: "Mobile Trading Assistant".into(),
                    message: String::new(),
                    active: true,
                    repeatable: true,
                    tif: "GTC".into(),
                    expire_time: None,
                    email: String::new(),
                    send_message: true,
                    show_popup: true,
                    itws_only: false,
                    outside_rth: true,
                    conditions: Vec::new(),
                    created_ms: now_ms - 30 * 86_400_000,
                    triggered: false,
                    mta: true,
                },
            );
        }
        Self {
            items,
            next_id: id + 1,
            next_request: 1,
        }
    }
}

/// A watchlist row.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Row {
    Contract(i64),
    Header(String),
}

/// A user watchlist.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Watchlist {
    pub id: String,
    pub name: String,
    pub modified_ms: i64,
    pub rows: Vec<Row>,
}

/// FYI notification.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Notification {
    pub id: String,
    pub date_s: i64,
    pub title: String,
    pub body: String,
    pub code: String,
    pub read: bool,
}

/// FYI setting (one per type code).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct FyiSetting {
    pub code: String,
    pub name: String,
    pub description: String,
    pub enabled: bool,
    pub disclaimer_read: bool,
}

/// FYI delivery device.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Device {
    pub id: String,
    pub name: String,
    pub ui_name: String,
    pub enabled: bool,
}

/// FYI state.
#[derive(Debug, Clone)]
pub(crate) struct Fyi {
    pub notifications: Vec<Notification>,
    pub settings: Vec<FyiSetting>,
    pub email: bool,
    pub devices: Vec<Device>,
}

/// The FYI type codes of the document, with our own names and descriptions.
pub(crate) const FYI_CODES: [(&str, &str, &str); 23] = [
    (
        "BA",
        "Borrow Availability",
        "Tell me when shares become available to borrow for short sales I tried before.",
    ),
    (
        "CA",
        "Comparable Algo",
        "Tell me about an algo or order type with lower fees than the one I used.",
    ),
    (
        "DA",
        "Dividends Announcement",
        "Tell me about dividends announced for my holdings.",
    ),
    (
        "EA",
        "Upcoming Earnings",
        "Tell me about upcoming earnings of my holdings.",
    ),
    (
        "MF",
        "Mutual Fund/ETF Advisory",
        "Tell me about ETFs comparable to my funds.",
    ),
    (
        "OE",
        "Option or Future expiration",
        "Tell me three days before my options or futures expire.",
    ),
    (
        "PR",
        "Portfolio Research",
        "Send me research related to my portfolio.",
    ),
    (
        "SE",
        "Short-term Trading",
        "Tell me about short-term trading activity in my account.",
    ),
    (
        "SG",
        "Short Sale Regulation",
        "Tell me when a short sale restriction applies to my holdings.",
    ),
    (
        "SM",
        "System Messages",
        "Send me messages about the trading system.",
    ),
    (
        "T2",
        "Assignment Realizing Long-Term Gains",
        "Tell me when an assignment realizes long-term gains.",
    ),
    (
        "TO",
        "Takeover",
        "Tell me about takeover offers for my holdings.",
    ),
    ("UA", "User Alerts", "Send me the alerts I set up."),
    (
        "M8",
        "871(m) Trades",
        "Tell me about positions subject to 871(m) withholding.",
    ),
    (
        "PS",
        "Platform Use Suggestions",
        "Send me suggestions to use the platform better.",
    ),
    (
        "DL",
        "Option Exercise Loss Prevention",
        "Tell me when early exercise decisions may lose money.",
    ),
    (
        "PT",
        "Position Transfer",
        "Tell me about configuration changes needed after position transfers.",
    ),
    (
        "CB",
        "Missing Cost Basis",
        "Tell me when cost basis is missing for transferred positions.",
    ),
    ("MS", "Milestones", "Tell me about account milestones."),
    (
        "TD",
        "10% Depreciation Notice",
        "Tell me when my positions lose 10% or more.",
    ),
    ("ST", "Statements", "Tell me when a statement is ready."),
    ("TI", "Trade Ideas", "Send me trade ideas."),
    (
        "CT",
        "Cost Transparency",
        "Send me cost and charges reports.",
    ),
];

impl Fyi {
    /// Seeded notifications, settings and one device.
    pub(crate) fn seed(now_ms: i64) -> Self {
        let now_s = now_ms / 1000;
        let notes = [
            (
                "OE",
                "IBKR FYI: Option Expiration",
                "An option position in your account expires within three days.",
            ),
            (
                "EA",
                "IBKR FYI: Upcoming Earnings",
                "A company you hold reports earnings next week.",
            ),
            (
                "MF",
                "IBKR FYI: ETF Advisory",
                "ETFs with similar exposure and lower fees exist for one of your holdings.",
            ),
        ];
        Self {
            notifications: notes
                .iter()
                .enumerate()
                .map(|(i, (code, title, body))| Notification {
                    id: format!(
                        "{}",
                        2_026_000_000_000_000_i64 + now_s % 1_000_000 * 10 + i as i64
                    ),
                    date_s: now_s - (i as i64 + 1) * 3_600,
                    title: title.to_string(),
                    body: body.to_string(),
                    code: code.to_string(),
                    read: i == 2,
                })
                .collect(),
            settings: FYI_CODES
                .iter()
                .map(|(c, n, d)| FyiSetting {
                    code: c.to_string(),
                    name: n.to_string(),
                    description: d.to_string(),
                    enabled: !matches!(*c, "TI" | "PS"),
                    disclaimer_read: false,
                })
                .collect(),
            email: true,
            devices: vec![Device {
                id: "sim-device-0001".into(),
                name: "Simulated Phone".into(),
                ui_name: "Simulated Phone (iOS)".into(),
                enabled: true,
            }],
        }
    }
}

/// An allocation group (financial-advisor accounts).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Group {
    pub name: String,
    pub accounts: Vec<Value>,
    pub method: String,
}

/// Allocation groups and presets.
#[derive(Debug, Clone)]
pub(crate) struct Allocation {
    pub groups: BTreeMap<String, Group>,
    pub presets: Value,
}

impl Allocation {
    /// One group over both accounts and IBKR-like default presets.
    pub(crate) fn seed(accounts: &[&str]) -> Self {
        let mut groups = BTreeMap::new();
        groups.insert(
            "Core".to_string(),
            Group {
                name: "Core".into(),
                accounts: accounts
                    .iter()
                    .map(|a| json!({ "name": a, "amount": 50 }))
                    .collect(),
                method: "R".into(),
            },
        );
        Self {
            groups,
            presets: json!({
                "group_auto_close_positions": false,
                "default_method_for_all": "AvailableEquity",
                "profiles_auto_close_positions": false,
                "strict_credit_check": false,
                "group_proportional_allocation": false,
            }),
        }
    }
}
