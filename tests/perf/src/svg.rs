//! A small hand-written SVG line chart: p99 latency (log scale) against offered load, one line
//! per system. No plotting library: the picture is a few dozen elements.

use std::fmt::Write as _;

/// One line of the chart.
#[derive(Clone, Debug)]
pub struct Series {
    /// Legend text.
    pub label: String,
    /// (offered load, value) points; missing loads are simply absent.
    pub points: Vec<(f64, f64)>,
}

const COLORS: [&str; 8] = ["#1f77b4", "#7f7f7f", "#d62728", "#ff9896", "#2ca02c", "#9467bd", "#8c564b", "#17becf"];
const WIDTH: f64 = 860.0;
const HEIGHT: f64 = 440.0;
const LEFT: f64 = 72.0;
const RIGHT: f64 = 290.0;
const TOP: f64 = 44.0;
const BOTTOM: f64 = 56.0;

/// Escapes text for XML.
pub fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

fn fmt_ms(value: f64) -> String {
    if value >= 1.0 { format!("{value:.0} ms") } else { format!("{value} ms") }
}

/// The y axis of a chart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum YAxis {
    /// p99 latency in milliseconds, log scale over whole decades.
    LogMs,
    /// A percentage, linear from `.0` to 100.
    Percent(u32),
}

/// Renders the chart: x is offered load (requests per second, linear from 0), y the value in
/// milliseconds on a log scale spanning whole decades.
pub fn line_chart(title: &str, x_label: &str, series: &[Series]) -> String {
    chart(title, x_label, YAxis::LogMs, series)
}

/// Renders a chart with x linear from 0 and the given y axis.
pub fn chart(title: &str, x_label: &str, axis: YAxis, series: &[Series]) -> String {
    let values: Vec<f64> = series.iter().flat_map(|s| s.points.iter().map(|p| p.1)).filter(|v| *v > 0.0).collect();
    let xs: Vec<f64> = series.iter().flat_map(|s| s.points.iter().map(|p| p.0)).collect();
    let lo = values.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = values.iter().copied().fold(0.0, f64::max);
    let (decade_lo, decade_hi) = if values.is_empty() {
        (-1, 1)
    } else {
        let a = lo.log10().floor() as i32;
        let b = (hi.log10().ceil() as i32).max(a + 1);
        (a, b)
    };
    let x_max = xs.iter().copied().fold(0.0, f64::max).max(1.0) * 1.05;
    let plot_w = WIDTH - LEFT - RIGHT;
    let plot_h = HEIGHT - TOP - BOTTOM;
    let x_at = |x: f64| LEFT + x / x_max * plot_w;
    let y_at = |v: f64| {
        let t = match axis {
            YAxis::LogMs => (v.max(1e-9).log10() - f64::from(decade_lo)) / f64::from(decade_hi - decade_lo),
            YAxis::Percent(lo) => ((v - f64::from(lo)) / (100.0 - f64::from(lo))).clamp(0.0, 1.0),
        };
        TOP + plot_h * (1.0 - t)
    };
    let (y_ticks, y_title): (Vec<(f64, String)>, &str) = match axis {
        YAxis::LogMs => (
            (decade_lo..=decade_hi).map(|d| (10f64.powi(d), fmt_ms(10f64.powi(d)))).collect(),
            "p99 latency (log scale)",
        ),
        YAxis::Percent(lo) => {
            let step = if 100 - lo.min(99) > 40 { 10 } else { 5 };
            ((lo.min(99)..=100).step_by(step).map(|p| (f64::from(p), format!("{p}%"))).collect(), "SLO attainment")
        }
    };

    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(svg, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        svg,
        r#"<text x="{}" y="24" text-anchor="middle" font-size="15" font-weight="bold">{}</text>"#,
        LEFT + plot_w / 2.0,
        escape(title)
    );
    for (value, text) in y_ticks {
        let y = y_at(value);
        let _ = writeln!(
            svg,
            r##"<line x1="{LEFT}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"##,
            LEFT + plot_w,
            LEFT - 6.0,
            y + 4.0,
            text
        );
    }
    let mut ticks: Vec<f64> = xs.clone();
    ticks.sort_by(f64::total_cmp);
    ticks.dedup();
    for x in ticks {
        let px = x_at(x);
        let _ = writeln!(
            svg,
            r##"<line x1="{px:.1}" y1="{TOP}" x2="{px:.1}" y2="{:.1}" stroke="#eee"/><text x="{px:.1}" y="{:.1}" text-anchor="middle">{}</text>"##,
            TOP + plot_h,
            TOP + plot_h + 16.0,
            x
        );
    }
    let _ =
        writeln!(svg, r##"<rect x="{LEFT}" y="{TOP}" width="{plot_w}" height="{plot_h}" fill="none" stroke="#333"/>"##);
    let _ = writeln!(
        svg,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
        LEFT + plot_w / 2.0,
        HEIGHT - 14.0,
        escape(x_label)
    );
    let _ = writeln!(
        svg,
        r#"<text transform="translate(18 {:.1}) rotate(-90)" text-anchor="middle">{y_title}</text>"#,
        TOP + plot_h / 2.0
    );
    for (i, s) in series.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let points: Vec<String> = s
            .points
            .iter()
            .filter(|p| p.1 > 0.0 || axis != YAxis::LogMs)
            .map(|&(x, v)| format!("{:.1},{:.1}", x_at(x), y_at(v)))
            .collect();
        if points.len() > 1 {
            let _ = writeln!(
                svg,
                r#"<polyline points="{}" fill="none" stroke="{color}" stroke-width="2"/>"#,
                points.join(" ")
            );
        }
        for p in &points {
            let (cx, cy) = p.split_once(',').unwrap_or(("0", "0"));
            let _ = writeln!(svg, r#"<circle cx="{cx}" cy="{cy}" r="3.5" fill="{color}"/>"#);
        }
        let ly = TOP + 10.0 + i as f64 * 20.0;
        let lx = LEFT + plot_w + 14.0;
        let _ = writeln!(
            svg,
            r#"<line x1="{lx}" y1="{ly}" x2="{}" y2="{ly}" stroke="{color}" stroke-width="3"/><text x="{}" y="{}">{}</text>"#,
            lx + 18.0,
            lx + 24.0,
            ly + 4.0,
            escape(&s.label)
        );
    }
    svg.push_str("</svg>\n");
    svg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chart_has_a_line_per_series_and_escapes_labels() {
        let series = vec![
            Series { label: "direct".into(), points: vec![(1000.0, 0.2), (5000.0, 0.3), (10000.0, 0.5)] },
            Series { label: "a <b> & c".into(), points: vec![(1000.0, 1.5), (5000.0, 40.0)] },
            Series { label: "one point".into(), points: vec![(1000.0, 900.0)] },
        ];
        let svg = line_chart("p99", "offered load", &series);
        assert!(svg.starts_with("<svg"));
        assert!(svg.trim_end().ends_with("</svg>"));
        assert_eq!(svg.matches("<polyline").count(), 2);
        assert_eq!(svg.matches("<circle").count(), 6);
        assert!(svg.contains("a &lt;b&gt; &amp; c"));
        // Decades from 0.1 ms to 1000 ms.
        assert!(svg.contains(">0.1 ms<"));
        assert!(svg.contains(">1000 ms<"));
    }

    #[test]
    fn percent_chart_is_linear_with_percent_ticks() {
        let series = vec![Series { label: "sloAware".into(), points: vec![(10.0, 100.0), (20.0, 50.0), (30.0, 0.0)] }];
        let svg = chart("attainment", "offered load", YAxis::Percent(0), &series);
        assert!(svg.contains(">0%<") && svg.contains(">50%<") && svg.contains(">100%<"));
        assert!(svg.contains("SLO attainment"));
        assert_eq!(svg.matches("<circle").count(), 3, "a 0% point is drawn");
    }

    #[test]
    fn empty_chart_is_still_valid() {
        let svg = line_chart("nothing", "x", &[]);
        assert!(svg.contains("</svg>"));
        assert!(!svg.contains("NaN"));
    }
}
