//! `cachesync bench --plot FILE.svg`: the strategies scenario's report as one SVG of
//! three panels — the write-latency CDF per strategy, the propagation CDF per strategy,
//! and acknowledged writes/s over time per strategy.
//!
//! Everything drawn comes from the report: the raw µs samples in
//! [`Samples`](super::report::Samples) and the per-second series of each
//! [`VariantReport`], the median round's like the samples. Drawn with `plotters`' SVG
//! backend only (no font or bitmap libraries): text is left to the SVG viewer.

use std::path::Path;

use plotters::prelude::*;

use super::report::{BenchReport, VariantReport};
use crate::error::{Error, Result};

/// Panel titles (the tests look for them in the SVG).
pub const WRITE_PANEL: &str = "Write latency CDF";
pub const PROPAGATION_PANEL: &str = "Propagation latency CDF";
pub const THROUGHPUT_PANEL: &str = "Acknowledged writes/s over time";

/// The whole picture's size in pixels.
const SIZE: (u32, u32) = (1000, 1500);
/// Latencies below this are drawn at it: a log axis has no 0, and propagation is
/// clamped at 0 µs when the change beat the committing client's OK.
const FLOOR_MS: f64 = 0.001;
/// A CDF keeps a point only where x grew by this factor since the last one: at most a
/// few hundred points per decade of latency instead of one per sample, which keeps a
/// long run's SVG small without a visible difference.
const CDF_STEP: f64 = 1.01;

/// Fails, naming the path, if `path` cannot be written: called before the bench runs,
/// so a typo'd directory does not cost a whole run. Leaves no file behind.
pub fn check_writable(path: &Path) -> Result<()> {
    let io = |source| Error::Io {
        context: format!("--plot: cannot write {}", path.display()),
        source,
    };
    if path.extension().and_then(|e| e.to_str()) != Some("svg") {
        return Err(Error::Config(vec![format!(
            "--plot: {} must end in .svg (the plot is an SVG)",
            path.display()
        )]));
    }
    if path.exists() {
        // Opened for writing, not truncated: the old picture stays until the new one.
        std::fs::OpenOptions::new()
            .write(true)
            .open(path)
            .map_err(io)?;
    } else {
        std::fs::File::create_new(path).map_err(io)?;
        std::fs::remove_file(path).map_err(io)?;
    }
    Ok(())
}

/// The empirical CDF of µs samples as (ms, fraction of samples ≤ it) points, thinned
/// to one per [`CDF_STEP`] of x (each cluster's last point, so the curve stays exact at
/// the points kept), values floored at [`FLOOR_MS`].
pub fn cdf(samples_us: &[u64]) -> Vec<(f64, f64)> {
    let mut sorted = samples_us.to_vec();
    sorted.sort_unstable();
    let n = sorted.len() as f64;
    let mut points: Vec<(f64, f64)> = Vec::new();
    // x of the current cluster's first sample: measured from it, not from the point
    // kept, so a slow creep of values cannot merge into one cluster.
    let mut anchor = f64::NEG_INFINITY;
    for (i, &us) in sorted.iter().enumerate() {
        let x = (us as f64 / 1e3).max(FLOOR_MS);
        let point = (x, (i + 1) as f64 / n);
        match points.last_mut() {
            Some(last) if x <= anchor * CDF_STEP => *last = point,
            _ => {
                anchor = x;
                points.push(point);
            }
        }
    }
    points
}

/// Renders the report's plot and writes it to `path`.
pub fn write_svg(report: &BenchReport, path: &Path) -> Result<()> {
    let svg = render(report).map_err(|e| Error::Io {
        context: format!("drawing the plot for {}", path.display()),
        source: std::io::Error::other(e),
    })?;
    std::fs::write(path, svg).map_err(|source| Error::Io {
        context: format!("writing {}", path.display()),
        source,
    })
}

/// The SVG text of the report's plot.
pub fn render(report: &BenchReport) -> std::result::Result<String, String> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, SIZE).into_drawing_area();
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        let root = root
            .titled(&title(report), ("sans-serif", 22))
            .map_err(|e| e.to_string())?;
        let panels = root.split_evenly((3, 1));
        let results = &report.results;
        latency_panel(
            &panels[0],
            WRITE_PANEL,
            "write call, ms (log)",
            results,
            |r| &r.samples.write_us,
        )?;
        // Write-back's writes land in the cache first: its propagation is into MySQL.
        let into_mysql: Vec<&str> = results
            .iter()
            .filter(|r| r.propagation_to == "MySQL")
            .map(|r| r.strategy.as_str())
            .collect();
        let propagation = if into_mysql.is_empty() {
            format!("{PROPAGATION_PANEL} (commit → Redis)")
        } else {
            format!(
                "{PROPAGATION_PANEL} (commit → Redis; {}: cache → MySQL)",
                into_mysql.join(", ")
            )
        };
        latency_panel(
            &panels[1],
            &propagation,
            "propagation, ms (log)",
            results,
            |r| &r.samples.propagation_us,
        )?;
        throughput_panel(&panels[2], results, report.workload.duration_s)?;
        root.present().map_err(|e| e.to_string())?;
    }
    Ok(svg)
}

fn title(report: &BenchReport) -> String {
    let w = &report.workload;
    let rate = w
        .rate
        .map_or("max".to_owned(), |r| format!("{r:.0} writes/s"));
    let rounds = if w.rounds > 1 {
        format!(", {} rounds (median round shown)", w.rounds)
    } else {
        String::new()
    };
    format!(
        "cachesync bench: {} writers at {rate}, {} s per strategy{rounds}, {} keys {}, fault {}",
        w.writers, w.duration_s, w.keys, w.skew, w.fault
    )
}

/// Line colours, dark enough on white (plotters' palettes put yellow third).
const COLOURS: [RGBColor; 8] = [
    RGBColor(0, 114, 178),
    RGBColor(213, 94, 0),
    RGBColor(0, 158, 115),
    RGBColor(204, 121, 167),
    RGBColor(86, 56, 150),
    RGBColor(166, 118, 29),
    RGBColor(0, 0, 0),
    RGBColor(120, 120, 120),
];

/// A strategy's line style: the same colour in every panel.
fn style(index: usize) -> ShapeStyle {
    COLOURS[index % COLOURS.len()].stroke_width(2)
}

fn latency_panel(
    area: &DrawingArea<SVGBackend, plotters::coord::Shift>,
    caption: &str,
    x_label: &str,
    results: &[VariantReport],
    samples: fn(&VariantReport) -> &Vec<u64>,
) -> std::result::Result<(), String> {
    let curves: Vec<Vec<(f64, f64)>> = results.iter().map(|r| cdf(samples(r))).collect();
    let xs = || curves.iter().flatten().map(|p| p.0);
    let lo = xs().fold(f64::INFINITY, f64::min);
    let hi = xs().fold(0.0, f64::max);
    // No samples at all (nothing propagated): an empty panel with a sane axis.
    let (lo, hi) = if lo.is_finite() {
        (lo.max(FLOOR_MS), hi.max(lo * 10.0))
    } else {
        (FLOOR_MS, 1.0)
    };
    let mut chart = ChartBuilder::on(area)
        .caption(caption, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d((lo * 0.9..hi * 1.1).log_scale(), 0.0..1.0)
        .map_err(|e| e.to_string())?;
    chart
        .configure_mesh()
        // `{}` of an f64 drops a trailing `.0`: 1, 10, 0.01 on the log axis.
        .x_label_formatter(&|v| format!("{v}"))
        .x_desc(x_label)
        .y_desc("fraction ≤ x")
        .draw()
        .map_err(|e| e.to_string())?;
    for (i, (r, curve)) in results.iter().zip(curves).enumerate() {
        let label = format!("{} ({} samples)", r.strategy, samples(r).len());
        chart
            .draw_series(LineSeries::new(curve, style(i)))
            .map_err(|e| e.to_string())?
            .label(label)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], style(i)));
    }
    legend(&mut chart)
}

fn throughput_panel(
    area: &DrawingArea<SVGBackend, plotters::coord::Shift>,
    results: &[VariantReport],
    duration_s: f64,
) -> std::result::Result<(), String> {
    // Only the measured window's whole seconds: the writes still returning after it
    // would draw a last, partial second as a collapse of throughput.
    let whole = (duration_s.floor() as usize).max(1);
    let seconds = results
        .iter()
        .map(|r| r.writes_each_second.len().min(whole))
        .max()
        .unwrap_or(0)
        .max(1);
    let top = results
        .iter()
        .flat_map(|r| r.writes_each_second.iter().take(whole).copied())
        .max()
        .unwrap_or(0)
        .max(1) as f64;
    let mut chart = ChartBuilder::on(area)
        .caption(THROUGHPUT_PANEL, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..seconds as f64, 0.0..top * 1.15)
        .map_err(|e| e.to_string())?;
    chart
        .configure_mesh()
        .x_label_formatter(&|v| format!("{v:.0}"))
        .y_label_formatter(&|v| format!("{v:.0}"))
        .x_desc("seconds into the measured window")
        .y_desc("writes/s")
        .draw()
        .map_err(|e| e.to_string())?;
    for (i, r) in results.iter().enumerate() {
        // Each second's count drawn at the second's middle.
        let points = r
            .writes_each_second
            .iter()
            .take(whole)
            .enumerate()
            .map(|(s, &n)| (s as f64 + 0.5, n as f64));
        chart
            .draw_series(LineSeries::new(points, style(i)))
            .map_err(|e| e.to_string())?
            .label(r.strategy.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], style(i)));
    }
    legend(&mut chart)
}

fn legend<'a, 'b: 'a, X, Y>(
    chart: &mut ChartContext<'a, SVGBackend<'b>, Cartesian2d<X, Y>>,
) -> std::result::Result<(), String>
where
    X: plotters::coord::ranged1d::Ranged,
    Y: plotters::coord::ranged1d::Ranged,
{
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cdf_rises_to_one_and_keeps_the_last_point_of_each_cluster() {
        // 1 ms ×3, 1.005 ms (within 1% of 1 ms), 2 ms, 10 ms; and a 0 µs floored.
        let points = cdf(&[10_000, 1_000, 1_005, 2_000, 1_000, 1_000, 0]);
        assert_eq!(
            points,
            vec![
                (FLOOR_MS, 1.0 / 7.0),
                // 1.005 ms joined the 1 ms cluster: its last point stands for it.
                (1.005, 5.0 / 7.0),
                (2.0, 6.0 / 7.0),
                (10.0, 1.0),
            ]
        );
        // 1.000 … 1.030 ms, 0.5% apart: clusters from 1.000, 1.015 and 1.030 ms.
        let creep: Vec<u64> = (0..7).map(|i| (1000.0 * 1.005f64.powi(i)) as u64).collect();
        assert_eq!(cdf(&creep).len(), 3);
        assert!(cdf(&[]).is_empty());
    }
}
