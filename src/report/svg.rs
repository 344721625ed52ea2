//! Inline SVG line charts for the HTML report: a few series over a linear
//! or logarithmic axis, vertical marks (stage boundaries, the knee) and
//! shaded ranges (warm-up). Plain markup, no script, no external resource,
//! so a report renders offline years later.

use std::fmt::Write as _;

/// Chart size in SVG user units, and the plot area's margins.
const WIDTH: f64 = 760.0;
const HEIGHT: f64 = 260.0;
const LEFT: f64 = 64.0;
const RIGHT: f64 = 150.0;
const TOP: f64 = 28.0;
const BOTTOM: f64 = 36.0;

/// Series colours, in order (colour-blind friendly).
const COLOURS: [&str; 6] = [
    "#0072b2", "#d55e00", "#009e73", "#cc79a7", "#e69f00", "#56b4e9",
];

/// How an axis maps values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scale {
    /// Evenly.
    Linear,
    /// By orders of magnitude (values must be positive; others are left out).
    Log,
}

/// One line.
#[derive(Debug, Clone)]
pub struct Series {
    /// Legend text.
    pub name: String,
    /// (x, y) points, in x order.
    pub points: Vec<(f64, f64)>,
}

/// A chart to draw.
#[derive(Debug, Clone)]
pub struct Chart {
    /// Title above the plot.
    pub title: String,
    /// Under the x axis.
    pub x_label: String,
    /// Beside the y axis.
    pub y_label: String,
    /// The x axis.
    pub x_scale: Scale,
    /// The y axis.
    pub y_scale: Scale,
    /// The lines.
    pub series: Vec<Series>,
    /// Vertical lines at these x values, labelled.
    pub marks: Vec<(f64, String)>,
    /// Shaded x ranges.
    pub shades: Vec<(f64, f64)>,
    /// Labels for x ticks instead of numbers (x = 0, 1, 2, …).
    pub x_names: Vec<String>,
    /// How an x tick's value is written.
    pub x_format: fn(f64) -> String,
}

impl Chart {
    /// An empty chart with these titles.
    pub fn new(title: &str, x_label: &str, y_label: &str) -> Chart {
        Chart {
            title: title.into(),
            x_label: x_label.into(),
            y_label: y_label.into(),
            x_scale: Scale::Linear,
            y_scale: Scale::Linear,
            series: Vec::new(),
            marks: Vec::new(),
            shades: Vec::new(),
            x_names: Vec::new(),
            x_format: label,
        }
    }
}

/// Escapes text for HTML and SVG.
pub fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// One axis: the range of values and how it maps onto pixels.
#[derive(Debug, Clone, Copy)]
struct Axis {
    scale: Scale,
    low: f64,
    high: f64,
}

impl Axis {
    /// The axis over `values` (a log axis over the positive ones).
    fn over(scale: Scale, values: impl Iterator<Item = f64>) -> Option<Axis> {
        let values: Vec<f64> = values
            .filter(|v| v.is_finite() && (scale == Scale::Linear || *v > 0.0))
            .collect();
        let (mut low, mut high) = values
            .iter()
            .fold((f64::MAX, f64::MIN), |(l, h), &v| (l.min(v), h.max(v)));
        if values.is_empty() {
            return None;
        }
        match scale {
            Scale::Linear => {
                low = low.min(0.0);
                if high <= low {
                    high = low + 1.0;
                }
                let step = nice_step((high - low) / 4.0);
                low = (low / step).floor() * step;
                high = (high / step).ceil() * step;
            }
            Scale::Log => {
                low = 10f64.powf(low.log10().floor());
                high = 10f64.powf(high.log10().ceil()).max(low * 10.0);
            }
        }
        Some(Axis { scale, low, high })
    }

    /// Where `value` falls, from 0 (low) to 1 (high).
    fn fraction(&self, value: f64) -> f64 {
        match self.scale {
            Scale::Linear => (value - self.low) / (self.high - self.low),
            Scale::Log => {
                (value.log10() - self.low.log10()) / (self.high.log10() - self.low.log10())
            }
        }
    }

    /// Values to label: each power of ten on a log axis, five steps on a
    /// linear one.
    fn ticks(&self) -> Vec<f64> {
        match self.scale {
            Scale::Linear => {
                let step = nice_step((self.high - self.low) / 4.0);
                let steps = ((self.high - self.low) / step).round() as i32;
                (0..=steps)
                    .map(|i| self.low + step * f64::from(i))
                    .collect()
            }
            Scale::Log => {
                let (a, b) = (
                    self.low.log10().round() as i32,
                    self.high.log10().round() as i32,
                );
                (a..=b).map(|e| 10f64.powi(e)).collect()
            }
        }
    }
}

/// The smallest of 1, 2, 2.5 and 5 times a power of ten that is at least
/// `raw`: tick steps a reader can add up.
fn nice_step(raw: f64) -> f64 {
    let power = 10f64.powf(raw.log10().floor());
    [1.0, 2.0, 2.5, 5.0, 10.0]
        .into_iter()
        .map(|m| m * power)
        .find(|&step| step >= raw * (1.0 - 1e-9))
        .unwrap_or(10.0 * power)
}

/// A tick label: short, and exact for small integers.
pub fn label(value: f64) -> String {
    let magnitude = value.abs();
    if magnitude >= 1e6 {
        format!("{:.1}M", value / 1e6)
    } else if magnitude >= 1e4 {
        format!("{:.0}k", value / 1e3)
    } else if magnitude >= 10.0 || value == value.round() {
        format!("{value:.0}")
    } else if magnitude >= 0.1 {
        format!("{value:.1}")
    } else {
        format!("{value}")
    }
}

/// The chart as an `<svg>` element; a note instead when nothing can be
/// drawn (no points, or none positive on a log axis).
pub fn line_chart(chart: &Chart) -> String {
    let points = || chart.series.iter().flat_map(|s| s.points.iter());
    let x_values = points().map(|p| p.0).chain(chart.marks.iter().map(|m| m.0));
    let (Some(x), Some(y)) = (
        Axis::over(chart.x_scale, x_values),
        Axis::over(chart.y_scale, points().map(|p| p.1)),
    ) else {
        return format!(
            "<p class=\"empty\">{}: nothing to draw</p>\n",
            escape(&chart.title)
        );
    };
    let (plot_w, plot_h) = (WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM);
    let px = |v: f64| LEFT + x.fraction(v) * plot_w;
    let py = |v: f64| TOP + (1.0 - y.fraction(v)) * plot_h;
    let mut out = String::new();
    let _ = write!(
        out,
        "<svg class=\"chart\" viewBox=\"0 0 {WIDTH} {HEIGHT}\" role=\"img\" aria-label=\"{t}\"><title>{t}</title>\
         <text x=\"{LEFT}\" y=\"16\" class=\"title\">{t}</text>",
        t = escape(&chart.title)
    );
    for &(from, to) in &chart.shades {
        let _ = write!(
            out,
            "<rect class=\"shade\" x=\"{:.1}\" y=\"{TOP}\" width=\"{:.1}\" height=\"{plot_h}\"/>",
            px(from),
            (px(to) - px(from)).max(0.0)
        );
    }
    axes(&mut out, chart, &x, &y, px, py);
    for (i, (at, text)) in chart.marks.iter().enumerate() {
        // Labels near the right edge go left of their line.
        let (dx, anchor) = if x.fraction(*at) > 0.8 {
            (-3.0, "end")
        } else {
            (3.0, "start")
        };
        let _ = write!(
            out,
            "<line class=\"mark\" x1=\"{0:.1}\" x2=\"{0:.1}\" y1=\"{TOP}\" y2=\"{1}\"/><text class=\"mark-label\" x=\"{2:.1}\" y=\"{3}\" text-anchor=\"{anchor}\">{4}</text>",
            px(*at),
            TOP + plot_h,
            px(*at) + dx,
            TOP + 10.0 + 11.0 * (i % 3) as f64,
            escape(text)
        );
    }
    for (i, series) in chart.series.iter().enumerate() {
        lines(
            &mut out,
            series,
            COLOURS[i % COLOURS.len()],
            i,
            chart,
            px,
            py,
        );
    }
    out.push_str("</svg>\n");
    out
}

/// The frame, the ticks and the axis labels.
fn axes(
    out: &mut String,
    chart: &Chart,
    x: &Axis,
    y: &Axis,
    px: impl Fn(f64) -> f64,
    py: impl Fn(f64) -> f64,
) {
    let (bottom, right) = (HEIGHT - BOTTOM, WIDTH - RIGHT);
    let _ = write!(
        out,
        "<rect class=\"frame\" x=\"{LEFT}\" y=\"{TOP}\" width=\"{}\" height=\"{}\"/>",
        right - LEFT,
        bottom - TOP
    );
    for tick in y.ticks() {
        let _ = write!(
            out,
            "<line class=\"grid\" x1=\"{LEFT}\" x2=\"{right}\" y1=\"{0:.1}\" y2=\"{0:.1}\"/><text class=\"tick\" x=\"{1}\" y=\"{2:.1}\" text-anchor=\"end\">{3}</text>",
            py(tick),
            LEFT - 4.0,
            py(tick) + 3.0,
            label(tick)
        );
    }
    let x_ticks: Vec<(f64, String)> = if chart.x_names.is_empty() {
        x.ticks()
            .into_iter()
            .map(|t| (t, (chart.x_format)(t)))
            .collect()
    } else {
        chart
            .x_names
            .iter()
            .enumerate()
            .map(|(i, n)| (i as f64, n.clone()))
            .collect()
    };
    for (tick, text) in x_ticks {
        let _ = write!(
            out,
            "<text class=\"tick\" x=\"{:.1}\" y=\"{}\" text-anchor=\"middle\">{}</text>",
            px(tick),
            bottom + 14.0,
            escape(&text)
        );
    }
    let _ = write!(
        out,
        "<text class=\"axis\" x=\"{:.1}\" y=\"{}\" text-anchor=\"middle\">{}</text><text class=\"axis\" x=\"12\" y=\"{:.1}\" transform=\"rotate(-90 12 {:.1})\" text-anchor=\"middle\">{}</text>",
        (LEFT + right) / 2.0,
        HEIGHT - 4.0,
        escape(&chart.x_label),
        (TOP + bottom) / 2.0,
        (TOP + bottom) / 2.0,
        escape(&chart.y_label)
    );
}

/// One series' polyline, its points and its legend entry.
fn lines(
    out: &mut String,
    series: &Series,
    colour: &str,
    index: usize,
    chart: &Chart,
    px: impl Fn(f64) -> f64,
    py: impl Fn(f64) -> f64,
) {
    let drawable = |&&(x, y): &&(f64, f64)| {
        x.is_finite()
            && y.is_finite()
            && (chart.x_scale == Scale::Linear || x > 0.0)
            && (chart.y_scale == Scale::Linear || y > 0.0)
    };
    let coordinates: Vec<String> = series
        .points
        .iter()
        .filter(drawable)
        .map(|&(x, y)| format!("{:.1},{:.1}", px(x), py(y)))
        .collect();
    let _ = write!(
        out,
        "<polyline class=\"series\" stroke=\"{colour}\" points=\"{}\"/>",
        coordinates.join(" ")
    );
    if coordinates.len() <= 30 {
        for point in &coordinates {
            let (cx, cy) = point.split_once(',').unwrap_or(("0", "0"));
            let _ = write!(
                out,
                "<circle cx=\"{cx}\" cy=\"{cy}\" r=\"2.5\" fill=\"{colour}\"/>"
            );
        }
    }
    let y = TOP + 12.0 + 16.0 * index as f64;
    let _ = write!(
        out,
        "<line x1=\"{0}\" x2=\"{1}\" y1=\"{y}\" y2=\"{y}\" stroke=\"{colour}\" stroke-width=\"2\"/><text class=\"legend\" x=\"{2}\" y=\"{3}\">{4}</text>",
        WIDTH - RIGHT + 10.0,
        WIDTH - RIGHT + 26.0,
        WIDTH - RIGHT + 30.0,
        y + 4.0,
        escape(&series.name)
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chart_draws_its_series_marks_and_legend() {
        let mut chart = Chart::new("latency <all>", "s", "ms");
        chart.y_scale = Scale::Log;
        chart.series.push(Series {
            name: "p99".into(),
            points: vec![(0.0, 1.0), (1.0, 20.0), (2.0, 0.0), (3.0, 300.0)],
        });
        chart.marks.push((1.5, "stage 2".into()));
        chart.shades.push((0.0, 1.0));
        let svg = line_chart(&chart);
        assert!(
            svg.starts_with("<svg") && svg.ends_with("</svg>\n"),
            "{svg}"
        );
        assert!(svg.contains("latency &lt;all&gt;"));
        // Three drawable points (the zero has no place on a log axis).
        assert_eq!(svg.matches("<circle").count(), 3, "{svg}");
        assert!(svg.contains(">stage 2</text>") && svg.contains("class=\"shade\""));
        // Ticks at each power of ten from 1 to 1,000.
        for tick in [">1</text>", ">10</text>", ">100</text>", ">1000</text>"] {
            assert!(svg.contains(tick), "{tick} in {svg}");
        }
        let empty = line_chart(&Chart::new("none", "x", "y"));
        assert!(empty.contains("nothing to draw"));
    }

    #[test]
    fn linear_axes_have_round_ticks() {
        let axis = Axis::over(Scale::Linear, [3.0, 395.0].into_iter()).unwrap();
        assert_eq!(axis.ticks(), vec![0.0, 100.0, 200.0, 300.0, 400.0]);
        let axis = Axis::over(Scale::Linear, [0.0, 15.2].into_iter()).unwrap();
        assert_eq!(axis.ticks(), vec![0.0, 5.0, 10.0, 15.0, 20.0]);
        assert_eq!(nice_step(0.3), 0.5);
        assert_eq!(nice_step(2.2), 2.5);
    }

    #[test]
    fn labels_are_short() {
        assert_eq!(label(0.0), "0");
        assert_eq!(label(2.5), "2.5");
        assert_eq!(label(12_000.0), "12k");
        assert_eq!(label(2_500_000.0), "2.5M");
        assert_eq!(escape("a&<\""), "a&amp;&lt;&quot;");
    }
}
