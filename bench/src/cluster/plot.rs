//! `--plot FILE.svg`: a picture of one run — the commit latency percentile curve and the
//! throughput of each second — drawn with the plotters crate (SVG backend).
//!
//! Owns only the drawing; the figures come from [`RunResults`]. The percentile axis is
//! logarithmic in `1 - quantile` (one step per "nine": 90 %, 99 %, 99.9 %, ...), the usual way to
//! show a latency tail.

use std::path::Path;

use plotters::prelude::*;

use super::results::RunResults;

/// Size of the picture, pixels.
const SIZE: (u32, u32) = (1200, 450);

/// Draws `results` into an SVG file at `path`, titled `title`.
pub fn draw(path: &Path, title: &str, results: &RunResults) -> Result<(), String> {
    draw_inner(path, title, results).map_err(|error| format!("drawing {}: {error}", path.display()))
}

/// The number of nines of a percentile: 90 -> 1, 99 -> 2, 99.9 -> 3.
fn nines(percentile: f64) -> f64 {
    -(1.0 - percentile / 100.0).log10()
}

/// The percentile `nines` nines stand for, as a label: 1 -> "90%", 3 -> "99.9%".
fn percentile_label(nines: f64) -> String {
    let percentile = 100.0 * (1.0 - 10f64.powf(-nines));
    let decimals = (nines.round() as usize).saturating_sub(2);
    format!("{percentile:.decimals$}%")
}

fn draw_inner(
    path: &Path,
    title: &str,
    results: &RunResults,
) -> Result<(), Box<dyn std::error::Error>> {
    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE)?;
    let root = root.titled(title, ("sans-serif", 18))?;
    let (left, right) = root.split_horizontally(SIZE.0 / 2);

    let curve = &results.latency_curve;
    let max_ms = curve
        .iter()
        .map(|point| point.latency_us / 1000.0)
        .fold(0.0, f64::max);
    let max_nines = curve
        .last()
        .map_or(1.0, |point| nines(point.percentile).ceil());
    let mut chart = ChartBuilder::on(&left)
        .caption("commit latency by percentile", ("sans-serif", 16))
        .margin(15)
        .x_label_area_size(35)
        .y_label_area_size(55)
        .build_cartesian_2d(0f64..max_nines, 0f64..(max_ms * 1.1).max(0.001))?;
    chart
        .configure_mesh()
        .x_labels(max_nines as usize + 1)
        .x_label_formatter(&|nines| percentile_label(*nines))
        .x_desc("percentile")
        .y_desc("ms")
        .draw()?;
    chart.draw_series(LineSeries::new(
        curve
            .iter()
            .map(|point| (nines(point.percentile), point.latency_us / 1000.0)),
        &BLUE,
    ))?;

    let seconds = results.per_second.len().max(1) as f64;
    let max_rate = results
        .per_second
        .iter()
        .map(|row| row.throughput_per_sec / 1e3)
        .fold(0.0, f64::max);
    let mut chart = ChartBuilder::on(&right)
        .caption("committed entries per second", ("sans-serif", 16))
        .margin(15)
        .x_label_area_size(35)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..seconds, 0f64..(max_rate * 1.1).max(0.001))?;
    chart
        .configure_mesh()
        .x_desc("second of the measured window")
        .y_desc("thousand entries/s")
        .draw()?;
    chart.draw_series(LineSeries::new(
        results
            .per_second
            .iter()
            .map(|row| (row.second as f64 + 0.5, row.throughput_per_sec / 1e3)),
        &RED,
    ))?;
    root.present()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::load::Tally;
    use crate::cluster::series::SecondCount;

    #[test]
    fn nines_and_their_labels() {
        assert!((nines(90.0) - 1.0).abs() < 1e-9);
        assert!((nines(99.9) - 3.0).abs() < 1e-9);
        assert_eq!(percentile_label(0.0), "0%");
        assert_eq!(percentile_label(1.0), "90%");
        assert_eq!(percentile_label(3.0), "99.9%");
        assert_eq!(percentile_label(5.0), "99.999%");
    }

    #[test]
    fn a_run_is_drawn_as_svg() {
        let mut tally = Tally::new(None);
        for micros in 1..=10_000u64 {
            tally.latency_ns.record(micros * 1000).unwrap();
        }
        tally.committed = 10_000;
        let second = SecondCount {
            committed: 3_333,
            p99_us: 9_900,
        };
        let results = RunResults::from_tally(&tally, &[second; 3], 3.0, 16);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run.svg");
        draw(&path, "a test run", &results).unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        assert!(svg.starts_with("<svg"), "{}", &svg[..100]);
        for text in [
            "a test run",
            "commit latency by percentile",
            "99.9%",
            "polyline",
        ] {
            assert!(svg.contains(text), "{text} missing");
        }
        let error = draw(&dir.path().join("missing/run.svg"), "x", &results).unwrap_err();
        assert!(error.contains("missing/run.svg"), "{error}");
    }
}
