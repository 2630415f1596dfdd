//! A small SVG per run: throughput per second on the left, latency
//! percentiles on the right. Hand-written: two charts do not need a plotting
//! library. And [`chart`]: recorded figures of several systems (a JSON file
//! of series, such as `docs/img/fanout-p99.json`) as one line chart, for the
//! docs (`iocluster-bench chart FIGURES --out SVG`).

use std::fmt::Write as _;
use std::path::Path;

use serde_json::Value;

use crate::stats::{Latency, Timeline};

const W: f64 = 900.0;
const H: f64 = 320.0;
const PANEL: f64 = 400.0;
const TOP: f64 = 50.0;
const BOTTOM: f64 = 280.0;

pub fn write(
    path: &Path,
    result: &Value,
    timeline: &Timeline,
    latency: &Latency,
) -> std::io::Result<()> {
    std::fs::write(path, render(result, timeline, latency))
}

fn render(result: &Value, timeline: &Timeline, latency: &Latency) -> String {
    let mut svg = String::new();
    let _ = write!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12">"#
    );
    svg.push_str(r#"<rect width="100%" height="100%" fill="white"/>"#);
    let title = format!(
        "{} — {}",
        result["scenario"].as_str().unwrap_or("run"),
        summary_line(result)
    );
    let _ = write!(
        svg,
        r#"<text x="20" y="22" font-size="14">{}</text>"#,
        escape(&title)
    );

    // Left: per-second counts.
    let left = 50.0;
    axis(&mut svg, left, "per second");
    let peak = timeline.0.iter().copied().max().unwrap_or(0).max(1) as f64;
    if !timeline.0.is_empty() {
        let step = PANEL / timeline.0.len().max(2).saturating_sub(1) as f64;
        let points: Vec<String> = timeline
            .0
            .iter()
            .enumerate()
            .map(|(i, v)| {
                let x = left + i as f64 * step;
                let y = BOTTOM - (*v as f64 / peak) * (BOTTOM - TOP);
                format!("{x:.1},{y:.1}")
            })
            .collect();
        let _ = write!(
            svg,
            r##"<polyline fill="none" stroke="#36c" stroke-width="2" points="{}"/>"##,
            points.join(" ")
        );
        let _ = write!(
            svg,
            r#"<text x="{}" y="{}">{peak:.0}</text>"#,
            left + 4.0,
            TOP - 4.0
        );
        let _ = write!(
            svg,
            r#"<text x="{left}" y="{}">seconds 0–{}</text>"#,
            BOTTOM + 18.0,
            timeline.0.len()
        );
    }

    // Right: latency percentiles as bars.
    let right = 500.0;
    axis(&mut svg, right, "latency (ms)");
    if latency.count() > 0 {
        let quantiles = [
            (0.5, "p50"),
            (0.9, "p90"),
            (0.99, "p99"),
            (0.999, "p99.9"),
            (1.0, "max"),
        ];
        let top = latency.ms_at(1.0).max(0.001);
        let width = PANEL / quantiles.len() as f64;
        for (i, (q, name)) in quantiles.iter().enumerate() {
            let ms = latency.ms_at(*q);
            let h = (ms / top) * (BOTTOM - TOP);
            let x = right + i as f64 * width + 8.0;
            let _ = write!(
                svg,
                r##"<rect x="{x:.1}" y="{:.1}" width="{:.1}" height="{h:.1}" fill="#c63"/>"##,
                BOTTOM - h,
                width - 16.0
            );
            let _ = write!(
                svg,
                r#"<text x="{x:.1}" y="{}">{name}</text>"#,
                BOTTOM + 18.0
            );
            let _ = write!(
                svg,
                r#"<text x="{x:.1}" y="{:.1}">{ms:.2}</text>"#,
                BOTTOM - h - 4.0
            );
        }
    }
    svg.push_str("</svg>\n");
    svg
}

/// Recorded figures to draw: one value per category (an x position) per
/// series, `null` where a system was not measured. Read from JSON.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Figures {
    pub title: String,
    /// Where the figures come from (drawn under the title).
    pub source: String,
    pub x_label: String,
    pub y_label: String,
    pub categories: Vec<String>,
    /// A logarithmic y axis (for series that differ by orders of magnitude).
    #[serde(default)]
    pub log_y: bool,
    pub series: Vec<Series>,
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Series {
    pub name: String,
    pub values: Vec<Option<f64>>,
    /// Drawn dashed: figures from another run than the others.
    #[serde(default)]
    pub dashed: bool,
}

/// One colour per series, in order; the first is the one to look at.
const PALETTE: [&str; 6] = [
    "#d9480f", "#1c7ed6", "#2b8a3e", "#868e96", "#ae3ec9", "#f59f00",
];

/// Renders `figures` as an SVG line chart (a viewBox, so it scales on a
/// phone), or says why it cannot.
pub fn chart(figures: &Figures) -> Result<String, String> {
    // The legend goes under the chart, two names a row, so the chart keeps
    // its width and stays readable scaled down to a phone.
    let rows = figures.series.len().div_ceil(2) as f64;
    let (cw, left, right, top, bottom) = (640.0, 72.0, 620.0, 78.0, 330.0);
    let ch = bottom + 62.0 + rows * 24.0;
    if figures.categories.len() < 2 {
        return Err("at least two categories are needed".into());
    }
    if figures.series.is_empty() || figures.series.len() > PALETTE.len() {
        return Err(format!("1 to {} series are drawn", PALETTE.len()));
    }
    let values: Vec<f64> = figures
        .series
        .iter()
        .flat_map(|series| series.values.iter().flatten().copied())
        .collect();
    for series in &figures.series {
        if series.values.len() != figures.categories.len() {
            return Err(format!(
                "{}: {} values for {} categories",
                series.name,
                series.values.len(),
                figures.categories.len()
            ));
        }
    }
    if values
        .iter()
        .any(|v| !v.is_finite() || (figures.log_y && *v <= 0.0) || *v < 0.0)
    {
        return Err("values must be finite, positive on a log axis".into());
    }
    let max = values.iter().copied().fold(0.0, f64::max);
    if max <= 0.0 {
        return Err("nothing to draw".into());
    }
    // The y axis: decades on a log scale, else 0 to a round maximum in 5 steps.
    let (ticks, scale): (Vec<f64>, Box<dyn Fn(f64) -> f64>) = if figures.log_y {
        let min = values.iter().copied().fold(f64::INFINITY, f64::min);
        let (low, high) = (
            min.log10().floor(),
            max.log10().ceil().max(min.log10().floor() + 1.0),
        );
        let ticks = (low as i32..=high as i32).map(|e| 10f64.powi(e)).collect();
        let scale = move |v: f64| bottom - (v.log10() - low) / (high - low) * (bottom - top);
        (ticks, Box::new(scale))
    } else {
        let magnitude = 10f64.powf(max.log10().floor());
        let step = [1.0, 2.0, 2.5, 5.0, 10.0]
            .iter()
            .map(|m| m * magnitude / 5.0)
            .find(|step| step * 5.0 >= max)
            .unwrap_or(magnitude * 2.0);
        let ticks = (0..=5).map(|i| i as f64 * step).collect();
        let scale = move |v: f64| bottom - v / (step * 5.0) * (bottom - top);
        (ticks, Box::new(scale))
    };
    let step_x = (right - left) / (figures.categories.len() - 1) as f64;
    let x_of = |i: usize| left + i as f64 * step_x;

    let mut svg = String::new();
    let _ = write!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {cw} {ch}" width="{cw}" height="{ch}" font-family="sans-serif" font-size="14">"#
    );
    let _ = write!(svg, r#"<title>{}</title>"#, escape(&figures.title));
    svg.push_str(r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = write!(
        svg,
        r#"<text x="20" y="28" font-size="17" font-weight="bold">{}</text>"#,
        escape(&figures.title)
    );
    let _ = write!(
        svg,
        r##"<text x="20" y="48" font-size="11" fill="#555">{}</text>"##,
        escape(&figures.source)
    );
    for tick in &ticks {
        let y = scale(*tick);
        let _ = write!(
            svg,
            r##"<line x1="{left}" y1="{y:.1}" x2="{right}" y2="{y:.1}" stroke="#e9ecef"/><text x="{:.1}" y="{:.1}" text-anchor="end" fill="#555">{}</text>"##,
            left - 6.0,
            y + 4.0,
            number(*tick)
        );
    }
    let _ = write!(
        svg,
        r##"<line x1="{left}" y1="{top}" x2="{left}" y2="{bottom}" stroke="#999"/><line x1="{left}" y1="{bottom}" x2="{right}" y2="{bottom}" stroke="#999"/>"##
    );
    for (i, category) in figures.categories.iter().enumerate() {
        let _ = write!(
            svg,
            r##"<text x="{:.1}" y="{}" text-anchor="middle" fill="#555">{}</text>"##,
            x_of(i),
            bottom + 18.0,
            escape(category)
        );
    }
    let _ = write!(
        svg,
        r##"<text x="{:.1}" y="{}" text-anchor="middle" fill="#333">{}</text>"##,
        (left + right) / 2.0,
        bottom + 40.0,
        escape(&figures.x_label)
    );
    let _ = write!(
        svg,
        r##"<text transform="translate(18 {:.1}) rotate(-90)" text-anchor="middle" fill="#333">{}</text>"##,
        (top + bottom) / 2.0,
        escape(&figures.y_label)
    );
    // Later series first, so the first is drawn on top.
    for (index, series) in figures.series.iter().enumerate().rev() {
        let colour = PALETTE[index];
        let width = if index == 0 { 3.5 } else { 2.0 };
        let dash = if series.dashed {
            r#" stroke-dasharray="6 4""#
        } else {
            ""
        };
        let points: Vec<(f64, f64)> = series
            .values
            .iter()
            .enumerate()
            .filter_map(|(i, v)| v.map(|v| (x_of(i), scale(v))))
            .collect();
        let line: Vec<String> = points
            .iter()
            .map(|(x, y)| format!("{x:.1},{y:.1}"))
            .collect();
        let _ = write!(
            svg,
            r#"<polyline fill="none" stroke="{colour}" stroke-width="{width}"{dash} points="{}"/>"#,
            line.join(" ")
        );
        for (x, y) in &points {
            let _ = write!(
                svg,
                r#"<circle cx="{x:.1}" cy="{y:.1}" r="{}" fill="{colour}"/>"#,
                width + 1.0
            );
        }
    }
    // The legend, each name beside its colour.
    for (index, series) in figures.series.iter().enumerate() {
        let y = bottom + 66.0 + (index / 2) as f64 * 24.0;
        let x = if index % 2 == 0 {
            left
        } else {
            (left + right) / 2.0
        };
        let dash = if series.dashed {
            r#" stroke-dasharray="6 4""#
        } else {
            ""
        };
        let weight = if index == 0 {
            r#" font-weight="bold""#
        } else {
            ""
        };
        let _ = write!(
            svg,
            r#"<line x1="{x}" y1="{y:.1}" x2="{}" y2="{y:.1}" stroke="{}" stroke-width="3"{dash}/><text x="{}" y="{:.1}"{weight}>{}</text>"#,
            x + 26.0,
            PALETTE[index],
            x + 32.0,
            y + 4.0,
            escape(&series.name)
        );
    }
    svg.push_str("</svg>\n");
    Ok(svg)
}

/// A tick label: no needless decimals, thousands apart (`10 000`).
fn number(value: f64) -> String {
    if value.fract() != 0.0 {
        return format!("{value}");
    }
    let digits = format!("{value:.0}");
    let mut grouped = String::new();
    for (i, digit) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            grouped.push(' ');
        }
        grouped.push(digit);
    }
    grouped
}

fn axis(svg: &mut String, x: f64, label: &str) {
    let _ = write!(
        svg,
        r##"<line x1="{x}" y1="{TOP}" x2="{x}" y2="{BOTTOM}" stroke="#999"/><line x1="{x}" y1="{BOTTOM}" x2="{}" y2="{BOTTOM}" stroke="#999"/><text x="{x}" y="{}" fill="#555">{label}</text>"##,
        x + PANEL,
        TOP - 18.0
    );
}

fn summary_line(result: &Value) -> String {
    let mut parts = Vec::new();
    for key in [
        "affinity",
        "delivered",
        "lost",
        "round_trips",
        "connected",
        "failed",
        "errors",
    ] {
        match result.get(key) {
            Some(Value::String(v)) => parts.push(format!("{key} {v}")),
            Some(v) => parts.push(format!("{key} {v}")),
            None => {}
        }
    }
    parts.join(", ")
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The committed charts are what their committed figures render to.
    #[test]
    fn the_committed_charts_match_their_figures() {
        let figures: Figures =
            serde_json::from_str(include_str!("../../../docs/img/fanout-p99.json")).unwrap();
        assert_eq!(
            chart(&figures).unwrap(),
            include_str!("../../../docs/img/fanout-p99.svg"),
            "run: cargo run -p iocluster-bench -- chart docs/img/fanout-p99.json --out docs/img/fanout-p99.svg"
        );
    }

    #[test]
    fn bad_figures_are_refused() {
        let figures = |values: Vec<Option<f64>>, log_y| Figures {
            title: "t".into(),
            source: "s".into(),
            x_label: "x".into(),
            y_label: "y".into(),
            categories: vec!["a".into(), "b".into()],
            log_y,
            series: vec![Series {
                name: "n".into(),
                values,
                dashed: false,
            }],
        };
        assert!(chart(&figures(vec![Some(1.0)], false)).is_err(), "too few");
        assert!(
            chart(&figures(vec![Some(0.0), Some(1.0)], true)).is_err(),
            "0 on log"
        );
        assert!(chart(&figures(vec![Some(f64::NAN), Some(1.0)], false)).is_err());
        let svg = chart(&figures(vec![Some(3.0), None], false)).unwrap();
        assert!(svg.contains("<polyline") && svg.ends_with("</svg>\n"));
    }

    #[test]
    fn renders_both_panels() {
        let mut latency = Latency::new();
        latency.record(1500);
        let svg = render(
            &serde_json::json!({ "scenario": "fanout", "delivered": 10, "lost": 0 }),
            &Timeline(vec![3, 5, 2]),
            &latency,
        );
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>\n"));
        assert!(svg.contains("<polyline") && svg.contains("p99.9"));
        assert!(svg.contains("fanout — delivered 10, lost 0"));
    }
}
