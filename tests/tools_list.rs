//! What the model sees, pinned: the `tools/list` payload (names, descriptions, input and output
//! schemas, annotations) against a golden file, the README's tools table against the catalog,
//! and the payload's size in bytes and o200k tokens for the default and the full tool sets.
//!
//! The golden file must not carry IBKR's text: schema descriptions and examples copied from
//! IBKR's document are replaced by a fingerprint (length and SHA-256 prefix), so any change to
//! them still shows as a diff. Tool descriptions are our own (spec/tools.toml) and kept as is.

mod common;

use ibkr_mcp::mcp::catalog::{self, Filter, Inventory};
use rmcp::model::ListToolsResult;
use serde_json::Value;

fn inventory(filter: Filter) -> Inventory {
    Inventory::new(catalog::all(), &filter).expect("inventory")
}

fn everything() -> Filter {
    Filter {
        allow_trading: true,
        allow_question_suppression: true,
        toolsets: vec!["all".into()],
        ..Filter::default()
    }
}

/// The `tools/list` result exactly as the server sends it.
fn payload(inv: &Inventory) -> String {
    serde_json::to_string(&ListToolsResult::with_all_items(inv.mcp_tools())).unwrap()
}

fn fingerprint(v: &Value) -> Value {
    let text = match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let hex = ibkr_mcp::spec::repair::sha256_hex(text.as_bytes())[..12].to_string();
    Value::String(format!(
        "<ibkr text: {} chars, sha256 {hex}>",
        text.chars().count()
    ))
}

/// Replaces IBKR-derived prose (descriptions, examples) inside a schema with fingerprints.
fn scrub(v: &mut Value) {
    match v {
        Value::Object(m) => {
            for (k, x) in m.iter_mut() {
                if k == "description" || k == "examples" {
                    *x = fingerprint(x);
                } else {
                    scrub(x);
                }
            }
        }
        Value::Array(a) => a.iter_mut().for_each(scrub),
        _ => {}
    }
}

#[test]
fn tools_list_matches_the_golden_file() {
    let inv = inventory(everything());
    let generated = inv.defs().filter(|d| !catalog::is_server_tool(d)).count();
    assert_eq!(
        generated, 95,
        "every trading operation of the pinned document is a tool"
    );
    assert_eq!(inv.len(), 95 + catalog::server_tools().len());
    let mut list: Value = serde_json::from_str(&payload(&inv)).unwrap();
    for tool in list["tools"].as_array_mut().unwrap() {
        for key in ["inputSchema", "outputSchema"] {
            if let Some(s) = tool.get_mut(key) {
                scrub(s);
            }
        }
    }
    common::golden(
        "tools_list.json",
        &(serde_json::to_string_pretty(&list).unwrap() + "\n"),
    );
}

#[test]
fn every_tool_description_is_our_own_from_the_allowlist() {
    let text =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/spec/tools.toml")).unwrap();
    let allow = ibkr_mcp::spec::model::parse_allowlist(&text).unwrap();
    for def in catalog::all()
        .iter()
        .filter(|d| !catalog::is_server_tool(d))
    {
        let entry = allow.iter().find(|e| e.name == def.name).unwrap();
        assert_eq!(
            entry.description.as_deref(),
            Some(def.description.as_str()),
            "{}: every tool needs its own description in spec/tools.toml",
            def.name
        );
    }
}

/// Checks the README section between `<!-- {marker}:start -->` and `<!-- {marker}:end -->` is
/// `generated`, or rewrites it under `EXPECTORATE=overwrite`.
fn readme_section(marker: &str, generated: &str) {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/README.md");
    let readme = std::fs::read_to_string(path).unwrap();
    let (start, end) = (
        format!("<!-- {marker}:start -->\n"),
        format!("<!-- {marker}:end -->"),
    );
    let from = readme
        .find(&start)
        .unwrap_or_else(|| panic!("README has {start}"))
        + start.len();
    let to = readme
        .find(&end)
        .unwrap_or_else(|| panic!("README has {end}"));
    if std::env::var("EXPECTORATE").as_deref() == Ok("overwrite") {
        std::fs::write(
            path,
            format!("{}{generated}{}", &readme[..from], &readme[to..]),
        )
        .unwrap();
        return;
    }
    assert_eq!(
        &readme[from..to],
        generated,
        "README {marker} table is stale: `EXPECTORATE=overwrite cargo test --test tools_list`"
    );
}

#[test]
fn readme_tools_table_is_the_generated_one() {
    readme_section("tools", &catalog::markdown_table(catalog::all()));
}

#[test]
fn tools_list_payload_size_is_reported_and_within_budget() {
    let bpe = tiktoken_rs::o200k_base().expect("o200k tokenizer");
    let mut report = String::new();
    let mut sizes = Vec::new();
    for (label, filter) in [
        ("default toolsets, read-only", Filter::default()),
        (
            "default toolsets, trading allowed",
            Filter {
                allow_trading: true,
                ..Filter::default()
            },
        ),
        ("all toolsets, trading allowed", everything()),
    ] {
        let inv = inventory(filter);
        let p = payload(&inv);
        let tokens = bpe.encode_with_special_tokens(&p).len();
        report.push_str(&format!(
            "{label}: {} tools, {} bytes, {tokens} o200k tokens\n",
            inv.len(),
            p.len()
        ));
        sizes.push(tokens);
    }
    // What each tool of the default toolsets costs (trading allowed), largest first.
    let inv = inventory(Filter {
        allow_trading: true,
        ..Filter::default()
    });
    let mut each: Vec<(usize, String)> = inv
        .mcp_tools()
        .into_iter()
        .map(|t| {
            let n = bpe
                .encode_with_special_tokens(&serde_json::to_string(&t).unwrap())
                .len();
            (n, t.name.to_string())
        })
        .collect();
    each.sort_by(|a, b| b.cmp(a));
    for (n, name) in each {
        report.push_str(&format!("  {name}: {n} tokens\n"));
    }
    println!("{report}");
    std::fs::create_dir_all(concat!(env!("CARGO_MANIFEST_DIR"), "/target")).unwrap();
    std::fs::write(
        concat!(env!("CARGO_MANIFEST_DIR"), "/target/tools-list-size.txt"),
        &report,
    )
    .unwrap();
    // Budgets: a regression that bloats what every conversation pays for must be noticed.
    // The targets for the task-tool default: ≤ 3,000 read-only, ≤ 5,000 with trading.
    assert!(
        sizes[0] <= 3_000,
        "default tools/list costs {} tokens",
        sizes[0]
    );
    assert!(
        sizes[1] <= 5_000,
        "default tools/list with trading costs {} tokens",
        sizes[1]
    );
    assert!(
        sizes[2] < 45_000,
        "full tools/list costs {} tokens",
        sizes[2]
    );
}

#[test]
fn readme_configuration_table_is_the_generated_one() {
    readme_section("config", &ibkr_mcp::config::markdown_table());
}

#[test]
fn env_example_documents_every_setting() {
    let example =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/.env.example")).unwrap();
    let table = ibkr_mcp::config::markdown_table();
    let missing: Vec<&str> = table
        .split('`')
        .filter(|w| w.starts_with("IBKR_MCP_"))
        .filter(|v| !example.contains(&format!("{v}=")))
        .collect();
    assert!(missing.is_empty(), ".env.example lacks {missing:?}");
}
