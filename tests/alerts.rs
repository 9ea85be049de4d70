//! The PrometheusRule's alerts, evaluated by the real Prometheus rule engine (promtool).
//!
//! The rules are read from manifests/base/monitoring.yaml (the chart's
//! files/prometheus-rules.yaml must say the same) and written to a rule file; then one test
//! case per alert found there (`alert::<Name>`): tests/alerts/<Name>.yaml exists, holds a
//! case where the alert fires on a synthetic series of its failure and one where it stays
//! silent on a healthy one, `promtool test rules` passes it, and the alert's runbook_url
//! points at a section of docs/runbook.md that exists. A new alert without any of these
//! fails here by name. Also: `promtool check rules`, and no test file or runbook section is
//! left without its alert.

#[path = "support/tools.rs"]
mod tools;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;

use libtest_mimic::{Arguments, Failed, Trial};
use serde_json::Value;
use tools::*;

const RUNBOOK: &str = "docs/runbook.md";
const RUNBOOK_URL_PREFIX: &str = "https://github.com/audit-guard/audit-guard/blob/main/docs/runbook.md#";

fn tests_dir() -> PathBuf {
    repo().join("tests/alerts")
}

/// GitHub's anchor for a Markdown heading: lower case, spaces to dashes, punctuation dropped.
fn anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

/// The level-2 headings of the runbook, as anchors.
fn runbook_sections() -> BTreeSet<String> {
    let text = std::fs::read_to_string(repo().join(RUNBOOK)).unwrap();
    text.lines().filter_map(|l| l.strip_prefix("## ")).map(anchor).collect()
}

/// The rule groups in a file promtool reads, in a fresh directory next to the test files.
fn workdir(spec: &Value) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("rules.yaml"), serde_yaml::to_string(spec).unwrap()).unwrap();
    dir
}

fn check_rules(spec: &Value) -> Result<(), Failed> {
    let dir = workdir(spec);
    promtool_check_rules(&dir.path().join("rules.yaml")).map_err(|e| format!("promtool check rules:\n{e}"))?;
    Ok(())
}

fn chart_says_the_same(spec: &Value) -> Result<(), Failed> {
    let chart = chart_rule_spec();
    if &chart == spec {
        return Ok(());
    }
    // Rule by rule, so the message names what to copy.
    let rules = |v: &Value| -> Vec<(String, Value)> {
        let mut out = Vec::new();
        for g in v["groups"].as_array().into_iter().flatten() {
            for r in g["rules"].as_array().into_iter().flatten() {
                let name = r["alert"].as_str().or(r["record"].as_str()).unwrap_or("?");
                out.push((format!("group {} rule {name}", g["name"].as_str().unwrap_or("?")), r.clone()));
            }
        }
        out
    };
    let (k, c) = (rules(spec), rules(&chart));
    let mut problems = Vec::new();
    for (name, rule) in &k {
        match c.iter().find(|(n, _)| n == name) {
            None => problems.push(format!("{name}: only in manifests/base/monitoring.yaml")),
            Some((_, other)) if other != rule => problems.push(format!("{name} differs:\n  kustomize: {rule}\n  chart:     {other}")),
            Some(_) => {}
        }
    }
    for (name, _) in c.iter().filter(|(n, _)| !k.iter().any(|(m, _)| m == n)) {
        problems.push(format!("{name}: only in the chart"));
    }
    if problems.is_empty() {
        problems.push("same rules, different grouping or order".into());
    }
    Err(format!(
        "charts/audit-guard/files/prometheus-rules.yaml (the chart's PrometheusRule spec) differs from the PrometheusRule in \
         manifests/base/monitoring.yaml; make them the same:\n{}",
        problems.join("\n")
    )
    .into())
}

/// What a promtool test file says about one alert: (cases where it fires, cases where it is silent).
fn cases(test: &Value, alert: &str) -> (Vec<String>, Vec<String>) {
    let (mut firing, mut silent) = (Vec::new(), Vec::new());
    for case in test["tests"].as_array().into_iter().flatten() {
        let name = case["name"].as_str().unwrap_or("(unnamed)").to_string();
        let checks: Vec<&Value> = case["alert_rule_test"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|t| t["alertname"] == alert)
            .collect();
        if checks.is_empty() {
            continue;
        }
        if checks.iter().any(|t| t["exp_alerts"].as_array().is_some_and(|a| !a.is_empty())) {
            firing.push(name);
        } else {
            silent.push(name);
        }
    }
    (firing, silent)
}

fn alert_case(spec: &Value, alert: &str, rule: &Value) -> Result<(), Failed> {
    let mut problems = Vec::new();

    // The runbook link, and the section it points at.
    let url = rule["annotations"]["runbook_url"].as_str().unwrap_or("");
    match url.strip_prefix(RUNBOOK_URL_PREFIX) {
        None => problems.push(format!(
            "annotation runbook_url is {url:?}; want {RUNBOOK_URL_PREFIX}{}",
            alert.to_lowercase()
        )),
        Some(section) if section != alert.to_lowercase() => {
            problems.push(format!("runbook_url points at #{section}, not at #{}", alert.to_lowercase()))
        }
        Some(_) => {}
    }
    if !runbook_sections().contains(&alert.to_lowercase()) {
        problems.push(format!(
            "{RUNBOOK} has no section for it: add `## {alert}` (what it means, what to do)"
        ));
    }

    // The promtool test file: present, firing and silent cases, and passing.
    let file = tests_dir().join(format!("{alert}.yaml"));
    if !file.exists() {
        problems.push(format!(
            "no promtool test: write tests/alerts/{alert}.yaml (rule_files: [rules.yaml]) with a case where it fires on a synthetic \
             series of its failure and one where it stays silent on a healthy one"
        ));
        return Err(problems.join("\n").into());
    }
    let text = std::fs::read_to_string(&file).unwrap();
    let test: Value = serde_yaml::from_str(&text).map_err(|e| format!("{}: {e}", file.display()))?;
    let (firing, silent) = cases(&test, alert);
    if firing.is_empty() {
        problems.push(format!("{}: no case where {alert} fires (exp_alerts not empty)", file.display()));
    }
    if silent.is_empty() {
        problems.push(format!("{}: no case where {alert} stays silent (exp_alerts: [])", file.display()));
    }
    let dir = workdir(spec);
    let copy = dir.path().join(format!("{alert}.yaml"));
    std::fs::copy(&file, &copy).unwrap();
    let out = run(Command::new(promtool()).args(["test", "rules"]).arg(&copy).current_dir(dir.path()));
    let report = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    if !out.status.success() {
        problems.push(format!("promtool test rules {}:\n{report}", file.display()));
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("\n").into())
    }
}

/// Test files and runbook sections that no alert uses any more.
fn nothing_left_over(names: &BTreeSet<String>) -> Result<(), Failed> {
    let mut problems = Vec::new();
    for entry in std::fs::read_dir(tests_dir()).unwrap() {
        let path = entry.unwrap().path();
        let stem = path.file_stem().unwrap().to_string_lossy().to_string();
        if path.extension().is_some_and(|e| e == "yaml") && !names.contains(&stem) {
            problems.push(format!("{}: no alert {stem} in the PrometheusRule", path.display()));
        }
    }
    let anchors: BTreeSet<String> = names.iter().map(|n| n.to_lowercase()).collect();
    for section in runbook_sections() {
        if !anchors.contains(&section) {
            problems.push(format!("{RUNBOOK}: section #{section} belongs to no alert"));
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("\n").into())
    }
}

fn main() {
    let args = Arguments::from_args();
    let spec = kustomize_rule_spec();
    let alerts = alerts(&spec);
    let names: BTreeSet<String> = alerts
        .iter()
        .map(|(_, r)| r["alert"].as_str().unwrap_or_default().to_string())
        .collect();
    let mut trials = Vec::new();
    {
        let spec = spec.clone();
        trials.push(Trial::test("rules::promtool_check_rules", move || check_rules(&spec)));
    }
    {
        let spec = spec.clone();
        trials.push(Trial::test("rules::the_chart_ships_the_same_rules", move || {
            chart_says_the_same(&spec)
        }));
    }
    trials.push(Trial::test("rules::no_test_file_or_runbook_section_without_its_alert", move || {
        nothing_left_over(&names)
    }));
    for (_group, rule) in alerts {
        let name = rule["alert"].as_str().unwrap_or_default().to_string();
        let spec = spec.clone();
        trials.push(Trial::test(format!("alert::{name}"), move || alert_case(&spec, &name, &rule)));
    }
    libtest_mimic::run(&args, trials).exit();
}
