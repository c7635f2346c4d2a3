//! `labelfleet serve`: a read-only web UI of the fleet, served by the binary itself.
//!
//! Pages are HTML rendered on the server (maud), with the plots `report` draws inline
//! as SVG and no script beyond a `<meta>` refresh:
//!
//! - [`fleet`]: queue depth, in flight, held, dead letters, and the workers with their
//!   progress (refreshes itself);
//! - [`groups`]: every group, each group's jobs, and a job's config, provenance,
//!   artifacts (downloadable) and log of attempts;
//! - [`runs`]: retrain loss curves, several runs on one chart, and sweep plots;
//! - [`labels`]: a self_label or eval job's turns, predicted against gold.
//!
//! Every page reads the backends through [`Snapshots`], which caches what it read for
//! a few seconds, so a page refreshed every second by several people costs at most one
//! `status` worth of calls per interval. The server only reads: it opens the backends
//! read-only and calls no method that writes. [`auth`] holds the bind and token policy.

mod auth;
mod cache;
mod fleet;
mod groups;
mod labels;
mod layout;
mod runs;
mod snapshots;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use axum::routing::get;

use self::auth::Token;
use self::snapshots::Snapshots;
use super::backends::{self, Access, DEFAULT_MAX_RECEIVES};
use super::{Exit, GlobalArgs};

/// Arguments of `serve`.
#[derive(clap::Args, Debug)]
pub struct ServeArgs {
    /// Address to listen on. Loopback by default; any other address needs --token.
    #[arg(long, default_value = "127.0.0.1:8686", value_name = "ADDR:PORT")]
    pub bind: SocketAddr,
    /// A secret every request must carry (at least 16 characters): as
    /// `Authorization: Bearer TOKEN`, or once as `?token=TOKEN` in a browser, which
    /// then keeps it in a cookie. Required to bind anywhere but loopback.
    #[arg(long, env = "LABELFLEET_SERVE_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// How often the fleet page reloads itself, in seconds (0: never).
    #[arg(long, default_value_t = 5, value_name = "SECS")]
    pub refresh: u64,
    /// How long what a page read from the backends is reused, in seconds.
    #[arg(long, default_value_t = 3.0, value_name = "SECS")]
    pub cache: f64,
}

/// What every handler shares.
pub struct AppState {
    /// What the backends said, cached.
    pub snapshots: Snapshots,
    /// The fleet page's reload interval, in seconds (0: none).
    pub refresh: u64,
}

/// The handlers' view of [`AppState`].
pub type State = axum::extract::State<Arc<AppState>>;

/// The router: every page and download, behind the token check when there is a token.
pub fn router(state: Arc<AppState>, token: Option<Token>) -> Router {
    let routes = Router::new()
        .route("/", get(fleet::page))
        .route("/groups", get(groups::list))
        .route("/groups/{group}", get(groups::group))
        .route("/groups/{group}/jobs/{name}", get(groups::job))
        .route(
            "/groups/{group}/jobs/{name}/artifacts/{*file}",
            get(groups::artifact),
        )
        .route("/groups/{group}/jobs/{name}/labels", get(labels::page))
        .route("/runs", get(runs::page))
        .fallback(layout::not_found)
        .with_state(state);
    auth::guard(routes, token)
}

/// Runs `serve` until SIGINT or SIGTERM.
pub async fn run(global: &GlobalArgs, args: ServeArgs) -> anyhow::Result<()> {
    let token = auth::check_bind(args.bind, args.token.as_deref())
        .map_err(|message| Exit::new(Exit::CONFIG, message))?;
    if !(args.cache.is_finite() && (0.0..=3600.0).contains(&args.cache)) {
        return Err(Exit::new(Exit::CONFIG, "--cache must be between 0 and 3600 seconds").into());
    }
    let opened = backends::open(global, DEFAULT_MAX_RECEIVES, Access::ReadOnly).await?;
    let describe = opened.backends.queue.describe();
    let state = Arc::new(AppState {
        snapshots: Snapshots::new(opened.backends, Duration::from_secs_f64(args.cache)),
        refresh: args.refresh,
    });
    let listener = tokio::net::TcpListener::bind(args.bind)
        .await
        .with_context(|| {
            format!(
                "cannot listen on {} (is another server using it?)",
                args.bind
            )
        })?;
    let local = listener.local_addr().context("reading the bound address")?;
    // The one line scripts read to find a port chosen by the system (`--bind 127.0.0.1:0`).
    println!("labelfleet serve: http://{local}/ ({describe})");
    tracing::info!(address = %local, auth = if token.is_some() { "bearer" } else { "none (loopback)" }, "serving");
    let app = router(state, token);
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {}
            }
        })
        .await
        .context("serving")?;
    Ok(())
}
