//! The runs page: retrain loss curves (training and validation) of one or more groups
//! on one chart, runs picked across groups to compare, and each sweep's metric against
//! each of its parameters.

use axum::extract::{RawQuery, State as Extract};
use maud::{Markup, PreEscaped, html};

use super::State;
use super::layout::{Page, PageError, encode, job_href, number, shell};
use crate::cli::plots::{self, Curves};

/// Groups one page draws at most: each is a manifest listing.
const MAX_GROUPS: usize = 20;

/// The page's query: `group=` and `run=GROUP/NAME`, each repeatable.
struct Selection {
    groups: Vec<String>,
    runs: Vec<(String, String)>,
}

fn selection(query: Option<&str>) -> Result<Selection, PageError> {
    let mut s = Selection {
        groups: Vec::new(),
        runs: Vec::new(),
    };
    for (k, v) in form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        match &*k {
            "group" if !v.is_empty() => s.groups.push(v.into_owned()),
            "run" => {
                let (g, n) = v.split_once('/').ok_or_else(|| {
                    PageError::bad_request(format!("run `{v}` is not GROUP/NAME"))
                })?;
                s.runs.push((g.to_string(), n.to_string()));
                s.groups.push(g.to_string());
            }
            _ => {}
        }
    }
    s.groups.sort();
    s.groups.dedup();
    if s.groups.len() > MAX_GROUPS {
        return Err(PageError::bad_request(format!(
            "pick at most {MAX_GROUPS} groups"
        )));
    }
    Ok(s)
}

fn inline_svg(svg: anyhow::Result<String>) -> Markup {
    match svg {
        Ok(svg) => html! { div.svg { (PreEscaped(svg)) } },
        Err(e) => html! { p.error { (format!("{e:#}")) } },
    }
}

/// `/runs`.
pub async fn page(Extract(state): State, RawQuery(query): RawQuery) -> Page {
    let selected = selection(query.as_deref())?;
    let fleet = state.snapshots.fleet().await?;
    let all_groups: Vec<String> = fleet["groups"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|g| g["group_id"].as_str().map(str::to_string))
        .collect();
    let mut retrains = Vec::new();
    let mut sweeps = Vec::new();
    for group in &selected.groups {
        let view = state.snapshots.group(group).await?;
        for e in &view.entries {
            if e.kind == "retrain" {
                retrains.push(e.clone());
            } else if e.kind == "tune" && e.artifacts.contains_key("trials") {
                sweeps.push(e.clone());
            }
        }
    }
    let picked = |group: &str, run: &str| {
        selected.runs.is_empty() || selected.runs.iter().any(|(g, n)| g == group && n == run)
    };
    let several_groups = selected.groups.len() > 1;
    let mut curves = Vec::new();
    for e in retrains.iter().filter(|e| picked(&e.group_id, &e.run_id)) {
        let Some(key) = e.artifacts.get("curve") else {
            continue;
        };
        if let Some(curve) = state.snapshots.json(key).await? {
            let label = if several_groups {
                format!("{}/{}", e.group_id, e.run_id)
            } else {
                e.run_id.clone()
            };
            curves.push(Curves::from_artifact(&label, &curve));
        }
    }
    let mut sweep_plots = Vec::new();
    for e in &sweeps {
        if let Some(trials) = state.snapshots.json(&e.artifacts["trials"]).await? {
            let metric = e.metrics["metric"].as_str().unwrap_or("metric").to_string();
            for p in plots::sweep_params(&trials) {
                sweep_plots.push((
                    format!("{}/{}", e.group_id, e.run_id),
                    plots::metric_vs_param_svg(&metric, &p.param, &p.points, p.best),
                ));
            }
        }
    }
    let metric = |e: &labelfleet_manifest::ManifestEntry, m: &str| match e.metrics.get(m) {
        Some(v) => number(v),
        None => e.counts.get(m).map_or("–".into(), u64::to_string),
    };
    let body = html! {
        h1 { "Runs" }
        form.filters method="get" action="/runs" {
            label { "groups (hold Ctrl to pick several)"
                select name="group" multiple size=(all_groups.len().clamp(2, 8)) {
                    @for g in &all_groups { option value=(g) selected[selected.groups.contains(g)] { (g) } }
                }
            }
            button type="submit" { "show" }
        }
        @if selected.groups.is_empty() {
            p.muted { "Pick one or more groups to see their retrain runs' loss curves and their sweeps." }
        } @else {
            h2 { "Retrain runs" }
            @if retrains.is_empty() {
                p.muted { "No finished retrain job in these groups." }
            } @else {
                form method="get" action="/runs" {
                    @for g in &selected.groups { input type="hidden" name="group" value=(g); }
                    table {
                        tr { th { "compare" } th { "run" } th { "train loss" } th { "valid loss" } th { "test loss" } th { "tok/s" } th { "steps" } }
                        @for e in &retrains {
                            @let id = format!("{}/{}", e.group_id, e.run_id);
                            tr {
                                td { input type="checkbox" name="run" value=(id) checked[!selected.runs.is_empty() && picked(&e.group_id, &e.run_id)]; }
                                td { a href=(job_href(&e.group_id, &e.run_id)) { (id) } }
                                td.num { (metric(e, "train_loss")) } td.num { (metric(e, "valid_loss")) } td.num { (metric(e, "test_loss")) }
                                td.num { (metric(e, "tokens_per_second")) } td.num { (metric(e, "steps")) }
                            }
                        }
                    }
                    button type="submit" { "compare the checked runs" }
                }
                @if curves.is_empty() {
                    p.muted { "No loss curve recorded for these runs." }
                } @else {
                    h2 { "Loss curves" }
                    (inline_svg(plots::loss_curves_svg(&curves)))
                }
            }
            h2 { "Sweeps" }
            @if sweep_plots.is_empty() {
                p.muted { "No finished sweep (tune job) in these groups." }
            } @else {
                @for (tune, svg) in sweep_plots {
                    div { p { a href=(tune.split_once('/').map(|(g, n)| job_href(g, n)).unwrap_or_default()) { (tune) } } (inline_svg(svg)) }
                }
            }
        }
        p.muted { "Every group: " @for g in &all_groups { a href=(format!("/runs?group={}", encode(g))) { (g) } " " } }
    };
    Ok(shell("Runs", "Runs", None, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_query_picks_groups_and_runs() {
        let s = selection(Some("group=b&group=a&run=c%2Fx&group=a")).unwrap();
        assert_eq!(s.groups, ["a", "b", "c"]);
        assert_eq!(s.runs, [("c".to_string(), "x".to_string())]);
        assert!(selection(Some("run=nogroup")).is_err());
        assert!(selection(None).unwrap().groups.is_empty());
    }
}
