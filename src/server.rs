//! `ibkr-mcp serve`: builds the shared state from the configuration and runs a transport.

use std::sync::Arc;

use anyhow::Context as _;
use rmcp::ServiceExt as _;
use tokio_util::sync::CancellationToken;

use crate::config::{ServeConfig, Transport};
use crate::http::{self, HttpOptions};
use crate::ibkr::{ClientOptions, build_client, hooks::Hooks};
use crate::mcp::catalog::{self, Filter, Inventory};
use crate::mcp::{IbkrServer, ServerState, results};

/// Builds the state every handler shares: the gateway client, the tool inventory, settings.
pub fn build_state(cfg: &ServeConfig) -> anyhow::Result<ServerState> {
    build_state_with(cfg, None)
}

/// [`build_state`], with OAuth inputs already in memory (the demo's generated ones) instead of
/// the `--oauth-*` settings.
pub fn build_state_with(
    cfg: &ServeConfig,
    oauth_inputs: Option<crate::ibkr::oauth::Inputs>,
) -> anyhow::Result<ServerState> {
    let cfg = &cfg.resolved();
    cfg.validate().map_err(anyhow::Error::msg)?;
    let accept_invalid_certs = cfg.gateway_insecure_tls || cfg.gateway_is_loopback();
    let oauth = match (cfg.auth_mode, oauth_inputs) {
        (crate::config::AuthMode::Gateway, _) => None,
        (crate::config::AuthMode::Oauth1, given) => {
            let inputs = match given {
                Some(inputs) => inputs,
                None => crate::ibkr::oauth::Inputs::load(&cfg.oauth.settings())
                    .map_err(anyhow::Error::msg)?,
            };
            let http = crate::ibkr::http_client(&ClientOptions {
                base_url: cfg.gateway_url.clone(),
                accept_invalid_certs,
                timeout: cfg.timeout(),
                ..ClientOptions::default()
            })
            .context("cannot build the HTTP client for IBKR's OAuth endpoint")?;
            Some(crate::ibkr::oauth::OAuth::new(
                inputs,
                &cfg.gateway_url,
                http,
            ))
        }
    };
    let mut hooks = Hooks::new().with_retry(crate::ibkr::hooks::Retry {
        operations: catalog::all()
            .iter()
            .filter(|t| t.read_only && t.idempotent && !t.operation_id.is_empty())
            .map(|t| t.operation_id.clone())
            .collect(),
        retries: cfg.read_retries,
        backoff: std::time::Duration::from_millis(250),
    });
    hooks = hooks.with_cache(crate::ibkr::hooks::ReplyCache::new(
        crate::ibkr::pacing::cached_replies(),
    ));
    // The trading policy is also the request guard: it checks the final path and body of every
    // request of an operation that changes anything, tool or internal.
    let policy = Arc::new(crate::policy::Policy::new(
        crate::policy::Limits {
            allow_live: cfg.allow_live_trading,
            accounts: cfg.trading_accounts.clone(),
            max_quantity: cfg.max_order_quantity,
            max_notional: cfg.max_order_notional,
            sec_types: cfg.allowed_sec_types.clone(),
            max_orders_per_minute: cfg.max_orders_per_minute,
            require_preview: cfg.require_preview,
            preview_ttl: std::time::Duration::from_secs(cfg.preview_ttl),
        },
        catalog::all()
            .iter()
            .filter(|t| !t.read_only && !t.operation_id.is_empty())
            .map(|t| t.operation_id.clone()),
        Some(crate::halt::KillSwitch::new(cfg.kill_switch_path())),
    ));
    hooks = hooks.with_guard(policy.clone());
    if cfg.pacing {
        hooks = hooks.with_gate(Arc::new(crate::ibkr::pacing::Pacer::new(
            std::time::Duration::from_secs(cfg.pacing_max_wait),
        )));
    }
    if let Some(oauth) = &oauth {
        hooks = hooks.with_oauth(oauth.clone());
    }
    let client = build_client(&ClientOptions {
        hooks,
        base_url: cfg.gateway_url.clone(),
        accept_invalid_certs,
        timeout: cfg.timeout(),
    })
    .context("cannot build the HTTP client for the gateway")?;
    let inventory = Inventory::new(
        catalog::all(),
        &Filter {
            allow_trading: cfg.allow_trading,
            allow_question_suppression: cfg.allow_question_suppression,
            toolsets: cfg.toolsets.clone(),
            include: cfg.tools.clone(),
            exclude: cfg.exclude_tools.clone(),
        },
    )
    .map_err(anyhow::Error::msg)?;
    let mut inventory = inventory;
    if cfg.require_preview {
        for tool in ["place_orders", "modify_iserver_order"] {
            inventory.add_argument(
                tool,
                crate::mcp::PREVIEW_TOKEN_ARG,
                "Token from get_order_preview for exactly this accountId and order (single use, \
                 short-lived). This server requires a preview before every order and \
                 modification.",
            );
        }
    }
    let audit = crate::audit::AuditLog::new(cfg.audit_path());
    if cfg.allow_trading {
        audit
            .start(serde_json::json!({
                "allow_live_trading": cfg.allow_live_trading,
                "require_preview": cfg.require_preview,
                "max_order_quantity": cfg.max_order_quantity,
                "max_order_notional": cfg.max_order_notional,
                "max_orders_per_minute": cfg.max_orders_per_minute,
                "kill_switch_file": cfg.kill_switch_path(),
            }))
            .map_err(|e| {
                anyhow::anyhow!(
                    "the audit log cannot be written ({e}); with --allow-trading every write is \
                     recorded there first. Point it at a writable file with --audit-log \
                     (IBKR_MCP_AUDIT_LOG)"
                )
            })?;
    }
    let session = cfg.session_keepalive.then(|| {
        crate::ibkr::session::SessionManager::new(
            client.clone(),
            crate::ibkr::session::SessionConfig {
                tickle_interval: std::time::Duration::from_secs(cfg.tickle_interval.max(1)),
                suppress_question_ids: cfg.suppress_question_ids.clone(),
                take_over_competing: cfg.take_over_competing,
                login_url: cfg.login_url(),
                gateway_url: cfg.gateway_url.clone(),
                can_take_over: inventory.get(crate::mcp::TAKE_OVER_TOOL).is_some(),
                oauth: oauth.clone(),
            },
        )
    });
    let live = if cfg.live {
        let mut config =
            crate::live::LiveConfig::for_base_url(&cfg.gateway_url, accept_invalid_certs)
                .map_err(anyhow::Error::msg)?;
        config.max_quotes = cfg.live_max_quotes.max(1);
        Some(crate::live::Live::new(
            config,
            client.clone(),
            oauth.clone(),
            session.clone(),
            CancellationToken::new(),
        ))
    } else {
        None
    };
    Ok(ServerState {
        live,
        coalesce: std::time::Duration::from_millis(cfg.live_coalesce_ms),
        session,
        orders: crate::mcp::orders::OrderSettings {
            auto_confirm: cfg.auto_confirm_question_ids.clone(),
            max_rounds: cfg.max_question_rounds.max(1),
        },
        snapshot_wait: std::time::Duration::from_secs(cfg.snapshot_wait),
        pending: crate::mcp::orders::PendingQuestions::default(),
        continuations: crate::mcp::orders::Continuations::default(),
        confirm_live_orders: cfg.confirm_live_orders,
        take_over_competing: cfg.take_over_competing,
        demo: cfg.demo,
        policy,
        audit,
        client,
        inventory,
        results: results::Context {
            gateway_url: cfg.gateway_url.clone(),
            login_url: cfg.login_url(),
            timeout: cfg.timeout(),
            max_result_bytes: cfg.max_result_bytes,
            oauth: oauth.is_some(),
        },
        allow_trading: cfg.allow_trading,
        tasks: crate::mcp::tasks::Cache::default(),
    })
}

/// Starts the in-process simulator for `--demo`; returns it with the configuration pointed at it
/// and, with `--auth oauth1`, the generated OAuth credentials the simulator accepts.
pub async fn start_demo(
    mut cfg: ServeConfig,
) -> anyhow::Result<(
    ServeConfig,
    ibkr_sim::SimHandle,
    Option<crate::ibkr::oauth::Inputs>,
)> {
    let mut sim_config = ibkr_sim::SimConfig::default().with_seed(cfg.seed);
    let mut inputs = None;
    if cfg.auth_mode == crate::config::AuthMode::Oauth1 {
        let demo = tokio::task::spawn_blocking(ibkr_sim::oauth::DemoOAuth::generate)
            .await
            .context("generating the demo OAuth keys")?
            .context("cannot generate the demo OAuth keys")?;
        inputs = Some(demo_inputs(&demo)?);
        sim_config = sim_config.with_oauth(demo.sim_oauth());
    }
    let sim = ibkr_sim::start(
        sim_config,
        std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
        ibkr_sim::Tls::SelfSigned,
    )
    .await
    .context("cannot start the demo gateway simulator")?;
    tracing::info!(
        gateway = %sim.base_url(),
        control = %sim.control_url(),
        seed = cfg.seed,
        auth = if inputs.is_some() { "oauth1 (generated test keys)" } else { "gateway" },
        "demo mode: serving against the built-in gateway simulator (paper accounts, no IBKR account needed)"
    );
    cfg.gateway_url = sim.base_url();
    cfg.gateway_login_url = Some(sim.control_url());
    Ok((cfg, sim, inputs))
}

/// The client's half of a demo credential set, as [`crate::ibkr::oauth::Inputs`].
fn demo_inputs(demo: &ibkr_sim::oauth::DemoOAuth) -> anyhow::Result<crate::ibkr::oauth::Inputs> {
    let encryption = ibkr_oauth::EncryptionKey::from_pem(demo.encryption_key_pem())
        .context("demo encryption key")?;
    let prepend = ibkr_oauth::decrypt_prepend(demo.access_token_secret(), &encryption)
        .context("demo access token secret")?;
    let signing =
        ibkr_oauth::SigningKey::from_pem(demo.signature_key_pem()).context("demo signature key")?;
    Ok(crate::ibkr::oauth::Inputs::from_parts(
        demo.credentials(),
        prepend,
        signing,
        demo.dh_params().clone(),
    ))
}

/// Runs the simulator alone until it is asked to stop.
pub async fn run_sim(args: crate::config::SimArgs) -> anyhow::Result<()> {
    let mut config = ibkr_sim::SimConfig::default()
        .with_seed(args.seed)
        .with_pacing(args.pacing)
        .with_idle_timeout(std::time::Duration::from_secs(args.idle_timeout))
        .with_ws(ibkr_sim::WsConfig {
            update_interval: std::time::Duration::from_millis(args.ws_update_ms.max(10)),
            ..ibkr_sim::WsConfig::default()
        });
    if let Some(dir) = &args.oauth_dir {
        let load = {
            let dir = dir.clone();
            move || ibkr_sim::oauth::DemoOAuth::load_or_generate(&dir)
        };
        let demo = tokio::task::spawn_blocking(load)
            .await
            .context("loading the simulator's OAuth credentials")?
            .with_context(|| {
                format!(
                    "cannot load or generate OAuth credentials in {} (--oauth-dir)",
                    dir.display()
                )
            })?;
        config = config.with_oauth(
            demo.sim_oauth()
                .with_lst_lifetime(std::time::Duration::from_secs(args.oauth_token_lifetime)),
        );
        eprintln!(
            "OAuth 1.0a mode: credentials in {dir}; point the server at them with\n  \
             --auth oauth1 --oauth-consumer-key {key} --oauth-access-token-file {dir}/access_token \\\n  \
             --oauth-access-token-secret-file {dir}/access_token_secret \\\n  \
             --oauth-signature-key {dir}/private_signature.pem \\\n  \
             --oauth-encryption-key {dir}/private_encryption.pem --oauth-dh-params {dir}/dhparam.pem",
            dir = dir.display(),
            key = demo.consumer_key(),
        );
    }
    let tls = if args.plain_http {
        ibkr_sim::Tls::None
    } else {
        ibkr_sim::Tls::SelfSigned
    };
    let sim = ibkr_sim::start(config, args.listen, tls)
        .await
        .with_context(|| format!("cannot start the simulator on {} (--listen)", args.listen))?;
    tracing::info!(gateway = %sim.base_url(), control = %sim.control_url(), "gateway simulator running");
    eprintln!(
        "gateway simulator: {} (control: {})",
        sim.base_url(),
        sim.control_url()
    );
    let stop = CancellationToken::new();
    http::shutdown_signal(stop).await;
    sim.shutdown().await;
    Ok(())
}

/// Runs the server until it is asked to stop.
pub async fn run(cfg: ServeConfig) -> anyhow::Result<()> {
    let (cfg, _demo, oauth_inputs) = if cfg.demo {
        let (cfg, sim, inputs) = start_demo(cfg).await?;
        (cfg, Some(sim), inputs)
    } else {
        (cfg, None, None)
    };
    let state = Arc::new(build_state_with(&cfg, oauth_inputs)?);
    let background = CancellationToken::new();
    let _stop_background = background.clone().drop_guard();
    if let Some(session) = &state.session {
        session.spawn(background.clone());
    }
    if cfg.allow_trading {
        tokio::spawn(crate::mcp::halt::watch(state.clone(), background.clone()));
    }
    tracing::info!(
        transport = ?cfg.transport,
        gateway = %cfg.gateway_url,
        tools = state.inventory.len(),
        toolsets = %state.inventory.toolsets().join(","),
        allow_trading = cfg.allow_trading,
        allow_live_trading = cfg.allow_live_trading,
        require_preview = cfg.require_preview,
        auth = if cfg.auth_token.is_some() { "bearer token" } else { "none" },
        audit_log = %state.audit.path().display(),
        "starting ibkr-mcp {}",
        env!("CARGO_PKG_VERSION")
    );
    match cfg.transport {
        Transport::Stdio => {
            let running = IbkrServer::new(state)
                .serve(rmcp::transport::stdio())
                .await
                .context("stdio transport failed to start")?;
            running.waiting().await.context("stdio transport")?;
        }
        Transport::Http => {
            if !cfg.listen.ip().is_loopback() && cfg.auth_token.is_none() {
                tracing::warn!(
                    listen = %cfg.listen,
                    "INSECURE: listening on a non-loopback address without a token \
                     (--insecure-no-auth): anyone who can reach this port can use every exposed tool"
                );
            }
            let shutdown = CancellationToken::new();
            let app = http::app(
                state,
                &HttpOptions {
                    allowed_hosts: cfg.allowed_hosts.clone(),
                    allowed_origins: cfg.allowed_origins.clone(),
                    token: cfg.auth_token.as_ref().map(|t| t.expose().to_string()),
                    max_request_bytes: cfg.max_request_bytes,
                    client_timeout: std::time::Duration::from_secs(cfg.client_timeout),
                    max_sessions: cfg.max_sessions,
                    session_idle_timeout: std::time::Duration::from_secs(cfg.session_idle_timeout),
                    shutdown: shutdown.clone(),
                },
            );
            let listener = tokio::net::TcpListener::bind(cfg.listen)
                .await
                .with_context(|| {
                    format!(
                        "cannot listen on {} (--listen, IBKR_MCP_LISTEN)",
                        cfg.listen
                    )
                })?;
            tracing::info!(
                "MCP endpoint http://{}/mcp",
                listener.local_addr().unwrap_or(cfg.listen)
            );
            tokio::spawn(http::shutdown_signal(shutdown.clone()));
            http::serve(
                listener,
                app,
                shutdown,
                std::time::Duration::from_secs(cfg.client_timeout),
            )
            .await
            .context("HTTP server")?;
        }
    }
    Ok(())
}
