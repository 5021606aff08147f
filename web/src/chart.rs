//! Charts drawn by plotters into SVG text: line charts for training curves (one series per line,
//! overlaid for a comparison), bar histograms for token lengths, and scatter plots of a sweep's
//! setting against its metric. SVG scales with the page and
//! prints; the palette's colours are remapped for the dark theme in `style.css`.

use leptos::prelude::*;
use plotters::coord::Shift;
use plotters::prelude::*;

const SIZE: (u32, u32) = (560, 240);
/// Series colours, in order; `style.css` gives each a dark-theme equivalent and uses them for legends.
const PALETTE: [RGBColor; 6] = [
    RGBColor(0x24, 0x57, 0xc5),
    RGBColor(0xc5, 0x46, 0x2a),
    RGBColor(0x1f, 0x7a, 0x3a),
    RGBColor(0x8a, 0x5a, 0x00),
    RGBColor(0x7b, 0x3f, 0xbf),
    RGBColor(0x00, 0x7c, 0x89),
];
const AXIS: RGBColor = RGBColor(0x5d, 0x64, 0x70);
const GRID: RGBColor = RGBColor(0xd8, 0xdb, 0xe0);
const LIMIT: RGBColor = RGBColor(0xb3, 0x26, 0x1e);

/// A named line of `(x, y)` points.
pub type Series = (String, Vec<(f64, f64)>);

fn bounds(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (low, high) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
        (lo.min(v), hi.max(v))
    });
    if !low.is_finite() {
        (0.0, 1.0)
    } else if (high - low).abs() < 1e-12 {
        (low - 0.5, high + 0.5)
    } else {
        (low, high)
    }
}

/// A value with four significant digits (losses, learning rates and norms differ in scale).
fn label(value: f64) -> String {
    if value != 0.0 && (value.abs() < 1e-2 || value.abs() >= 1e5) {
        format!("{value:.2e}")
    } else {
        let digits = (3 - value.abs().log10().floor() as i32).clamp(0, 6) as usize;
        format!("{value:.digits$}")
    }
}

/// Steps and token counts are whole numbers; anything else gets [`label`].
fn whole_or_label(value: f64) -> String {
    if value.fract() == 0.0 {
        format!("{value:.0}")
    } else {
        label(value)
    }
}

fn text_style(size: u32) -> TextStyle<'static> {
    ("sans-serif", size).into_font().color(&AXIS)
}

/// Renders `draw` onto an SVG canvas; a failure becomes a note instead of a chart.
fn render(
    draw: impl FnOnce(&DrawingArea<SVGBackend, Shift>) -> Result<(), Box<dyn std::error::Error>>,
) -> String {
    let mut svg = String::new();
    let outcome = {
        let root = SVGBackend::with_string(&mut svg, SIZE).into_drawing_area();
        draw(&root).and_then(|()| root.present().map_err(Into::into))
    };
    match outcome {
        Ok(()) => svg,
        Err(error) => format!("<p class=\"error\">cannot draw this chart: {error}</p>"),
    }
}

fn line_svg(all: &[Series]) -> String {
    render(|root| {
        let (x0, x1) = bounds(all.iter().flat_map(|s| s.1.iter().map(|p| p.0)));
        let (y0, y1) = bounds(all.iter().flat_map(|s| s.1.iter().map(|p| p.1)));
        let mut chart = ChartBuilder::on(root)
            .margin(10)
            .x_label_area_size(24)
            .y_label_area_size(60)
            .build_cartesian_2d(x0..x1, y0..y1)?;
        chart
            .configure_mesh()
            .light_line_style(TRANSPARENT)
            .bold_line_style(GRID.stroke_width(1))
            .axis_style(AXIS)
            .x_labels(6)
            .y_labels(5)
            .label_style(text_style(11))
            .x_label_formatter(&|x| whole_or_label(*x))
            .y_label_formatter(&|y| label(*y))
            .draw()?;
        for (i, (_, points)) in all.iter().enumerate() {
            let colour = PALETTE[i % PALETTE.len()];
            chart.draw_series(LineSeries::new(
                points.iter().copied(),
                colour.stroke_width(2),
            ))?;
        }
        Ok(())
    })
}

/// One or more series over shared axes, with a legend and the number of points drawn.
#[component]
pub fn LineChart(
    title: &'static str,
    /// `(name, points)` per series.
    series: Signal<Vec<Series>>,
) -> impl IntoView {
    let count = move || series.with(|all| all.iter().map(|s| s.1.len()).sum::<usize>());
    view! {
        <figure class="chart" data-title=title>
            <figcaption>{title}<span class="points">{move || format!("{} points", count())}</span></figcaption>
            {move || if count() == 0 {
                view! { <p class="plot empty muted">"No points yet."</p> }.into_any()
            } else {
                view! { <div class="plot" role="img" aria-label=title inner_html=move || series.with(|all| line_svg(all))></div> }.into_any()
            }}
            <ul class="legend">
                {move || series.get().into_iter().enumerate().map(|(i, (name, _))| view! {
                    <li><span class=format!("swatch series-{}", i % PALETTE.len())></span>{name}</li>
                }).collect_view()}
            </ul>
        </figure>
    }
}

fn histogram_svg(buckets: &[(f64, f64, f64)], limit: Option<f64>) -> String {
    render(|root| {
        let (x0, x1) = bounds(buckets.iter().flat_map(|b| [b.0, b.1 + 1.0]));
        let x1 = limit.map_or(x1, |l| x1.max(l + 1.0));
        let top = buckets.iter().map(|b| b.2).fold(1.0, f64::max);
        let mut chart = ChartBuilder::on(root)
            .margin(10)
            .margin_top(22)
            .x_label_area_size(24)
            .y_label_area_size(44)
            .build_cartesian_2d(x0..x1, 0.0..top * 1.05)?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .light_line_style(TRANSPARENT)
            .bold_line_style(GRID.stroke_width(1))
            .axis_style(AXIS)
            .x_desc("tokens")
            .y_desc("records")
            .label_style(text_style(11))
            .axis_desc_style(text_style(11))
            .x_label_formatter(&|x| whole_or_label(*x))
            .y_label_formatter(&|y| whole_or_label(*y))
            .draw()?;
        chart.draw_series(buckets.iter().map(|&(low, high, count)| {
            Rectangle::new([(low, 0.0), (high + 1.0, count)], PALETTE[0].filled())
        }))?;
        if let Some(limit) = limit {
            chart.draw_series(DashedLineSeries::new(
                [(limit, 0.0), (limit, top * 1.05)],
                5,
                4,
                LIMIT.stroke_width(1),
            ))?;
            chart.draw_series(std::iter::once(Text::new(
                format!("limit {limit}"),
                (limit, top * 1.05),
                ("sans-serif", 11).into_font().color(&LIMIT),
            )))?;
        }
        Ok(())
    })
}

/// Bars of `(low, high, count)` with a marker at `limit` (values past it are truncated).
#[component]
pub fn Histogram(
    title: String,
    buckets: Vec<(f64, f64, f64)>,
    limit: Option<f64>,
) -> impl IntoView {
    let svg = histogram_svg(&buckets, limit);
    let (data_title, caption) = (title.clone(), title.clone());
    view! {
        <figure class="chart histogram" data-title=data_title>
            <figcaption>{caption}</figcaption>
            <div class="plot" role="img" aria-label=title inner_html=svg></div>
        </figure>
    }
}

/// A labelled point of a scatter plot.
pub type Point = (f64, f64, String);

fn scatter_svg(points: &[Point], x_desc: &str, y_desc: &str, log_x: bool) -> String {
    render(|root| {
        let x_of = |x: f64| if log_x { x.log10() } else { x };
        let (x0, x1) = bounds(points.iter().map(|p| x_of(p.0)));
        let (y0, y1) = bounds(points.iter().map(|p| p.1));
        // Room around the outermost points and their labels.
        let (dx, dy) = ((x1 - x0) * 0.08, (y1 - y0) * 0.12);
        let mut chart = ChartBuilder::on(root)
            .margin(10)
            .x_label_area_size(36)
            .y_label_area_size(60)
            .build_cartesian_2d((x0 - dx)..(x1 + dx), (y0 - dy)..(y1 + dy))?;
        chart
            .configure_mesh()
            .light_line_style(TRANSPARENT)
            .bold_line_style(GRID.stroke_width(1))
            .axis_style(AXIS)
            .x_labels(5)
            .y_labels(5)
            .x_desc(x_desc)
            .y_desc(y_desc)
            .label_style(text_style(11))
            .axis_desc_style(text_style(11))
            .x_label_formatter(&|x| {
                if log_x {
                    label(10f64.powf(*x))
                } else {
                    whole_or_label(*x)
                }
            })
            .y_label_formatter(&|y| label(*y))
            .draw()?;
        chart.draw_series(
            points
                .iter()
                .map(|(x, y, _)| Circle::new((x_of(*x), *y), 4, PALETTE[0].filled())),
        )?;
        chart.draw_series(points.iter().map(|(x, y, name)| {
            Text::new(
                name.clone(),
                (x_of(*x), *y),
                ("sans-serif", 11).into_font().color(&AXIS),
            )
        }))?;
        Ok(())
    })
}

/// A sweep's trials as points: a setting (log scale for learning rates) against the metric, each
/// point labelled with its trial.
#[component]
pub fn ScatterChart(
    title: String,
    x_desc: &'static str,
    y_desc: &'static str,
    log_x: bool,
    points: Vec<Point>,
) -> impl IntoView {
    let svg = scatter_svg(&points, x_desc, y_desc, log_x);
    let (data_title, caption) = (title.clone(), title.clone());
    let count = format!("{} points", points.len());
    view! {
        <figure class="chart scatter" data-title=data_title>
            <figcaption>{caption}<span class="points">{count}</span></figcaption>
            <div class="plot" role="img" aria-label=title inner_html=svg></div>
        </figure>
    }
}
