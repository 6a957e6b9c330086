//! Collecting per-round outcomes, and printing them as a markdown table and as JSON.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use crate::measures::{Better, Figure, Measure};

/// One round's outcome for one figure.
pub(crate) type Outcome = Result<f64, String>;

/// Everything measured for one server under test.
pub(crate) struct TargetResults {
    pub(crate) label: String,
    pub(crate) command: String,
    pub(crate) rounds: BTreeMap<&'static str, Vec<Outcome>>,
}

impl TargetResults {
    pub(crate) fn new(label: &str, command: &str) -> Self {
        Self {
            label: label.to_string(),
            command: command.to_string(),
            rounds: BTreeMap::new(),
        }
    }

    pub(crate) fn record(&mut self, key: &'static str, outcome: Outcome) {
        self.rounds.entry(key).or_default().push(outcome);
    }

    fn outcomes(&self, key: &str) -> &[Outcome] {
        self.rounds.get(key).map_or(&[], Vec::as_slice)
    }

    /// Median of the successful rounds (for yes/no figures: 1.0 only if every round said yes).
    fn median(&self, figure: &Figure) -> Option<f64> {
        let mut ok: Vec<f64> = self
            .outcomes(figure.key)
            .iter()
            .filter_map(|o| o.clone().ok())
            .collect();
        if ok.is_empty() {
            return None;
        }
        if figure.better == Better::Yes {
            let all = self
                .outcomes(figure.key)
                .iter()
                .all(|o| matches!(o, Ok(v) if *v >= 0.5));
            return Some(if all { 1.0 } else { 0.0 });
        }
        ok.sort_by(f64::total_cmp);
        let n = ok.len();
        Some(if n % 2 == 1 {
            ok[n / 2]
        } else {
            (ok[n / 2 - 1] + ok[n / 2]) / 2.0
        })
    }
}

fn format_value(figure: &Figure, value: f64) -> String {
    if figure.better == Better::Yes {
        return if value >= 0.5 { "yes" } else { "no" }.to_string();
    }
    if value >= 1000.0 {
        format!("{value:.0}")
    } else if value >= 10.0 {
        format!("{value:.1}")
    } else {
        format!("{value:.3}")
    }
}

fn short(error: &str) -> String {
    let first_line = error.lines().next().unwrap_or("");
    let mut text: String = first_line.chars().take(90).collect();
    if text.len() < first_line.len() {
        text.push('…');
    }
    text.replace('|', "/")
}

fn median_cell(target: &TargetResults, figure: &Figure) -> String {
    let outcomes = target.outcomes(figure.key);
    if outcomes.is_empty() {
        return "–".to_string();
    }
    let errors = outcomes.iter().filter(|o| o.is_err()).count();
    match target.median(figure) {
        None => {
            let first = outcomes
                .iter()
                .find_map(|o| o.as_ref().err())
                .cloned()
                .unwrap_or_default();
            format!("error: {}", short(&first))
        }
        Some(value) => {
            let mut cell = format_value(figure, value);
            if figure.better == Better::Yes {
                let yes = outcomes
                    .iter()
                    .filter(|o| matches!(o, Ok(v) if *v >= 0.5))
                    .count();
                cell = format!("{cell} ({yes}/{})", outcomes.len());
            } else if errors > 0 {
                cell = format!("{cell} ({errors} of {} rounds failed)", outcomes.len());
            }
            cell
        }
    }
}

fn rounds_cell(target: &TargetResults, figure: &Figure) -> String {
    let cells: Vec<String> = target
        .outcomes(figure.key)
        .iter()
        .map(|o| match o {
            Ok(v) => format_value(figure, *v),
            Err(e) => format!("error: {}", short(e)),
        })
        .collect();
    cells.join(" / ")
}

/// `ours` relative to `upstream`, oriented so that > 1 means ours is better.
pub(crate) fn ratio(
    figure: &Figure,
    ours: &TargetResults,
    upstream: &TargetResults,
) -> Option<f64> {
    let (o, u) = (ours.median(figure)?, upstream.median(figure)?);
    match figure.better {
        Better::Higher if u > 0.0 => Some(o / u),
        Better::Lower if o > 0.0 => Some(u / o),
        _ => None,
    }
}

fn selected_figures<'a>(measures: &'a [&'a Measure]) -> impl Iterator<Item = &'a Figure> {
    measures.iter().flat_map(|m| m.figures.iter())
}

fn find<'a>(targets: &'a [TargetResults], label: &str) -> Option<&'a TargetResults> {
    targets.iter().find(|t| t.label == label)
}

/// Prints the results table (markdown) to stdout.
pub(crate) fn print_table(measures: &[&Measure], targets: &[TargetResults]) {
    let pair = find(targets, "ours").zip(find(targets, "upstream"));
    let mut header = vec!["metric".to_string()];
    header.extend(targets.iter().map(|t| format!("{} (median)", t.label)));
    if pair.is_some() {
        header.push("ratio (>1: ours better)".to_string());
    }
    header.extend(targets.iter().map(|t| format!("{} rounds", t.label)));
    println!("| {} |", header.join(" | "));
    println!("|{}", "---|".repeat(header.len()));
    for figure in selected_figures(measures) {
        let mut row = vec![figure.label.to_string()];
        row.extend(targets.iter().map(|t| median_cell(t, figure)));
        if let Some((ours, upstream)) = pair {
            row.push(ratio(figure, ours, upstream).map_or("–".to_string(), |r| format!("{r:.2}x")));
        }
        row.extend(targets.iter().map(|t| rounds_cell(t, figure)));
        println!("| {} |", row.join(" | "));
    }
    let mut errors = Vec::new();
    for target in targets {
        for (key, outcomes) in &target.rounds {
            for (round, outcome) in outcomes.iter().enumerate() {
                if let Err(e) = outcome {
                    errors.push(format!("- {} {key} round {}: {e}", target.label, round + 1));
                }
            }
        }
    }
    if !errors.is_empty() {
        println!();
        println!("Errors:");
        errors.dedup();
        for line in errors {
            println!("{line}");
        }
    }
}

/// A performance goal for ours relative to upstream (or absolute).
struct Goal {
    text: &'static str,
    check: fn(&TargetResults, &TargetResults) -> Option<bool>,
}

fn figure(key: &str) -> Option<&'static Figure> {
    crate::measures::MEASURES
        .iter()
        .flat_map(|m| m.figures.iter())
        .find(|f| f.key == key)
}

fn ratio_at_least(
    key: &str,
    ours: &TargetResults,
    upstream: &TargetResults,
    min: f64,
) -> Option<bool> {
    ratio(figure(key)?, ours, upstream).map(|r| r >= min)
}

const GOALS: &[Goal] = &[
    Goal {
        text: "spawn round trip ≥ 20x faster (p50)",
        check: |o, u| ratio_at_least("spawn_p50_us", o, u, 20.0),
    },
    Goal {
        text: "rpc round trip ≥ 3x faster (p50)",
        check: |o, u| ratio_at_least("rpc_p50_us", o, u, 3.0),
    },
    Goal {
        text: "rpc round trip ≥ 3x faster (p50, CPUs kept awake)",
        check: |o, u| ratio_at_least("rpc_awake_p50_us", o, u, 3.0),
    },
    Goal {
        text: "notification stream ≥ 3x throughput",
        check: |o, u| ratio_at_least("notify_mibs", o, u, 3.0),
    },
    Goal {
        text: "process/read stream lossless and ≥ 5x throughput",
        check: |o, u| {
            let lossless = o.median(figure("read_lossless")?)? >= 0.5;
            Some(lossless && ratio_at_least("read_mibs", o, u, 5.0)?)
        },
    },
    Goal {
        text: "200× sleep 1: all exited in < 1.2 s",
        check: |o, _| o.median(figure("sleep_all_exited_s")?).map(|s| s < 1.2),
    },
    Goal {
        text: "fs/readFile 64 MiB ≥ 4x throughput",
        check: |o, u| ratio_at_least("fs_read_mibs", o, u, 4.0),
    },
    Goal {
        text: "8 × 8 MiB fs/writeFile ≥ 3x throughput",
        check: |o, u| ratio_at_least("fs_write8_mibs", o, u, 3.0),
    },
    Goal {
        text: "fs/readBlock streaming ≥ 3x throughput (1 and 4 blocks in flight)",
        check: |o, u| {
            Some(
                ratio_at_least("fs_block1_mibs", o, u, 3.0)?
                    && ratio_at_least("fs_block4_mibs", o, u, 3.0)?,
            )
        },
    },
    Goal {
        text: "one 64 MiB fs/writeFile succeeds",
        // Measured but failed in every round counts as not met.
        check: |o, _| {
            let measured = !o.outcomes("fs_write64_ok").is_empty();
            let ok = o.median(figure("fs_write64_ok")?).is_some_and(|v| v >= 0.5);
            measured.then_some(ok)
        },
    },
    Goal {
        text: "sandboxed fs operation < 5 ms (p50)",
        check: |o, _| o.median(figure("fs_sandbox_p50_ms")?).map(|ms| ms < 5.0),
    },
    Goal {
        text: "idle RSS ≤ 1/4 of upstream",
        check: |o, u| ratio_at_least("rss_kib", o, u, 4.0),
    },
];

fn goal_results(targets: &[TargetResults]) -> Vec<(&'static str, Option<bool>)> {
    let Some((ours, upstream)) = find(targets, "ours").zip(find(targets, "upstream")) else {
        return Vec::new();
    };
    GOALS
        .iter()
        .map(|g| (g.text, (g.check)(ours, upstream)))
        .collect()
}

/// Prints the goal checklist (only when both ours and upstream were measured).
pub(crate) fn print_goals(targets: &[TargetResults]) {
    let goals = goal_results(targets);
    if goals.is_empty() {
        return;
    }
    println!();
    println!("| target | status |");
    println!("|---|---|");
    for (text, met) in goals {
        let status = match met {
            Some(true) => "met",
            Some(false) => "not met",
            None => "n/a (not measured or failed)",
        };
        println!("| {text} | {status} |");
    }
}

/// The whole run as JSON.
pub(crate) fn to_json(measures: &[&Measure], targets: &[TargetResults], meta: Value) -> Value {
    let pair = find(targets, "ours").zip(find(targets, "upstream"));
    let figures: Vec<Value> = selected_figures(measures)
        .map(|figure| {
            let per_target: serde_json::Map<String, Value> = targets
                .iter()
                .map(|t| {
                    let rounds: Vec<Value> = t
                        .outcomes(figure.key)
                        .iter()
                        .map(|o| match o {
                            Ok(v) => json!(v),
                            Err(e) => json!({"error": e}),
                        })
                        .collect();
                    (
                        t.label.clone(),
                        json!({"median": t.median(figure), "rounds": rounds}),
                    )
                })
                .collect();
            json!({
                "key": figure.key,
                "label": figure.label,
                "better": format!("{:?}", figure.better).to_lowercase(),
                "results": per_target,
                "ratio": pair.and_then(|(o, u)| ratio(figure, o, u)),
            })
        })
        .collect();
    let goals: Vec<Value> = goal_results(targets)
        .into_iter()
        .map(|(text, met)| json!({"target": text, "met": met}))
        .collect();
    let servers: Vec<Value> = targets
        .iter()
        .map(|t| json!({"label": t.label, "command": t.command}))
        .collect();
    json!({"meta": meta, "servers": servers, "figures": figures, "goals": goals})
}
