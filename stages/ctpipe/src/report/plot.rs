//! Line plots as SVG: loss curves, metric-versus-step plots. Written by hand (a few hundred
//! bytes of markup per series) so that no font or system library is needed to draw one.

use std::fmt::Write as _;

/// One line of a plot.
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
    pub color: &'static str,
}

/// How a plot's axes and points are drawn.
#[derive(Debug, Clone, Copy, Default)]
pub struct Axes {
    /// log₁₀ axes (non-positive values are skipped on them).
    pub log_x: bool,
    pub log_y: bool,
    /// A marker at every point (few points, each a measurement: FD against NFE).
    pub markers: bool,
}

/// The most points a series is drawn with: longer ones (a 400k-step loss log) keep, per
/// bucket of consecutive points, the lowest and the highest, so spikes stay visible and the
/// file stays small.
const MAX_POINTS: usize = 2000;

/// A line plot, `log_y` for a log₁₀ y axis (non-positive values are skipped there).
pub fn line_plot_svg(title: &str, x_label: &str, y_label: &str, series: &[Series], log_y: bool) -> String {
    plot_svg(title, x_label, y_label, series, Axes { log_y, ..Axes::default() })
}

/// A line plot with round tick values, optional log axes and point markers.
pub fn plot_svg(title: &str, x_label: &str, y_label: &str, series: &[Series], axes: Axes) -> String {
    let (w, h) = (720.0, 420.0);
    let (left, right, top, bottom) = (70.0, 20.0, 40.0, 50.0);
    let tx = |x: f64| if axes.log_x { x.log10() } else { x };
    let ty = |y: f64| if axes.log_y { y.log10() } else { y };
    let drawable = |&(x, y): &(f64, f64)| x.is_finite() && y.is_finite() && (!axes.log_x || x > 0.0) && (!axes.log_y || y > 0.0);
    let shown: Vec<Vec<(f64, f64)>> = series.iter().map(|s| decimate(&s.points.iter().copied().filter(drawable).map(|(x, y)| (tx(x), ty(y))).collect::<Vec<_>>())).collect();
    let pts: Vec<(f64, f64)> = shown.iter().flatten().copied().collect();
    let mut svg = String::new();
    let _ = write!(svg, r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="sans-serif" font-size="12">"#);
    let _ = write!(svg, r#"<rect width="{w}" height="{h}" fill="white"/><text x="{}" y="22" text-anchor="middle" font-size="15">{}</text>"#, w / 2.0, esc(title));
    if pts.is_empty() {
        svg.push_str("</svg>\n");
        return svg;
    }
    let (mut x0, mut x1) = minmax(pts.iter().map(|p| p.0));
    let (mut y0, mut y1) = minmax(pts.iter().map(|p| p.1));
    if x1 <= x0 {
        x0 -= 0.5;
        x1 += 0.5;
    }
    if y1 <= y0 {
        y0 -= 0.5;
        y1 += 0.5;
    }
    // A margin of 4 % so that markers and extremes are not drawn on the frame.
    let (mx, my) = (0.04 * (x1 - x0), 0.04 * (y1 - y0));
    let (x0, x1, y0, y1) = (x0 - mx, x1 + mx, y0 - my, y1 + my);
    let (pw, ph) = (w - left - right, h - top - bottom);
    let sx = |x: f64| left + (x - x0) / (x1 - x0) * pw;
    let sy = |y: f64| top + ph - (y - y0) / (y1 - y0) * ph;
    let _ = write!(svg, r##"<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="none" stroke="#444"/>"##);
    for t in ticks(x0, x1, axes.log_x) {
        let _ = write!(svg, r##"<line x1="{0:.1}" y1="{1}" x2="{0:.1}" y2="{2}" stroke="#eee"/><text x="{0:.1}" y="{3}" text-anchor="middle">{4}</text>"##, sx(t), top, top + ph, top + ph + 16.0, label(t, axes.log_x));
    }
    for t in ticks(y0, y1, axes.log_y) {
        let _ = write!(svg, r##"<line x1="{0}" y1="{1:.1}" x2="{2}" y2="{1:.1}" stroke="#eee"/><text x="{3}" y="{4:.1}" text-anchor="end">{5}</text>"##, left, sy(t), left + pw, left - 6.0, sy(t) + 4.0, label(t, axes.log_y));
    }
    let scale = |log: bool| if log { " (log scale)" } else { "" };
    let _ = write!(svg, r#"<text x="{}" y="{}" text-anchor="middle">{}</text>"#, left + pw / 2.0, h - 12.0, esc(&format!("{x_label}{}", scale(axes.log_x))));
    let _ = write!(svg, r#"<text x="16" y="{0}" text-anchor="middle" transform="rotate(-90 16 {0})">{1}</text>"#, top + ph / 2.0, esc(&format!("{y_label}{}", scale(axes.log_y))));
    for (k, (s, points)) in series.iter().zip(&shown).enumerate() {
        let path: Vec<String> = points.iter().map(|&(x, y)| format!("{:.1},{:.1}", sx(x), sy(y))).collect();
        if path.len() > 1 {
            let _ = write!(svg, r#"<polyline fill="none" stroke="{}" stroke-width="1.5" points="{}"/>"#, s.color, path.join(" "));
        }
        if axes.markers || path.len() == 1 {
            for &(x, y) in points {
                let _ = write!(svg, r#"<circle cx="{:.1}" cy="{:.1}" r="3.5" fill="{}"/>"#, sx(x), sy(y), s.color);
            }
        }
        let ly = top + 16.0 + 16.0 * k as f64;
        let _ = write!(svg, r#"<line x1="{0}" y1="{1}" x2="{2}" y2="{1}" stroke="{3}" stroke-width="3"/><text x="{4}" y="{5}">{6}</text>"#, left + pw - 150.0, ly, left + pw - 130.0, s.color, left + pw - 124.0, ly + 4.0, esc(&s.name));
    }
    svg.push_str("</svg>\n");
    svg
}

/// At most [`MAX_POINTS`] points: per bucket of consecutive points, its lowest and highest
/// (in x order).
fn decimate(points: &[(f64, f64)]) -> Vec<(f64, f64)> {
    if points.len() <= MAX_POINTS {
        return points.to_vec();
    }
    let buckets = MAX_POINTS / 2;
    let size = points.len().div_ceil(buckets);
    let mut out = Vec::with_capacity(MAX_POINTS);
    for chunk in points.chunks(size) {
        let lo = chunk.iter().min_by(|a, b| a.1.total_cmp(&b.1)).copied().unwrap_or_default();
        let hi = chunk.iter().max_by(|a, b| a.1.total_cmp(&b.1)).copied().unwrap_or_default();
        let (a, b) = if lo.0 <= hi.0 { (lo, hi) } else { (hi, lo) };
        out.push(a);
        if b != a {
            out.push(b);
        }
    }
    out
}

/// Round tick positions in [lo, hi] (axis units: log₁₀ of the value on a log axis): 1, 2 or
/// 5 × 10ᵏ apart on a linear axis, about five of them; the powers of ten on a log axis, with
/// 2× and 5× between them when the range spans less than two decades.
fn ticks(lo: f64, hi: f64, log: bool) -> Vec<f64> {
    if log {
        let decades: Vec<f64> = (lo.ceil() as i32..=hi.floor() as i32).map(f64::from).collect();
        if decades.len() >= 3 {
            return decades;
        }
        let mut t: Vec<f64> = (lo.floor() as i32..=hi.ceil() as i32).flat_map(|k| [1.0, 2.0, 5.0].map(|m| (m * 10f64.powi(k)).log10())).filter(|v| *v >= lo && *v <= hi).collect();
        t.dedup();
        return t;
    }
    let raw = (hi - lo) / 5.0;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0].into_iter().map(|m| m * mag).find(|s| *s >= raw).unwrap_or(10.0 * mag);
    let first = (lo / step).ceil() as i64;
    let last = (hi / step).floor() as i64;
    // Rounded to the step's decimals: 3 × 0.2 is 0.6000000000000001 in f64.
    let scale = 10f64.powi((-mag.log10().round()).max(0.0) as i32);
    (first..=last).map(|i| (i as f64 * step * scale).round() / scale).collect()
}

/// A tick's text: the value (10^t on a log axis), round numbers without trailing zeros.
fn label(t: f64, log: bool) -> String {
    let v = if log { 10f64.powf(t) } else { t };
    if v != 0.0 && v.abs() >= 1e4 && (v / 1e3).fract().abs() < 1e-9 {
        return format!("{:.0}k", v / 1e3);
    }
    let text = sig3(v);
    if text.contains('.') && !text.contains('e') { text.trim_end_matches('0').trim_end_matches('.').to_string() } else { text }
}

/// Three significant digits, plain or scientific by magnitude.
fn sig3(v: f64) -> String {
    let a = v.abs();
    if a != 0.0 && !(1e-3..1e5).contains(&a) {
        format!("{v:.2e}")
    } else {
        let decimals = if a == 0.0 { 0 } else { (2 - a.log10().floor() as i32).max(0) as usize };
        format!("{v:.decimals$}")
    }
}

fn minmax(v: impl Iterator<Item = f64>) -> (f64, f64) {
    v.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), x| (a.min(x), b.max(x)))
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// A moving average (window `w`), for smoothing noisy loss curves.
pub fn moving_average(points: &[(f64, f64)], w: usize) -> Vec<(f64, f64)> {
    let w = w.max(1);
    let mut out = Vec::with_capacity(points.len());
    let mut sum = 0.0;
    for (i, &(x, y)) in points.iter().enumerate() {
        sum += y;
        if i >= w {
            sum -= points[i - w].1;
        }
        out.push((x, sum / (i + 1).min(w) as f64));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn svg_is_well_formed_and_scales() {
        let s = Series { name: "loss".into(), points: vec![(0.0, 1.0), (10.0, 0.1), (20.0, 0.01)], color: "#1f77b4" };
        let svg = line_plot_svg("Loss <ECT>", "step", "loss", &[s], true);
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert!(svg.contains("Loss &lt;ECT&gt;"));
        // log scale: the three points are equally spaced vertically.
        let pts = svg.split("points=\"").nth(1).unwrap().split('"').next().unwrap();
        let ys: Vec<f64> = pts.split(' ').map(|p| p.split(',').nth(1).unwrap().parse().unwrap()).collect();
        assert!(((ys[1] - ys[0]) - (ys[2] - ys[1])).abs() < 0.2, "{ys:?}");
        assert_eq!(moving_average(&[(0.0, 1.0), (1.0, 3.0), (2.0, 5.0)], 2), vec![(0.0, 1.0), (1.0, 2.0), (2.0, 4.0)]);
    }

    /// Ticks fall on round values: 0, 100k, … for 400k steps; the decades, or 1-2-5 inside
    /// one or two decades, on a log axis; labels without trailing digits.
    #[test]
    fn ticks_are_round() {
        assert_eq!(ticks(0.0, 400_000.0, false), vec![0.0, 100_000.0, 200_000.0, 300_000.0, 400_000.0]);
        assert_eq!(ticks(0.13, 0.91, false), vec![0.2, 0.4, 0.6, 0.8]);
        let nfe: Vec<String> = ticks(0.0, 35f64.log10(), true).iter().map(|t| label(*t, true)).collect();
        assert_eq!(nfe, ["1", "2", "5", "10", "20"]);
        let fd: Vec<String> = ticks(-1.0, 3.2, true).iter().map(|t| label(*t, true)).collect();
        assert_eq!(fd, ["0.1", "1", "10", "100", "1000"]);
        assert_eq!(label(200_000.0, false), "200k");
        assert_eq!(label(0.4, false), "0.4");
    }

    /// A 400k-point loss log draws as at most 2000 points (a small file), keeping its spike
    /// and its ends.
    #[test]
    fn long_series_are_decimated_keeping_extremes() {
        let mut points: Vec<(f64, f64)> = (0..400_000).map(|i| (i as f64, 1.0 / (1.0 + i as f64 / 1000.0))).collect();
        points[123_457].1 = 50.0;
        let svg = line_plot_svg("loss", "step", "loss", &[Series { name: "loss".into(), points, color: "#000" }], true);
        assert!(svg.len() < 40_000, "{} bytes", svg.len());
        let drawn = svg.split("points=\"").nth(1).unwrap().split('"').next().unwrap().split(' ').count();
        assert!((1000..=2000).contains(&drawn), "{drawn}");
        // The spike (log₁₀ 50, the largest value) is at the top of the plotting area's range.
        let ys: Vec<f64> = svg.split("points=\"").nth(1).unwrap().split('"').next().unwrap().split(' ').map(|p| p.split(',').nth(1).unwrap().parse().unwrap()).collect();
        assert!(ys.iter().copied().fold(f64::INFINITY, f64::min) < 60.0, "the spike was dropped");
    }

    #[test]
    fn markers_on_a_log_x_axis() {
        let s = Series { name: "ect".into(), points: vec![(1.0, 30.0), (2.0, 12.0), (35.0, 3.0)], color: "#1f77b4" };
        let svg = plot_svg("FD", "NFE", "FD", &[s], Axes { log_x: true, log_y: true, markers: true });
        assert_eq!(svg.matches("<circle").count(), 3);
        assert!(svg.contains("NFE (log scale)") && svg.contains(">10</text>"));
        // On a log axis 1 → 2 spans as far as 2 → 4 would: x(2) − x(1) = x(35) − x(17.5).
        let xs: Vec<f64> = svg.split("<circle cx=\"").skip(1).map(|c| c.split('"').next().unwrap().parse().unwrap()).collect();
        let per_decade = (xs[2] - xs[0]) / 35f64.log10();
        assert!(((xs[1] - xs[0]) - per_decade * 2f64.log10()).abs() < 0.2, "{xs:?}");
    }
}
