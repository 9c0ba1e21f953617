//! A static HTML picture of a Grafana dashboard from query results: one `<section>` per row,
//! panels placed by their `gridPos` on Grafana's grid (24 columns, 30 px rows), each drawn as
//! inline SVG (time series, stat sparklines) or plain HTML (stat values, bar gauges), with the
//! panel's unit and thresholds. No script, no font, nothing fetched: the page is only itself.

use std::collections::HashMap;
use std::fmt::Write as _;

use serde_json::Value;

use crate::prometheus::Series;

/// Width of one of the grid's 24 columns, and height of one grid row, in pixels.
const COLUMN: f64 = 50.0;
const ROW: f64 = 30.0;
/// Space between panels.
const GAP: f64 = 8.0;
/// Grafana's classic palette, in the order it gives series.
const PALETTE: [&str; 10] =
    ["#7eb26d", "#eab839", "#6ed0e0", "#ef843c", "#e24d42", "#1f78c1", "#ba43a9", "#705da0", "#508642", "#cca300"];

/// A series and its name in the legend.
type Named<'a> = (String, &'a Series);

/// What one target of a panel returned, with the legend format to name its series.
pub struct Drawn {
    pub legend_format: String,
    pub series: Vec<Series>,
}

/// The page: the dashboard's rows, each a `<section data-shot="<row slug>">`, its panels drawn
/// from `data` (by panel id) over `start..end` (Unix seconds). `note` goes under each row.
pub fn page(dashboard: &Value, data: &HashMap<u64, Vec<Drawn>>, start: f64, end: f64, note: &str) -> String {
    let mut rows: Vec<(Option<&Value>, Vec<&Value>)> = Vec::new();
    for panel in dashboard["panels"].as_array().into_iter().flatten() {
        if panel["type"] == "row" {
            rows.push((Some(panel), panel["panels"].as_array().into_iter().flatten().collect()));
        } else if let Some((_, panels)) = rows.last_mut() {
            panels.push(panel);
        } else {
            rows.push((None, vec![panel]));
        }
    }
    let title = escape(dashboard["title"].as_str().unwrap_or("dashboard"));
    let mut html = format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{title}</title><style>{STYLE}</style></head><body>\n"
    );
    for (row, panels) in rows {
        let row_title = row.and_then(|r| r["title"].as_str()).unwrap_or("");
        let top =
            row.map_or_else(|| panels.iter().map(|p| grid(p, "y")).fold(f64::MAX, f64::min), |r| grid(r, "y") + 1.0);
        let bottom = panels.iter().map(|p| grid(p, "y") + grid(p, "h")).fold(top, f64::max);
        let slug = slug(if row_title.is_empty() { "panels" } else { row_title });
        let _ = write!(
            html,
            "<section data-shot=\"{slug}\"><h2>{title} <span>/ {}</span></h2><div class=\"grid\" style=\"height:{}px\">",
            escape(row_title),
            (bottom - top) * ROW
        );
        for panel in panels {
            let drawn = panel["id"].as_u64().and_then(|id| data.get(&id)).map_or(&[][..], Vec::as_slice);
            html.push_str(&draw_panel(panel, top, drawn, start, end));
        }
        let _ = writeln!(html, "</div><p class=\"note\">{}</p></section>", escape(note));
    }
    html.push_str("</body></html>\n");
    html
}

const STYLE: &str = "
body { margin: 0; padding: 8px 12px; background: #111217; color: #ccccdc;
  font: 13px/1.3 'DejaVu Sans', 'Liberation Sans', Arial, sans-serif; width: 1216px; }
section { padding: 4px 0 8px; }
h2 { font-size: 15px; margin: 4px 0 8px; color: #d8d9da; }
h2 span { color: #8e8e8e; font-weight: normal; }
.grid { position: relative; }
.panel { position: absolute; box-sizing: border-box; background: #181b1f; border: 1px solid #2c3235;
  border-radius: 2px; padding: 6px 8px; overflow: hidden; display: flex; flex-direction: column; }
h3 { font-size: 13px; font-weight: 500; margin: 0 0 4px; color: #d8d9da; white-space: nowrap; }
.nodata { flex: 1; display: flex; align-items: center; justify-content: center; color: #8e8e8e; }
.stat { flex: 1; position: relative; display: flex; align-items: center; justify-content: center; }
.stat svg { position: absolute; left: 0; bottom: 0; }
.stat b { position: relative; font-size: 30px; font-weight: 600; }
.legend { display: flex; flex-wrap: wrap; gap: 0 14px; font-size: 11px; max-height: 42px; overflow: hidden; }
.legend i { display: inline-block; width: 12px; height: 3px; margin: 0 5px 3px 0; vertical-align: middle; }
.bars { flex: 1; display: flex; flex-direction: column; justify-content: center; gap: 6px; }
.bar { display: flex; align-items: center; gap: 8px; font-size: 12px; }
.bar span { width: 130px; overflow: hidden; text-overflow: ellipsis; white-space: nowrap; }
.bar div { flex: 1; height: 16px; background: #22252b; }
.bar div i { display: block; height: 100%; }
.bar b { width: 80px; text-align: right; }
svg text { fill: #8e8e8e; font-size: 10px; }
.note { margin: 6px 0 0; font-size: 11px; color: #8e8e8e; }
";

fn grid(panel: &Value, key: &str) -> f64 {
    panel["gridPos"][key].as_f64().unwrap_or(0.0)
}

fn draw_panel(panel: &Value, top: f64, drawn: &[Drawn], start: f64, end: f64) -> String {
    let (x, y, w, h) = (grid(panel, "x"), grid(panel, "y") - top, grid(panel, "w"), grid(panel, "h"));
    let (width, height) = (w * COLUMN - GAP, h * ROW - GAP);
    let unit = panel["fieldConfig"]["defaults"]["unit"].as_str().unwrap_or("short");
    let thresholds = thresholds(panel);
    // The panel's padding and title.
    let (inner_width, inner_height) = (width - 18.0, height - 31.0);
    let named: Vec<Named> = drawn
        .iter()
        .flat_map(|d| d.series.iter().filter(|s| s.has_numbers()).map(move |s| (legend(&d.legend_format, s), s)))
        .collect();
    let body = if named.is_empty() {
        "<div class=\"nodata\">No data</div>".to_owned()
    } else {
        match panel["type"].as_str() {
            Some("stat") => stat(named[0].1, unit, &thresholds, inner_width, inner_height),
            Some("bargauge") => bars(&named, unit, &thresholds),
            _ => time_series(&named, unit, inner_width, inner_height, start, end),
        }
    };
    format!(
        "<div class=\"panel\" style=\"left:{:.0}px;top:{:.0}px;width:{width:.0}px;height:{height:.0}px\"><h3>{}</h3>{body}</div>",
        x * COLUMN,
        y * ROW,
        escape(panel["title"].as_str().unwrap_or(""))
    )
}

/// The panel's threshold steps (value from which, colour), Grafana's default when it has none.
fn thresholds(panel: &Value) -> Vec<(f64, &'static str)> {
    let steps = panel["fieldConfig"]["defaults"]["thresholds"]["steps"].as_array();
    let Some(steps) = steps else { return vec![(f64::MIN, "#73bf69"), (80.0, "#f2495c")] };
    steps
        .iter()
        .map(|step| {
            let color = match step["color"].as_str() {
                Some("red") => "#f2495c",
                Some("orange") => "#ff9830",
                Some("yellow") => "#fade2a",
                Some("blue") => "#5794f2",
                _ => "#73bf69",
            };
            (step["value"].as_f64().unwrap_or(f64::MIN), color)
        })
        .collect()
}

fn threshold_color(value: f64, thresholds: &[(f64, &'static str)]) -> &'static str {
    thresholds.iter().rev().find(|(from, _)| value >= *from).map_or("#73bf69", |(_, color)| color)
}

/// The last number of a series (Grafana's `lastNotNull`).
fn last(series: &Series) -> f64 {
    series.points.iter().rev().map(|(_, v)| *v).find(|v| v.is_finite()).unwrap_or(f64::NAN)
}

fn stat(series: &Series, unit: &str, thresholds: &[(f64, &'static str)], width: f64, height: f64) -> String {
    let value = last(series);
    let color = threshold_color(value, thresholds);
    let mut spark = String::new();
    let points: Vec<(f64, f64)> = series.points.iter().copied().filter(|(_, v)| v.is_finite()).collect();
    if points.len() > 1 {
        let (t0, t1) = (points[0].0, points[points.len() - 1].0);
        let high = points.iter().map(|(_, v)| *v).fold(0.0_f64, f64::max).max(f64::MIN_POSITIVE);
        let band = height * 0.45;
        let mut path = format!("M0,{height:.1}");
        for (t, v) in &points {
            let _ = write!(path, " L{:.1},{:.1}", (t - t0) / (t1 - t0) * width, height - v / high * band);
        }
        let _ = write!(path, " L{width:.1},{height:.1} Z");
        spark = format!(
            "<svg width=\"{width:.0}\" height=\"{height:.0}\"><path d=\"{path}\" fill=\"{color}\" fill-opacity=\"0.18\" stroke=\"{color}\" stroke-width=\"1\"/></svg>"
        );
    }
    format!("<div class=\"stat\">{spark}<b style=\"color:{color}\">{}</b></div>", escape(&format_value(value, unit)))
}

fn bars(named: &[Named], unit: &str, thresholds: &[(f64, &'static str)]) -> String {
    let values: Vec<(&str, f64)> = named.iter().map(|(name, s)| (name.as_str(), last(s))).collect();
    let max = if unit == "percentunit" { 1.0 } else { values.iter().map(|(_, v)| *v).fold(0.0, f64::max) };
    let mut html = String::from("<div class=\"bars\">");
    for (name, value) in values.iter().take(6) {
        let share = if max > 0.0 { (value / max).clamp(0.0, 1.0) * 100.0 } else { 0.0 };
        let _ = write!(
            html,
            "<div class=\"bar\"><span>{}</span><div><i style=\"width:{share:.1}%;background:{}\"></i></div><b>{}</b></div>",
            escape(name),
            threshold_color(*value, thresholds),
            escape(&format_value(*value, unit))
        );
    }
    html.push_str("</div>");
    html
}

/// A chart of `named` over `start..end`. Series at zero throughout (the gateway makes a counter
/// for every outcome before any happens) are drawn in grey and counted, not listed, in the
/// legend, so that the palette and the legend's three lines go to the series that moved.
fn time_series(named: &[Named], unit: &str, width: f64, height: f64, start: f64, end: f64) -> String {
    const LEFT: f64 = 58.0;
    const BOTTOM: f64 = 16.0;
    const LEGEND_LINES: usize = 3;
    let moved = |s: &Series| s.points.iter().any(|(_, v)| v.is_finite() && *v != 0.0);
    let (mut listed, mut flat): (Vec<&Named>, Vec<&Named>) = named.iter().partition(|(_, s)| moved(s));
    if listed.is_empty() {
        std::mem::swap(&mut listed, &mut flat);
    }
    let mut legend: Vec<(String, &str)> =
        listed.iter().enumerate().map(|(i, (name, _))| (name.clone(), PALETTE[i % PALETTE.len()])).collect();
    let mut left_out = flat.len();
    while legend_lines(&legend, left_out, width) > LEGEND_LINES {
        legend.pop();
        left_out += 1;
    }
    let lines = legend_lines(&legend, left_out, width) as f64;
    let chart_height = (height - lines * 14.0 - 4.0).max(40.0);
    let plot = (width - LEFT - 4.0, chart_height - BOTTOM - 6.0);
    let values = named.iter().flat_map(|(_, s)| s.points.iter().map(|(_, v)| *v)).filter(|v| v.is_finite());
    let (low, high) = values.fold((0.0_f64, 0.0_f64), |(lo, hi), v| (lo.min(v), hi.max(v)));
    let (low, high) = (-nice_ceiling(-low), nice_ceiling(high));
    let high = if high > low { high } else { low + 1.0 };
    let x = |t: f64| LEFT + (t - start) / (end - start) * plot.0;
    let y = |v: f64| 6.0 + (high - v) / (high - low) * plot.1;

    let mut svg = format!("<svg width=\"{width:.0}\" height=\"{chart_height:.0}\">");
    for i in 0..=2 {
        let v = low + (high - low) * f64::from(i) / 2.0;
        let (right, level, label) = (LEFT + plot.0, y(v), escape(&format_value(v, unit)));
        let _ = write!(
            svg,
            "<line x1=\"{LEFT}\" x2=\"{right:.1}\" y1=\"{level:.1}\" y2=\"{level:.1}\" stroke=\"#2c3235\"/><text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{label}</text>",
            LEFT - 6.0,
            level + 3.5,
        );
    }
    // A time label every ten seconds on the clock, none at the very start (under the y labels).
    let mut tick = ((start + 3.0) / 10.0).ceil() * 10.0;
    while tick <= end {
        let _ = write!(
            svg,
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>",
            x(tick),
            chart_height - 2.0,
            clock(tick)
        );
        tick += 10.0;
    }
    let colored = listed.iter().enumerate().map(|(i, (_, s))| (*s, PALETTE[i % PALETTE.len()]));
    // The grey ones first, under the others.
    for (series, color) in flat.iter().map(|(_, s)| (*s, "#5a5f66")).chain(colored) {
        let mut path = String::new();
        let mut drawing = false;
        for (t, v) in &series.points {
            if v.is_finite() {
                let _ = write!(path, "{}{:.1},{:.1} ", if drawing { "L" } else { "M" }, x(*t), y(*v));
                drawing = true;
            } else {
                drawing = false;
            }
        }
        let _ = write!(svg, "<path d=\"{path}\" fill=\"none\" stroke=\"{color}\" stroke-width=\"1.5\"/>");
    }
    svg.push_str("</svg><div class=\"legend\">");
    for (name, color) in &legend {
        let _ = write!(svg, "<span><i style=\"background:{color}\"></i>{}</span>", escape(name));
    }
    if left_out > 0 {
        let what = if left_out == flat.len() { "at 0" } else { "more" };
        let _ = write!(svg, "<span><i style=\"background:#5a5f66\"></i>+{left_out} {what}</span>");
    }
    svg.push_str("</div>");
    svg
}

/// How many lines the legend takes in `width`, wrapping items as the page does (about 6.3 px a
/// character at 11 px, a swatch and a gap each), with a `+N` item when `left_out` is not 0.
fn legend_lines(items: &[(String, &str)], left_out: usize, width: f64) -> usize {
    let extra = (left_out > 0).then(|| format!("+{left_out} more"));
    let names = items.iter().map(|(name, _)| name.as_str()).chain(extra.as_deref());
    let (mut lines, mut used) = (0, f64::INFINITY);
    for name in names {
        let item = 31.0 + 6.3 * name.chars().count() as f64;
        if used + item > width {
            lines += 1;
            used = 0.0;
        }
        used += item;
    }
    lines
}

/// The smallest of 1, 2, 2.5 and 5 times a power of ten that is at least `value` (0 for 0 and
/// below): an axis' end that reads well.
fn nice_ceiling(value: f64) -> f64 {
    if value <= 0.0 {
        return 0.0;
    }
    let power = 10f64.powf(value.log10().floor());
    [1.0, 2.0, 2.5, 5.0, 10.0].iter().map(|m| m * power).find(|v| *v >= value * (1.0 - 1e-9)).unwrap_or(10.0 * power)
}

/// A series' name: the legend format with `{{label}}` filled in; its labels when there is none.
fn legend(format: &str, series: &Series) -> String {
    if format.is_empty() {
        let labels: Vec<String> = series.labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
        return format!("{{{}}}", labels.join(", "));
    }
    let mut name = format.to_owned();
    while let Some(open) = name.find("{{") {
        let Some(close) = name[open..].find("}}") else { break };
        let label = name[open + 2..open + close].trim().to_owned();
        let value = series.labels.get(&label).cloned().unwrap_or_default();
        name.replace_range(open..open + close + 2, &value);
    }
    name
}

/// A value in a Grafana unit (the ones the dashboard uses; others as plain numbers).
pub fn format_value(value: f64, unit: &str) -> String {
    if !value.is_finite() {
        return "No data".to_owned();
    }
    match unit {
        "s" if value.abs() < 1.0 => format!("{:.0} ms", value * 1000.0),
        "s" => format!("{value:.2} s"),
        "reqps" => format!("{} req/s", short(value)),
        "ops" => format!("{} ops/s", short(value)),
        "percentunit" => format!("{:.1}%", value * 100.0),
        "currencyUSD" if value.abs() < 0.01 && value != 0.0 => format!("${value:.5}"),
        "currencyUSD" => format!("${value:.2}"),
        _ => short(value),
    }
}

fn short(value: f64) -> String {
    match value.abs() {
        v if v >= 1e6 => format!("{:.1} M", value / 1e6),
        v if v >= 1e3 => format!("{:.1} K", value / 1e3),
        v if v >= 10.0 || v.fract() == 0.0 => format!("{value:.0}"),
        v if v >= 0.1 => format!("{value:.2}"),
        _ => format!("{value:.3}"),
    }
}

/// `HH:MM:SS` (UTC) of a Unix time.
fn clock(time: f64) -> String {
    let seconds = time.rem_euclid(86_400.0) as u64;
    format!("{:02}:{:02}:{:02}", seconds / 3600, seconds / 60 % 60, seconds % 60)
}

/// A row title as a file name: `Tokens and cost` is `tokens-and-cost`.
pub fn slug(title: &str) -> String {
    let lower = title.to_ascii_lowercase();
    lower.split(|c: char| !c.is_ascii_alphanumeric()).filter(|w| !w.is_empty()).collect::<Vec<_>>().join("-")
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn legends_units_and_slugs() {
        let series = Series {
            labels: [("provider".to_owned(), "acme/gpu-a".to_owned())].into_iter().collect(),
            points: vec![(0.0, 1.0)],
        };
        assert_eq!(legend("{{provider}} {{missing}}x", &series), "acme/gpu-a x");
        assert_eq!(legend("", &series), "{provider=\"acme/gpu-a\"}");
        assert_eq!(format_value(0.25, "s"), "250 ms");
        assert_eq!(format_value(0.031, "percentunit"), "3.1%");
        assert_eq!(format_value(12.345, "reqps"), "12 req/s");
        assert_eq!(slug("Tokens and cost"), "tokens-and-cost");
        assert_eq!(clock(3_723.0), "01:02:03");
        assert_eq!(
            (nice_ceiling(717.0), nice_ceiling(1.0), nice_ceiling(0.0185), nice_ceiling(0.0)),
            (1000.0, 1.0, 0.02, 0.0)
        );
        assert_eq!(format_value(1.0, "short"), "1");
    }
}
