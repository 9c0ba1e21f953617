//! Turning results into what people read: `results.json`, `report.md` (the tables), SVG plots of
//! p99 latency against offered load, and the targets with what was measured.

use std::fmt::Write as _;
use std::path::Path;

use crate::results::{Measurement, Results, TargetCheck};
use crate::svg::{Series, line_chart};

const MB: f64 = 1e6;

/// The best measurement of a cell over the run's rounds: highest throughput, lowest p99, lowest
/// event delay (background load only ever makes a run worse).
fn find<'a>(
    r: &'a Results,
    system: &str,
    scenario: &str,
    workload: &str,
    rate: Option<f64>,
) -> Option<&'a Measurement> {
    let score = |m: &Measurement| -> f64 {
        match m.scenario.as_str() {
            "throughput" => -m.rps().unwrap_or(0.0),
            "streaming" => m.event_delay.as_ref().map_or(f64::INFINITY, |d| d.p99),
            _ => m.open_loop.as_ref().and_then(|o| o.latency.as_ref()).map_or(f64::INFINITY, |l| l.p99),
        }
    };
    r.measurements
        .iter()
        .filter(|m| {
            m.system == system
                && m.scenario == scenario
                && m.workload == workload
                && m.skipped.is_none()
                && rate.is_none_or(|rate| m.offered_rate.is_some_and(|o| (o - rate).abs() < 0.5))
        })
        .min_by(|a, b| score(a).total_cmp(&score(b)))
}

fn label<'a>(r: &'a Results, id: &'a str) -> &'a str {
    r.systems.iter().find(|s| s.id == id).map_or(id, |s| s.label.as_str())
}

fn ok_systems(r: &Results) -> Vec<String> {
    r.systems.iter().filter(|s| s.status == "ok").map(|s| s.id.clone()).collect()
}

/// Works out the targets (issue 19's: the second round of speed) from the measurements.
pub fn finish(r: &mut Results) {
    let mut targets = Vec::new();
    let bare = find(r, "bare", "throughput", "chat", None).and_then(Measurement::rps);
    let reference = r.systems.iter().any(|s| s.id == "sluice-ref");
    for id in ["sluice", "sluice-warn", "sluice-ref"].into_iter().filter(|id| *id != "sluice-ref" || reference) {
        let sluice = find(r, id, "throughput", "chat", None).and_then(Measurement::rps);
        let (measured, met) = match (sluice, bare) {
            (Some(s), Some(b)) if b > 0.0 => {
                (format!("{s:.0} / {b:.0} req/s = {:.0}% of the bare proxy", s / b * 100.0), Some(s / b >= 0.85))
            }
            _ => ("not measured".into(), None),
        };
        targets.push(TargetCheck {
            name: format!("throughput, {}", label(r, id)),
            target: "at least 85% of the bare pass-through proxy (chat, same run)".into(),
            measured,
            met,
        });
    }
    let p99 = |r: &Results, id: &str| {
        find(r, id, "latency", "chat", Some(5000.0)).and_then(|m| m.open_loop.as_ref()?.latency.as_ref().map(|l| l.p99))
    };
    let (measured, met) = match (p99(r, "sluice"), p99(r, "direct")) {
        (Some(s), Some(d)) => (format!("p99 {s:.3} ms vs {d:.3} ms direct: {:+.3} ms", s - d), Some(s - d <= 0.25)),
        _ => ("not measured".into(), None),
    };
    targets.push(TargetCheck {
        name: "added p99 latency at 5k req/s".into(),
        target: "at most 0.25 ms over calling the simulator directly (chat, 0 ms simulator)".into(),
        measured,
        met,
    });
    // (p99 added, rate, p99, p50 added)
    let mut worst: Option<(f64, f64, f64, f64)> = None;
    for m in r.measurements.iter().filter(|m| m.system == "sluice" && m.scenario == "streaming") {
        let Some(best) = find(r, "sluice", "streaming", &m.workload, m.offered_rate) else { continue };
        if !std::ptr::eq(best, m) {
            continue;
        }
        let direct = find(r, "direct", "streaming", &m.workload, m.offered_rate);
        if let (Some(s), Some(d)) = (m.event_delay.as_ref(), direct.and_then(|d| d.event_delay.as_ref())) {
            let added = s.p99 - d.p99;
            if worst.is_none_or(|w| added > w.0) {
                worst = Some((added, m.offered_rate.unwrap_or(0.0), s.p99, s.p50 - d.p50));
            }
        }
    }
    targets.push(TargetCheck {
        name: "per-event forwarding delay (streams)".into(),
        target: "event delay p99 at most 0.5 ms over calling the simulator directly".into(),
        measured: worst.map_or("not measured".into(), |(added, rate, p99, p50_added)| {
            format!(
                "added per event: median {p50_added:+.3} ms, p99 {added:+.3} ms over direct (event delay p99 {p99:.3} ms; worst rate {rate:.0} streams/s)"
            )
        }),
        met: worst.map(|w| w.0 <= 0.5),
    });
    for (keys, most) in [(10_000, 30.0), (50_000, 60.0)] {
        let rss = r.memory.iter().find(|m| m.keys == keys);
        targets.push(TargetCheck {
            name: format!("memory with {keys} keys"),
            target: format!("idle RSS at most {most:.0} MB"),
            measured: rss.map_or("not measured".into(), |m| {
                format!(
                    "idle {:.1} MB (peak under load {:.1} MB)",
                    m.rss_idle_bytes as f64 / MB,
                    m.rss_load_peak_bytes as f64 / MB
                )
            }),
            met: rss.map(|m| (m.rss_idle_bytes as f64) <= most * MB),
        });
    }
    // The router's cost: `sloAware` (the default) against `weighted`, the cheapest policy, both
    // as a share of the bare proxy's throughput in the same run.
    if r.systems.iter().any(|s| s.id == "sluice-weighted") {
        let rps = |id: &str| find(r, id, "throughput", "chat", None).and_then(Measurement::rps);
        let (measured, met) = match (rps("sluice"), rps("sluice-weighted"), bare) {
            (Some(s), Some(w), Some(b)) if b > 0.0 && w > 0.0 => {
                let cost = (w - s) / b * 100.0;
                (
                    format!(
                        "sloAware {s:.0} req/s ({:.1}% of bare), weighted {w:.0} req/s ({:.1}% of bare): the router costs {cost:.1} points of the bare proxy's throughput ({:.1}% of weighted's)",
                        s / b * 100.0,
                        w / b * 100.0,
                        (w - s) / w * 100.0
                    ),
                    Some(cost <= 5.0),
                )
            }
            _ => ("not measured".into(), None),
        };
        targets.push(TargetCheck {
            name: "router cost (sloAware vs weighted)".into(),
            target: "at most 5% of the bare proxy's throughput (chat, same run)".into(),
            measured,
            met,
        });
    }
    r.targets = targets;
}

fn fmt_load(load: [f64; 3]) -> String {
    format!("{:.2}", load[0])
}

fn load_range(ms: &[&Measurement]) -> String {
    let loads: Vec<f64> = ms.iter().filter(|m| m.skipped.is_none()).map(|m| m.load_avg[0]).collect();
    if loads.is_empty() {
        return "-".into();
    }
    let lo = loads.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = loads.iter().copied().fold(0.0, f64::max);
    if (hi - lo).abs() < 0.005 { format!("{lo:.2}") } else { format!("{lo:.2}-{hi:.2}") }
}

/// The markdown report.
pub fn markdown(r: &Results) -> String {
    let mut md = String::new();
    let m = &r.machine;
    let _ = writeln!(md, "# Sluice benchmark, {}\n", r.started_at);
    if r.quick {
        let _ = writeln!(md, "**Quick (smoke) run: durations too short for figures to be compared.**\n");
    }
    let _ = writeln!(
        md,
        "- Machine: {} CPUs ({}), {:.1} GiB, Linux {}\n- Load average (1/5/15 min): {:.2} {:.2} {:.2} at start, {:.2} {:.2} {:.2} at end; each row below gives the 1-minute load during its runs\n- Placement: {}\n- Commit: `{}`{}\n- Command: `{}`\n",
        m.cpus,
        m.cpu_model,
        m.memory_gib,
        m.kernel,
        m.load_at_start[0],
        m.load_at_start[1],
        m.load_at_start[2],
        m.load_at_end[0],
        m.load_at_end[1],
        m.load_at_end[2],
        r.placement,
        r.git.commit,
        if r.git.uncommitted_gateway_changes.is_empty() {
            String::new()
        } else {
            format!(" plus uncommitted changes to {} gateway files", r.git.uncommitted_gateway_changes.len())
        },
        r.command
    );

    let _ =
        writeln!(md, "## Targets (reported, not asserted)\n\n| target | goal | measured | met |\n|---|---|---|---|");
    for t in &r.targets {
        let met = match t.met {
            Some(true) => "yes",
            Some(false) => "**no**",
            None => "-",
        };
        let _ = writeln!(md, "| {} | {} | {} | {} |", t.name, t.target, t.measured, met);
    }

    let systems = ok_systems(r);
    let s = &r.settings;
    let _ = writeln!(
        md,
        "\n## Throughput at saturation\n\nwrk, closed loop, {} threads and {} connections, {} s measured after {} s of warm-up; simulator at 0 ms (16 output tokens; embeddings of 384 dimensions). CPU is the system under test's own (its whole process tree), per answered request.\n",
        s.get("wrkThreads").unwrap_or(&serde_json::Value::Null),
        s.get("wrkConnections").unwrap_or(&serde_json::Value::Null),
        s.get("wrkDurationSecs").unwrap_or(&serde_json::Value::Null),
        s.get("wrkWarmupSecs").unwrap_or(&serde_json::Value::Null),
    );
    let _ = writeln!(
        md,
        "| system | chat req/s | vs bare | embeddings req/s | vs bare | streamed chat req/s | vs bare | CPU µs/req (chat) | peak RSS MB | errors | load |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    let bare = |w: &str| find(r, "bare", "throughput", w, None).and_then(Measurement::rps);
    for id in &systems {
        let ms: Vec<&Measurement> =
            r.measurements.iter().filter(|m| &m.system == id && m.scenario == "throughput").collect();
        if ms.is_empty() {
            continue;
        }
        let mut row = format!("| {} ", label(r, id));
        for w in ["chat", "embeddings", "chat-stream"] {
            match find(r, id, "throughput", w, None).and_then(Measurement::rps) {
                Some(rps) => {
                    let ratio = bare(w).map_or("-".into(), |b| format!("{:.0}%", rps / b * 100.0));
                    let _ = write!(row, "| {rps:.0} | {ratio} ");
                }
                None => row.push_str("| - | - "),
            }
        }
        let chat = find(r, id, "throughput", "chat", None);
        let cpu = chat.and_then(|m| m.system_cpu_us_per_request).map_or("-".into(), |v| format!("{v:.1}"));
        // The peak of the runs shown: a later round's process has served the latency runs'
        // hundreds of connections in between, and its allocator may still hold their buffers.
        let peak = ["chat", "embeddings", "chat-stream"]
            .iter()
            .filter_map(|w| find(r, id, "throughput", w, None))
            .map(|m| m.peak_rss_bytes)
            .max()
            .unwrap_or(0) as f64
            / MB;
        let peak = if peak > 0.0 { format!("{peak:.1}") } else { "-".into() };
        let errors: u64 = ms.iter().map(|m| m.errors()).sum();
        let _ = writeln!(row, "| {cpu} | {peak} | {errors} | {} |", load_range(&ms));
        md.push_str(&row);
    }

    let rates: Vec<f64> = s
        .get("rates")
        .and_then(|v| v.as_array())
        .map(|a| a.iter().filter_map(serde_json::Value::as_f64).collect())
        .unwrap_or_default();
    for (workload, title) in [
        ("chat", "chat, simulator at 0 ms"),
        ("embeddings", "embeddings, simulator at 0 ms"),
        ("chat-60ms", "chat, simulator at 60 ms"),
    ] {
        let _ = writeln!(
            md,
            "\n## Latency at fixed offered load: {title}\n\nOpen loop (requests sent on schedule whatever the answers), {} s measured after {} s of warm-up. Each cell: p50 / p90 / p99 in ms, and in brackets p99 added over calling the simulator directly at the same rate.\n",
            s.get("openLoopDurationSecs").unwrap_or(&serde_json::Value::Null),
            s.get("openLoopWarmupSecs").unwrap_or(&serde_json::Value::Null),
        );
        let mut head = String::from("| system ");
        let mut rule = String::from("|---");
        for rate in &rates {
            let _ = write!(head, "| {rate:.0} req/s ");
            rule.push_str("|---");
        }
        let _ = writeln!(md, "{head}| load |\n{rule}|---|");
        for id in &systems {
            let ms: Vec<&Measurement> = r
                .measurements
                .iter()
                .filter(|m| &m.system == id && m.scenario == "latency" && m.workload == workload)
                .collect();
            if ms.is_empty() {
                continue;
            }
            let mut row = format!("| {} ", label(r, id));
            for &rate in &rates {
                let cell = find(r, id, "latency", workload, Some(rate))
                    .or_else(|| ms.iter().copied().find(|m| m.offered_rate.is_some_and(|o| (o - rate).abs() < 0.5)));
                let text = match cell {
                    None => "-".to_owned(),
                    Some(m) if m.skipped.is_some() => {
                        if m.skipped.as_deref().is_some_and(|s| s.contains("saturation")) {
                            "over capacity".to_owned()
                        } else {
                            "failed".to_owned()
                        }
                    }
                    Some(m) => {
                        let o = m.open_loop.as_ref();
                        let l = o.and_then(|o| o.latency.clone()).unwrap_or_default();
                        let direct = find(r, "direct", "latency", workload, Some(rate))
                            .and_then(|d| d.open_loop.as_ref()?.latency.as_ref().map(|l| l.p99));
                        let added = match direct {
                            Some(d) if id != "direct" => format!(" ({:+.2})", l.p99 - d),
                            _ => String::new(),
                        };
                        let errors = m.errors();
                        let errors = if errors > 0 { format!(", {errors} errors") } else { String::new() };
                        format!("{:.2} / {:.2} / {:.2}{added}{errors}", l.p50, l.p90, l.p99)
                    }
                };
                let _ = write!(row, "| {text} ");
            }
            let _ = writeln!(row, "| {} |", load_range(&ms));
            md.push_str(&row);
        }
    }

    let _ = writeln!(
        md,
        "\n## Streaming\n\nSimulator: 60 ms to the first token, then 20 tokens 10 ms apart (one event each), usage and `[DONE]`; open loop. TTFB: from sending to the first byte of the body. Event delay: each event's arrival minus the median arrival of the same event when calling the simulator directly at the same rate, so it is the forwarding delay of that event (the direct row shows the simulator's own spread).\n\n| system | streams/s | TTFB p50 | TTFB p99 | event delay p50 | event delay p99 | p99 added vs direct | events/stream | errors | load |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    for id in &systems {
        let stream_rates: Vec<f64> = s
            .get("streamRates")
            .and_then(|v| v.as_array())
            .map(|a| a.iter().filter_map(serde_json::Value::as_f64).collect())
            .unwrap_or_default();
        let cells = stream_rates.iter().filter_map(|&rate| {
            find(r, id, "streaming", "paced-stream", Some(rate)).or_else(|| {
                r.measurements.iter().find(|m| {
                    &m.system == id
                        && m.scenario == "streaming"
                        && m.offered_rate.is_some_and(|o| (o - rate).abs() < 0.5)
                })
            })
        });
        for m in cells {
            let Some(o) = m.open_loop.as_ref() else {
                let why = if m.skipped.as_deref().is_some_and(|s| s.contains("saturation")) {
                    "over capacity"
                } else {
                    "failed"
                };
                let _ =
                    writeln!(md, "| {} | {:.0} | {why} | | | | | | | |", label(r, id), m.offered_rate.unwrap_or(0.0));
                continue;
            };
            let t = o.ttfb.clone().unwrap_or_default();
            let d = m.event_delay.clone().unwrap_or_default();
            let direct =
                find(r, "direct", "streaming", &m.workload, m.offered_rate).and_then(|d| d.event_delay.clone());
            let added = match direct {
                Some(dd) if id != "direct" => format!("{:+.3}", d.p99 - dd.p99),
                _ => "-".into(),
            };
            let _ = writeln!(
                md,
                "| {} | {:.0} | {:.2} | {:.2} | {:.3} | {:.3} | {} | {:.0} | {} | {} |",
                label(r, id),
                m.offered_rate.unwrap_or(0.0),
                t.p50,
                t.p99,
                d.p50,
                d.p99,
                added,
                o.events_per_stream.as_ref().map_or(0.0, |s| s.p50),
                m.errors(),
                fmt_load(m.load_avg)
            );
        }
    }

    if !r.memory.is_empty() {
        let _ = writeln!(
            md,
            "\n## Sluice: memory and configuration load time\n\nManifests: one Secret holding every key and one ApiKey per key; compiled: the GatewayConfig JSON the operator writes. Ready: from process start to `/readyz` 200. Under load: chat at the given rate, keys used round-robin (every key at least once when the run is long enough).\n\n| keys | manifests MB | compiled MB | `--check` s | ready (manifests) s | ready (compiled) s | RSS idle MB | RSS idle (compiled) MB | RSS under load, peak MB | load req/s | errors | load |\n|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
        );
        for x in &r.memory {
            let _ = writeln!(
                md,
                "| {} | {:.1} | {:.1} | {:.2} | {:.2} | {:.2} | {:.1} | {:.1} | {:.1} | {:.0} | {} | {} |",
                x.keys,
                x.manifests_bytes as f64 / MB,
                x.compiled_bytes as f64 / MB,
                x.check_secs,
                x.ready_secs_manifests,
                x.ready_secs_compiled,
                x.rss_idle_bytes as f64 / MB,
                x.rss_idle_compiled_bytes as f64 / MB,
                x.rss_load_peak_bytes as f64 / MB,
                x.load_rate,
                x.load_errors,
                fmt_load(x.load_avg)
            );
        }
        for (keys, c) in r.memory.iter().filter_map(|m| Some((m.keys, m.connections.as_ref()?))) {
            let _ = writeln!(
                md,
                "\nConnections ({keys} keys): {:.1} KB per idle kept-alive connection, {:.1} KB per stream in flight, its connection included ({} of each held open while resident memory was read; streams of 600 tokens 10 ms apart).",
                c.bytes_per_idle_connection / 1024.0,
                c.bytes_per_stream / 1024.0,
                c.streams
            );
        }
    }

    let _ = writeln!(
        md,
        "\n## Systems\n\n| system | version | status | ready after s | idle RSS MB (PSS) | configuration |\n|---|---|---|---:|---:|---|"
    );
    for sys in &r.systems {
        let status = match &sys.reason {
            Some(reason) => format!("skipped: {}", reason.lines().last().unwrap_or_default().replace('|', "/")),
            None => sys.status.clone(),
        };
        let unsupported = if sys.unsupported.is_empty() {
            String::new()
        } else {
            format!(
                " Not served: {}.",
                sys.unsupported
                    .iter()
                    .map(|(w, why)| format!("{w} ({})", why.replace('|', "/")))
                    .collect::<Vec<_>>()
                    .join("; ")
            )
        };
        let _ = writeln!(
            md,
            "| {} | {} | {} | {:.1} | {:.1} ({:.1}) | {}{} |",
            sys.label,
            sys.version,
            status,
            sys.startup_secs,
            sys.rss_idle_bytes as f64 / MB,
            sys.pss_idle_bytes as f64 / MB,
            sys.config.replace('|', "/"),
            unsupported
        );
    }
    if !r.notes.is_empty() {
        let _ = writeln!(md, "\n## Notes\n");
        for note in &r.notes {
            let _ = writeln!(md, "- {}", note.replace('\n', " "));
        }
    }
    md
}

/// The p99-against-offered-load chart of one workload.
pub fn p99_chart(r: &Results, workload: &str, title: &str) -> String {
    let series: Vec<Series> = ok_systems(r)
        .iter()
        .filter_map(|id| {
            let points: Vec<(f64, f64)> = r
                .measurements
                .iter()
                .filter(|m| &m.system == id && m.scenario == "latency" && m.workload == workload)
                .filter_map(|m| Some((m.offered_rate?, m.open_loop.as_ref()?.latency.as_ref()?.p99)))
                .collect();
            let tried =
                r.measurements.iter().any(|m| &m.system == id && m.scenario == "latency" && m.workload == workload);
            match (points.is_empty(), tried) {
                (false, _) => Some(Series { label: label(r, id).to_owned(), points }),
                // In the legend, so a missing line is not mistaken for a missing system.
                (true, true) => Some(Series { label: format!("{}: over capacity", label(r, id)), points }),
                (true, false) => None,
            }
        })
        .collect();
    line_chart(title, "offered load (requests per second, open loop)", &series)
}

/// Writes `results.json`, `report.md` and the charts into `dir`.
pub fn write(r: &Results, dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::write(dir.join("results.json"), serde_json::to_vec_pretty(r)?)?;
    std::fs::write(dir.join("report.md"), markdown(r))?;
    std::fs::write(dir.join("p99.svg"), p99_chart(r, "chat", "p99 latency, chat, simulator at 0 ms"))?;
    std::fs::write(
        dir.join("p99-embeddings.svg"),
        p99_chart(r, "embeddings", "p99 latency, embeddings, simulator at 0 ms"),
    )?;
    std::fs::write(dir.join("p99-60ms.svg"), p99_chart(r, "chat-60ms", "p99 latency, chat, simulator at 60 ms"))?;
    Ok(())
}

/// Points `out/latest` at `run` (a symlink; a copy where links are not possible).
pub fn link_latest(out: &Path, run: &Path) {
    let latest = out.join("latest");
    let _ = std::fs::remove_file(&latest);
    let _ = std::fs::remove_dir_all(&latest);
    let name = run.file_name().map(Path::new).unwrap_or(run);
    if std::os::unix::fs::symlink(name, &latest).is_err() {
        let _ = std::fs::create_dir_all(&latest);
        if let Ok(entries) = std::fs::read_dir(run) {
            for entry in entries.filter_map(Result::ok) {
                let _ = std::fs::copy(entry.path(), latest.join(entry.file_name()));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::loadgen::OpenLoopResult;
    use crate::results::SystemReport;
    use crate::stats::Summary;
    use crate::wrk::WrkResult;

    fn system(id: &str) -> SystemReport {
        SystemReport { id: id.into(), label: id.into(), status: "ok".into(), ..SystemReport::default() }
    }

    fn latency(system: &str, rate: f64, p99: f64) -> Measurement {
        Measurement {
            system: system.into(),
            scenario: "latency".into(),
            workload: "chat".into(),
            offered_rate: Some(rate),
            open_loop: Some(OpenLoopResult {
                latency: Some(Summary { p50: p99 / 2.0, p90: p99 * 0.8, p99, ..Summary::default() }),
                ..OpenLoopResult::default()
            }),
            ..Measurement::default()
        }
    }

    fn throughput(system: &str, rps: f64) -> Measurement {
        Measurement {
            system: system.into(),
            scenario: "throughput".into(),
            workload: "chat".into(),
            wrk: Some(WrkResult { rps, ..WrkResult::default() }),
            ..Measurement::default()
        }
    }

    #[test]
    fn targets_compare_within_the_run() {
        let mut r = Results {
            systems: vec![system("direct"), system("bare"), system("sluice")],
            measurements: vec![
                throughput("bare", 60_000.0),
                throughput("sluice", 51_600.0),
                latency("direct", 5000.0, 0.40),
                latency("sluice", 5000.0, 1.10),
            ],
            ..Results::default()
        };
        r.settings.insert("rates".into(), serde_json::json!([5000.0]));
        finish(&mut r);
        let sluice = &r.targets[0];
        assert_eq!(sluice.met, Some(true), "86% is above the 85% target");
        assert!(sluice.measured.contains("86%"), "{}", sluice.measured);
        assert_eq!(r.targets[1].met, None, "sluice-warn was not run");
        assert_eq!(r.targets[2].met, Some(false));
        assert!(r.targets[2].measured.contains("+0.700"), "{}", r.targets[2].measured);
        let md = markdown(&r);
        assert!(md.contains("| sluice | 51600 | 86% "), "{md}");
        assert!(md.contains("0.55 / 0.88 / 1.10 (+0.70)"), "{md}");
        assert!(p99_chart(&r, "chat", "t").contains("<circle"));
    }

    #[test]
    fn memory_targets_take_idle_memory_at_ten_and_fifty_thousand_keys() {
        let memory = |keys, idle_mb: f64| crate::results::MemoryResult {
            keys,
            rss_idle_bytes: (idle_mb * MB) as u64,
            rss_load_peak_bytes: (idle_mb * 3.0 * MB) as u64,
            ..crate::results::MemoryResult::default()
        };
        let mut r = Results { memory: vec![memory(10_000, 29.5), memory(50_000, 60.5)], ..Results::default() };
        finish(&mut r);
        let target = |keys: &str| r.targets.iter().find(|t| t.name.contains(keys)).expect("a memory target");
        assert_eq!(target("10000 keys").met, Some(true), "idle, not the peak under load, is compared");
        assert_eq!(target("50000 keys").met, Some(false));
        assert!(target("50000 keys").measured.contains("idle 60.5 MB"), "{}", target("50000 keys").measured);
    }

    #[test]
    fn a_reference_build_gets_its_own_ratio_only_when_measured() {
        let mut r = Results {
            systems: vec![system("bare"), system("sluice"), system("sluice-ref")],
            measurements: vec![
                throughput("bare", 60_000.0),
                throughput("sluice", 45_000.0),
                throughput("sluice-ref", 42_000.0),
            ],
            ..Results::default()
        };
        finish(&mut r);
        let reference = r.targets.iter().find(|t| t.name.contains("sluice-ref")).expect("a reference target");
        assert!(reference.measured.contains("70%"), "{}", reference.measured);
        assert!(markdown(&r).contains("| sluice-ref | 42000 | 70% "));
        let mut without = Results { systems: vec![system("bare"), system("sluice")], ..Results::default() };
        finish(&mut without);
        assert!(!without.targets.iter().any(|t| t.name.contains("sluice-ref")));
        assert!(!without.targets.iter().any(|t| t.name.contains("router cost")));
    }

    #[test]
    fn the_router_cost_is_a_share_of_the_bare_proxy() {
        let mut r = Results {
            systems: vec![system("bare"), system("sluice"), system("sluice-weighted")],
            measurements: vec![
                throughput("bare", 60_000.0),
                throughput("sluice", 42_500.0),
                throughput("sluice-weighted", 45_000.0),
            ],
            ..Results::default()
        };
        finish(&mut r);
        let cost = r.targets.iter().find(|t| t.name.contains("router cost")).expect("a router-cost target");
        assert!(cost.measured.contains("4.2 points"), "{}", cost.measured);
        assert_eq!(cost.met, Some(true));
        r.measurements[1] = throughput("sluice", 41_000.0);
        finish(&mut r);
        let cost = r.targets.iter().find(|t| t.name.contains("router cost")).expect("a router-cost target");
        assert_eq!(cost.met, Some(false), "{}", cost.measured);
    }
}
