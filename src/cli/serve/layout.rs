//! The page shell every page shares (title, navigation, style), errors as pages, and
//! the small formatting helpers the pages use.

use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use maud::{DOCTYPE, Markup, PreEscaped, html};
use serde_json::Value;

use crate::cli::redact::redact;

/// What a page handler returns.
pub type Page = Result<Html<String>, PageError>;

/// A page that could not be shown, with the reason (credentials blanked).
#[derive(Debug)]
pub struct PageError {
    status: StatusCode,
    message: String,
}

impl PageError {
    /// 404 with what was not found.
    pub fn not_found(message: impl Into<String>) -> PageError {
        PageError {
            status: StatusCode::NOT_FOUND,
            message: message.into(),
        }
    }

    /// 400 with what is wrong with the request.
    pub fn bad_request(message: impl Into<String>) -> PageError {
        PageError {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
        }
    }
}

impl From<anyhow::Error> for PageError {
    fn from(e: anyhow::Error) -> PageError {
        PageError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            message: format!("cannot read the backends: {e:#}"),
        }
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let body = shell(
            "error",
            "",
            None,
            html! {
                h1 { (self.status.as_u16()) " " (self.status.canonical_reason().unwrap_or("")) }
                p.error { (redact(&self.message)) }
                p { a href="/" { "back to the fleet" } }
            },
        );
        (self.status, body).into_response()
    }
}

/// The fallback route.
pub async fn not_found() -> PageError {
    PageError::not_found("there is no such page")
}

const STYLE: &str = r#"
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 0; color: #1d2330; background: #f6f7f9; }
header { background: #1d2330; color: #fff; padding: 10px 24px; display: flex; gap: 24px; align-items: baseline; }
header a { color: #c9d3e6; text-decoration: none; } header a.on, header a:hover { color: #fff; }
header .brand { font-weight: 700; color: #fff; margin-right: 12px; }
main { padding: 16px 24px 48px; max-width: 1400px; }
h1 { font-size: 22px; margin: 8px 0 12px; } h2 { font-size: 17px; margin: 24px 0 8px; }
table { border-collapse: collapse; background: #fff; margin: 4px 0 12px; }
th, td { border-bottom: 1px solid #e3e6eb; padding: 5px 10px; text-align: left; vertical-align: top; }
th { background: #eef1f5; font-weight: 600; font-size: 12px; text-transform: uppercase; color: #4a5468; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.cards { display: flex; gap: 12px; flex-wrap: wrap; margin: 8px 0 16px; }
.card { background: #fff; border: 1px solid #e3e6eb; border-radius: 6px; padding: 10px 16px; min-width: 130px; }
.card b { display: block; font-size: 24px; } .card span { color: #5b6578; font-size: 12px; }
.bar { width: 160px; height: 10px; background: #e3e6eb; border-radius: 5px; overflow: hidden; display: inline-block; vertical-align: middle; }
.bar i { display: block; height: 100%; background: #3a7bd5; }
.muted { color: #6b7385; } .error { color: #b3261e; } .ok { color: #1e7b34; }
.state { padding: 1px 7px; border-radius: 9px; font-size: 12px; background: #e3e6eb; }
.state.done { background: #d5f0dc; } .state.running { background: #d6e6fb; } .state.dead { background: #f7d4d2; } .state.held { background: #f3ead0; }
pre { background: #fff; border: 1px solid #e3e6eb; padding: 8px; overflow-x: auto; font-size: 12px; max-height: 420px; white-space: pre-wrap; }
.svg { background: #fff; border: 1px solid #e3e6eb; display: inline-block; margin: 4px 8px 8px 0; }
.svg svg { max-width: 100%; height: auto; display: block; }
.turn { background: #fff; border: 1px solid #e3e6eb; border-radius: 6px; padding: 10px 14px; margin: 8px 0; }
.turn.wrong { border-left: 4px solid #b3261e; } .turn.right { border-left: 4px solid #1e7b34; }
.utt { margin: 2px 0; } .utt b { display: inline-block; width: 64px; color: #5b6578; font-weight: 600; }
.slot { display: inline-block; margin: 2px 4px 2px 0; padding: 1px 6px; border-radius: 4px; font-size: 12px; font-family: ui-monospace, monospace; }
.slot.same { background: #d5f0dc; } .slot.missed { background: #fde2c4; } .slot.wrong { background: #f7d4d2; } .slot.extra { background: #e6dcf7; }
form.filters { display: flex; gap: 12px; align-items: end; background: #fff; border: 1px solid #e3e6eb; padding: 8px 12px; border-radius: 6px; }
form.filters label { display: flex; flex-direction: column; font-size: 12px; color: #4a5468; }
details summary { cursor: pointer; color: #3a5a96; }
"#;

/// The page shell: `title`, the navigation with `active` marked, an optional reload
/// every `refresh` seconds, and `body`.
pub fn shell(title: &str, active: &str, refresh: Option<u64>, body: Markup) -> Html<String> {
    let nav = [("/", "Fleet"), ("/groups", "Groups"), ("/runs", "Runs")];
    Html(
        html! {
            (DOCTYPE)
            html lang="en" {
                head {
                    meta charset="utf-8";
                    meta name="viewport" content="width=device-width, initial-scale=1";
                    @if let Some(secs) = refresh.filter(|s| *s > 0) {
                        meta http-equiv="refresh" content=(secs);
                    }
                    title { (title) " · labelfleet" }
                    style { (PreEscaped(STYLE)) }
                }
                body {
                    header {
                        a.brand href="/" { "labelfleet" }
                        @for (href, name) in nav {
                            a.on[active == name] href=(href) { (name) }
                        }
                    }
                    main { (body) }
                }
            }
        }
        .into_string(),
    )
}

/// A number for a table: 3 decimals for fractions, none for large values.
pub fn number(v: &Value) -> String {
    match v {
        Value::Number(n) if n.is_f64() => match n.as_f64().unwrap_or_default() {
            0.0 => "0.000".into(),
            x if x.abs() < 1e-2 => format!("{x:.2e}"),
            x if x.abs() >= 1000.0 => format!("{x:.0}"),
            x => format!("{x:.3}"),
        },
        Value::Number(n) => n.to_string(),
        Value::Null => "–".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Free text from the backends (errors, reasons, progress), credentials blanked.
pub fn text(v: &Value) -> String {
    match v {
        Value::String(s) => redact(s),
        Value::Null => "–".into(),
        other => redact(&other.to_string()),
    }
}

/// `(done, total)` from the first `N/M` in a progress line (`step 120/200 · …`).
pub fn fraction(progress: &str) -> Option<(f64, f64)> {
    progress.split_whitespace().find_map(|word| {
        let (a, b) = word.split_once('/')?;
        let (a, b) = (a.parse::<f64>().ok()?, b.parse::<f64>().ok()?);
        (b > 0.0).then_some((a.min(b), b))
    })
}

/// A progress bar for `progress`, when it says how far along it is.
pub fn bar(progress: &str) -> Markup {
    html! {
        @if let Some((done, total)) = fraction(progress) {
            span.bar title=(format!("{:.0} %", 100.0 * done / total)) {
                i style=(format!("width: {:.1}%", 100.0 * done / total)) {}
            }
        }
    }
}

/// Seconds as `42 s`, `3 min 5 s`, `2 h 4 min`.
pub fn duration(seconds: f64) -> String {
    let s = seconds.max(0.0).round() as u64;
    match s {
        0..60 => format!("{s} s"),
        60..3600 => format!("{} min {} s", s / 60, s % 60),
        _ => format!("{} h {} min", s / 3600, (s % 3600) / 60),
    }
}

/// The path of a job's page.
pub fn job_href(group: &str, name: &str) -> String {
    format!("/groups/{}/jobs/{}", encode(group), encode(name))
}

/// A path segment or query value, percent-encoded.
pub fn encode(text: &str) -> String {
    form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_lines_give_a_fraction_when_they_have_one() {
        assert_eq!(fraction("step 120/200 · loss 1.2"), Some((120.0, 200.0)));
        assert_eq!(fraction("turns 3/0"), None);
        assert_eq!(fraction("running python3"), None);
        assert_eq!(fraction("12/10 over"), Some((10.0, 10.0)));
        assert_eq!(duration(3725.0), "1 h 2 min");
        assert_eq!(number(&serde_json::json!(0.12345)), "0.123");
        assert_eq!(number(&serde_json::json!(0.0)), "0.000");
        assert_eq!(number(&serde_json::json!(1234.6)), "1235");
        assert_eq!(number(&serde_json::json!(7)), "7");
    }
}
