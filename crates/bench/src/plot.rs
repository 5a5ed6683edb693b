//! The data-plane benchmark's figure: per mode, full sync time and new-connection
//! latency (p50 through the ClusterIP, and straight to the pod) against the number
//! of Services programmed, as an SVG file.

use std::path::Path;

use plotters::prelude::*;

use crate::dataplane::Series;

const COLORS: [RGBColor; 3] = [
    RGBColor(200, 60, 40),
    RGBColor(40, 110, 200),
    RGBColor(40, 150, 70),
];

/// `mode`'s series as (Services, `y`) points, Services at least 1 (log axis).
fn points(series: &[Series], mode: &str, y: impl Fn(&Series) -> f64) -> Vec<(f64, f64)> {
    series
        .iter()
        .filter(|s| s.mode == mode)
        .map(|s| (s.services.max(1) as f64, y(s)))
        .collect()
}

/// Writes the figure for `series` to `path`.
pub fn write(path: &Path, series: &[Series]) -> anyhow::Result<()> {
    let mut modes: Vec<&str> = series.iter().map(|s| s.mode.as_str()).collect();
    modes.dedup();
    let max_services = series
        .iter()
        .map(|s| s.services)
        .max()
        .unwrap_or(10)
        .max(10) as f64;
    let root = SVGBackend::new(path, (1100, 450)).into_drawing_area();
    root.fill(&WHITE)?;
    let (left, right) = root.split_horizontally(550);

    let max_sync = series
        .iter()
        .map(|s| s.sync.as_secs_f64())
        .fold(0.1, f64::max);
    let mut chart = ChartBuilder::on(&left)
        .caption("full sync time", ("sans-serif", 18))
        .margin(10)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(
            (1.0..max_services * 1.5).log_scale(),
            (0.001..max_sync * 2.0).log_scale(),
        )?;
    chart
        .configure_mesh()
        .x_desc("Services programmed")
        .x_label_formatter(&|x| format!("{}", x.round() as u64))
        .y_desc("seconds")
        .draw()?;
    for (i, mode) in modes.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let points = points(series, mode, |s| s.sync.as_secs_f64().max(0.001));
        chart
            .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))?
            .label(*mode)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
        chart.draw_series(
            points
                .into_iter()
                .map(|p| Circle::new(p, 3, color.filled())),
        )?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .border_style(BLACK)
        .background_style(WHITE)
        .draw()?;

    let max_latency = series
        .iter()
        .map(|s| s.vip.p50.max(s.direct.p50).as_secs_f64() * 1e6)
        .fold(10.0, f64::max);
    let mut chart = ChartBuilder::on(&right)
        .caption("new TCP connection, p50", ("sans-serif", 18))
        .margin(10)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(
            (1.0..max_services * 1.5).log_scale(),
            0.0..max_latency * 1.2,
        )?;
    chart
        .configure_mesh()
        .x_desc("Services programmed")
        .x_label_formatter(&|x| format!("{}", x.round() as u64))
        .y_desc("microseconds")
        .draw()?;
    for (i, mode) in modes.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let of = |direct: bool| {
            points(series, mode, |s| {
                let l = if direct { s.direct } else { s.vip };
                l.p50.as_secs_f64() * 1e6
            })
        };
        chart
            .draw_series(LineSeries::new(of(false), color.stroke_width(2)))?
            .label(format!("{mode}: ClusterIP"))
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
        chart
            .draw_series(DashedLineSeries::new(of(true), 4, 4, color.into()))?
            .label(format!("{mode}: pod direct"))
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .border_style(BLACK)
        .background_style(WHITE)
        .draw()?;
    root.present()?;
    Ok(())
}
