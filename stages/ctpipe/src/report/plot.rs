//! Line plots as SVG: loss curves, FD against NFE or training step, drawn with plotters (axes,
//! ticks, legend), its text laid out with the embedded font.

use super::font;
use anyhow::Result;
use plotters::coord::ranged1d::{DefaultFormatting, KeyPointHint};
use plotters::prelude::*;

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
pub fn line_plot_svg(title: &str, x_label: &str, y_label: &str, series: &[Series], log_y: bool) -> Result<String> {
    plot_svg(title, x_label, y_label, series, Axes { log_y, ..Axes::default() })
}

/// A line plot with round tick values, optional log axes, point markers and a legend.
///
/// Log axes are drawn as linear axes over log₁₀ of the values, with the ticks placed and
/// labelled here ([`ticks`], [`label`]): round values (1-2-5 steps, decades) rather than the
/// library's defaults.
pub fn plot_svg(title: &str, x_label: &str, y_label: &str, series: &[Series], axes: Axes) -> Result<String> {
    font::ensure();
    let tx = |x: f64| if axes.log_x { x.log10() } else { x };
    let ty = |y: f64| if axes.log_y { y.log10() } else { y };
    let drawable = |&(x, y): &(f64, f64)| x.is_finite() && y.is_finite() && (!axes.log_x || x > 0.0) && (!axes.log_y || y > 0.0);
    let shown: Vec<Vec<(f64, f64)>> = series.iter().map(|s| decimate(&s.points.iter().copied().filter(drawable).map(|(x, y)| (tx(x), ty(y))).collect::<Vec<_>>())).collect();
    let pts: Vec<(f64, f64)> = shown.iter().flatten().copied().collect();
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (720, 420)).into_drawing_area();
        root.fill(&WHITE)?;
        if pts.is_empty() {
            root.titled(title, (font::FAMILY, 18))?;
            root.present()?;
            drop(root);
            return Ok(svg + "\n");
        }
        let (x0, x1) = padded(minmax(pts.iter().map(|p| p.0)));
        let (y0, y1) = padded(minmax(pts.iter().map(|p| p.1)));
        let mut chart = ChartBuilder::on(&root)
            .caption(title, (font::FAMILY, 18))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(64)
            .build_cartesian_2d(Axis::new(x0, x1, axes.log_x), Axis::new(y0, y1, axes.log_y))?;
        let scale = |log: bool| if log { " (log scale)" } else { "" };
        chart
            .configure_mesh()
            .bold_line_style(RGBColor(235, 235, 235))
            .light_line_style(TRANSPARENT)
            .x_desc(format!("{x_label}{}", scale(axes.log_x)))
            .y_desc(format!("{y_label}{}", scale(axes.log_y)))
            .label_style((font::FAMILY, 13))
            .axis_desc_style((font::FAMILY, 14))
            .x_label_formatter(&|t| label(*t, axes.log_x))
            .y_label_formatter(&|t| label(*t, axes.log_y))
            .draw()?;
        for (s, points) in series.iter().zip(&shown) {
            let color = hex_color(s.color);
            let key = move |(x, y): (i32, i32)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(3));
            if points.len() > 1 {
                chart.draw_series(LineSeries::new(points.iter().copied(), color.stroke_width(2)))?.label(s.name.as_str()).legend(key);
            }
            if axes.markers || points.len() == 1 {
                let drawn = chart.draw_series(points.iter().map(|&p| Circle::new(p, 3, color.filled())))?;
                if points.len() == 1 {
                    drawn.label(s.name.as_str()).legend(key);
                }
            }
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .label_font((font::FAMILY, 13))
            .background_style(WHITE.mix(0.85))
            .border_style(RGBColor(200, 200, 200))
            .draw()?;
        root.present()?;
    }
    Ok(svg + "\n")
}

/// A linear axis (over log₁₀ of the values on a log axis) with the ticks [`ticks`] chooses.
struct Axis {
    lo: f64,
    hi: f64,
    ticks: Vec<f64>,
}

impl Axis {
    fn new(lo: f64, hi: f64, log: bool) -> Axis {
        Axis { lo, hi, ticks: ticks(lo, hi, log) }
    }
}

impl Ranged for Axis {
    // Labels come from the mesh's formatters (`label`); the default formatting is never used.
    type FormatOption = DefaultFormatting;
    type ValueType = f64;

    fn map(&self, v: &f64, limit: (i32, i32)) -> i32 {
        let along = (v - self.lo) / (self.hi - self.lo);
        limit.0 + ((limit.1 - limit.0) as f64 * along).round() as i32
    }

    fn key_points<H: KeyPointHint>(&self, hint: H) -> Vec<f64> {
        if hint.weight().allow_light_points() { Vec::new() } else { self.ticks.clone() }
    }

    fn range(&self) -> std::ops::Range<f64> {
        self.lo..self.hi
    }
}

/// A range widened by 4 % on each side (markers and extremes off the frame), or by ½ when it is
/// a single value.
fn padded((lo, hi): (f64, f64)) -> (f64, f64) {
    let (lo, hi) = if hi <= lo { (lo - 0.5, hi + 0.5) } else { (lo, hi) };
    let m = 0.04 * (hi - lo);
    (lo - m, hi + m)
}

/// `#rrggbb` as a plotters colour (black if malformed: colours are constants of this crate).
fn hex_color(hex: &str) -> RGBColor {
    let byte = |i: usize| hex.get(i..i + 2).and_then(|h| u8::from_str_radix(h, 16).ok()).unwrap_or(0);
    RGBColor(byte(1), byte(3), byte(5))
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

    /// The points of the series drawn in `color` (its polyline; axes and legend keys are drawn
    /// in other colours or widths).
    fn series_points(svg: &str, color: &str) -> Vec<(f64, f64)> {
        let tag = format!("stroke=\"{}\" stroke-width=\"2\" points=\"", color.to_uppercase());
        let Some(at) = svg.find(&tag) else { return Vec::new() };
        let list = svg[at + tag.len()..].split('"').next().unwrap();
        list.split_whitespace().map(|p| p.split_once(',').map(|(x, y)| (x.parse().unwrap(), y.parse().unwrap())).unwrap()).collect()
    }

    /// Every text element's content, trimmed.
    fn texts(svg: &str) -> Vec<String> {
        svg.split("<text").skip(1).map(|t| t.split_once('>').unwrap().1.split("</text>").next().unwrap().trim().to_string()).collect()
    }

    #[test]
    fn svg_is_well_formed_and_scales() {
        let s = Series { name: "loss".into(), points: vec![(0.0, 1.0), (10.0, 0.1), (20.0, 0.01)], color: "#1f77b4" };
        let svg = line_plot_svg("Loss <ECT>", "step", "loss", &[s], true).unwrap();
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert!(texts(&svg).contains(&"Loss &lt;ECT&gt;".to_string()), "{:?}", texts(&svg));
        assert!(texts(&svg).contains(&"loss (log scale)".to_string()) && texts(&svg).contains(&"step".to_string()), "{:?}", texts(&svg));
        // log scale: the three points are equally spaced vertically (to the pixel).
        let ys: Vec<f64> = series_points(&svg, "#1f77b4").iter().map(|p| p.1).collect();
        assert_eq!(ys.len(), 3, "{svg}");
        assert!(((ys[1] - ys[0]) - (ys[2] - ys[1])).abs() <= 1.0, "{ys:?}");
        assert_eq!(moving_average(&[(0.0, 1.0), (1.0, 3.0), (2.0, 5.0)], 2), vec![(0.0, 1.0), (1.0, 2.0), (2.0, 4.0)]);
        // Nothing to draw: the title alone, still a picture.
        let empty = line_plot_svg("no data", "step", "loss", &[], true).unwrap();
        assert_eq!(texts(&empty), ["no data"]);
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
        let svg = line_plot_svg("loss", "step", "loss", &[Series { name: "loss".into(), points, color: "#000000" }], true).unwrap();
        assert!(svg.len() < 40_000, "{} bytes", svg.len());
        let drawn = series_points(&svg, "#000000");
        assert!((1000..=2000).contains(&drawn.len()), "{}", drawn.len());
        // The spike (50, the only value above 1) still sets the range: the axis reaches 10.
        assert!(texts(&svg).contains(&"10".to_string()), "the spike was dropped: {:?}", texts(&svg));
    }

    #[test]
    fn markers_on_a_log_x_axis() {
        let s = Series { name: "ect".into(), points: vec![(1.0, 30.0), (2.0, 12.0), (35.0, 3.0)], color: "#1f77b4" };
        let svg = plot_svg("FD", "NFE", "FD", &[s], Axes { log_x: true, log_y: true, markers: true }).unwrap();
        assert_eq!(svg.matches("<circle").count(), 3);
        let t = texts(&svg);
        assert!(t.contains(&"NFE (log scale)".to_string()) && t.contains(&"10".to_string()) && t.contains(&"ect".to_string()), "{t:?}");
        // On a log axis 1 → 2 spans as far as 2 → 4 would: x(2) − x(1) = x(35) − x(17.5).
        let xs: Vec<f64> = svg.split("<circle cx=\"").skip(1).map(|c| c.split('"').next().unwrap().parse().unwrap()).collect();
        let per_decade = (xs[2] - xs[0]) / 35f64.log10();
        assert!(((xs[1] - xs[0]) - per_decade * 2f64.log10()).abs() <= 1.0, "{xs:?}");
    }
}
