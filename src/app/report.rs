//! Report output: a comparison's files (results.json, report.md, its plots drawn as SVG
//! scatter plots: linear or log x axis, legend, one colour per method). Deterministic text, so
//! reports can be diffed and reproduced by seed.

use crate::error::{Error, Result};
use crate::workflows::compare::report::{Plot, Report, Series};
use std::fmt::Write;
use std::path::Path;

/// Write `report` into `dir`: results.json, the plots, then report.md (last, so that a
/// report.md means a finished comparison).
pub fn write(dir: &Path, report: &Report) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let results = serde_json::to_vec_pretty(&report.results).unwrap();
    crate::io::write_atomic(&dir.join("results.json"), &results, true)?;
    for plot in &report.plots {
        crate::io::write_atomic(&dir.join(plot.file), scatter_svg(plot).as_bytes(), true)?;
    }
    crate::io::write_atomic(&dir.join("report.md"), report.markdown.as_bytes(), true)
}

const COLOURS: [&str; 8] = [
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf",
];

fn nice_ticks(lo: f64, hi: f64, n: usize) -> Vec<f64> {
    let span = (hi - lo).max(1e-12);
    let raw = span / n as f64;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|s| span / s <= n as f64)
        .unwrap_or(10.0 * mag);
    let mut t = (lo / step).ceil() * step;
    let mut out = Vec::new();
    while t <= hi + 1e-9 * step {
        out.push(t);
        t += step;
    }
    out
}

fn fmt_tick(v: f64) -> String {
    if v == 0.0 {
        "0".into()
    } else if v.abs() >= 1000.0 || v.abs() < 0.01 {
        format!("{v:.0e}")
    } else {
        format!("{}", (v * 1000.0).round() / 1000.0)
    }
}

/// Canvas size and margins (left, right for the legend, top, bottom), in pixels.
const W: f64 = 900.0;
const H: f64 = 460.0;
const ML: f64 = 70.0;
const MR: f64 = 330.0;
const MT: f64 = 40.0;
const MB: f64 = 55.0;

/// The data range of a plot, padded by 5%, and its map to pixels.
struct Frame {
    log_x: bool,
    x: (f64, f64),
    y: (f64, f64),
}

impl Frame {
    fn of(plot: &Plot) -> Frame {
        let mut f = Frame {
            log_x: plot.log_x,
            x: (f64::MAX, f64::MIN),
            y: (f64::MAX, f64::MIN),
        };
        let pts: Vec<(f64, f64)> = plot
            .series
            .iter()
            .flat_map(|s| s.points.iter().map(|&(x, y)| (f.tx(x), y)))
            .collect();
        for p in &pts {
            f.x = (f.x.0.min(p.0), f.x.1.max(p.0));
            f.y = (f.y.0.min(p.1), f.y.1.max(p.1));
        }
        if pts.is_empty() {
            (f.x, f.y) = ((0.0, 1.0), (0.0, 1.0));
        }
        let pad = |(a, b): (f64, f64)| {
            let d = ((b - a) * 0.05).max(1e-3);
            (a - d, b + d)
        };
        (f.x, f.y) = (pad(f.x), pad(f.y));
        f
    }
    /// x on the axis's scale (log10 on a log axis).
    fn tx(&self, x: f64) -> f64 {
        if self.log_x {
            x.max(1e-12).log10()
        } else {
            x
        }
    }
    /// Pixel coordinates of an axis-scale x, and of a y.
    fn px(&self, x: f64) -> f64 {
        ML + (x - self.x.0) / (self.x.1 - self.x.0) * (W - ML - MR)
    }
    fn py(&self, y: f64) -> f64 {
        H - MB - (y - self.y.0) / (self.y.1 - self.y.0) * (H - MT - MB)
    }
}

/// A plot as SVG text; a log x axis needs values above 0.
pub fn scatter_svg(plot: &Plot) -> String {
    let f = Frame::of(plot);
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{}" y="22" font-size="15" text-anchor="middle">{}</text>"#,
        (ML + W - MR) / 2.0,
        esc(&plot.title)
    );
    let _ = writeln!(
        s,
        r##"<rect x="{ML}" y="{MT}" width="{}" height="{}" fill="none" stroke="#444"/>"##,
        W - ML - MR,
        H - MT - MB
    );
    axes(&mut s, &f, plot);
    for (i, se) in plot.series.iter().enumerate() {
        series(&mut s, &f, i, se);
    }
    s.push_str("</svg>\n");
    s
}

/// Grid lines with their tick labels, and the axis labels.
fn axes(s: &mut String, f: &Frame, plot: &Plot) {
    let xt: Vec<f64> = if f.log_x {
        (f.x.0.ceil() as i64..=f.x.1.floor() as i64)
            .map(|e| e as f64)
            .collect()
    } else {
        nice_ticks(f.x.0, f.x.1, 6)
    };
    for t in xt {
        let label = if f.log_x {
            fmt_tick(10f64.powf(t))
        } else {
            fmt_tick(t)
        };
        let _ = writeln!(
            s,
            r##"<line x1="{0}" y1="{1}" x2="{0}" y2="{2}" stroke="#ddd"/><text x="{0}" y="{3}" text-anchor="middle">{4}</text>"##,
            f.px(t),
            MT,
            H - MB,
            H - MB + 16.0,
            label
        );
    }
    for t in nice_ticks(f.y.0, f.y.1, 6) {
        let _ = writeln!(
            s,
            r##"<line x1="{0}" y1="{1}" x2="{2}" y2="{1}" stroke="#ddd"/><text x="{3}" y="{4}" text-anchor="end">{5}</text>"##,
            ML,
            f.py(t),
            W - MR,
            ML - 6.0,
            f.py(t) + 4.0,
            fmt_tick(t)
        );
    }
    let _ = writeln!(
        s,
        r#"<text x="{}" y="{}" text-anchor="middle">{}</text>"#,
        (ML + W - MR) / 2.0,
        H - 12.0,
        esc(&plot.x_label)
    );
    let _ = writeln!(
        s,
        r#"<text x="16" y="{}" text-anchor="middle" transform="rotate(-90 16 {})">{}</text>"#,
        (MT + H - MB) / 2.0,
        (MT + H - MB) / 2.0,
        esc(&plot.y_label)
    );
}

/// Series `i`: its points (joined when it is a front) and its legend entry.
fn series(s: &mut String, f: &Frame, i: usize, se: &Series) {
    let c = COLOURS[i % COLOURS.len()];
    if se.connect && se.points.len() > 1 {
        let path: Vec<String> = se
            .points
            .iter()
            .map(|&(x, y)| format!("{:.1},{:.1}", f.px(f.tx(x)), f.py(y)))
            .collect();
        let _ = writeln!(
            s,
            r#"<polyline points="{}" fill="none" stroke="{c}" stroke-width="2"/>"#,
            path.join(" ")
        );
    }
    for &(x, y) in &se.points {
        let _ = writeln!(
            s,
            r#"<circle cx="{:.1}" cy="{:.1}" r="4" fill="{c}" fill-opacity="0.75"/>"#,
            f.px(f.tx(x)),
            f.py(y)
        );
    }
    let ly = MT + 14.0 + 20.0 * i as f64;
    let _ = writeln!(
        s,
        r#"<circle cx="{}" cy="{ly}" r="5" fill="{c}"/><text x="{}" y="{}">{}</text>"#,
        W - MR + 16.0,
        W - MR + 26.0,
        ly + 4.0,
        esc(&se.name)
    );
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}
