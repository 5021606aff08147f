//! SVG charts: a line chart for training curves and a bar histogram for token lengths. Plain SVG
//! elements, so they scale with the page, print, and follow the theme's colours.

use leptos::prelude::*;

const WIDTH: f64 = 560.0;
const HEIGHT: f64 = 220.0;
const PAD: f64 = 36.0;
/// Room for the value labels left of the vertical axis.
const LEFT: f64 = 56.0;

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

/// A named line of `(x, y)` points.
pub type Series = (String, Vec<(f64, f64)>);

/// A value with four significant digits (losses, learning rates and norms differ in scale).
fn label(value: f64) -> String {
    if value != 0.0 && (value.abs() < 1e-2 || value.abs() >= 1e5) {
        format!("{value:.3e}")
    } else {
        let digits = (3 - value.abs().log10().floor() as i32).clamp(0, 6) as usize;
        format!("{value:.digits$}")
    }
}

/// One or more series of `(x, y)` points over shared axes.
#[component]
pub fn LineChart(
    title: &'static str,
    /// `(name, points)` per series.
    series: Signal<Vec<Series>>,
) -> impl IntoView {
    let drawing = move || {
        let all = series.get();
        let (x0, x1) = bounds(all.iter().flat_map(|s| s.1.iter().map(|p| p.0)));
        let (y0, y1) = bounds(all.iter().flat_map(|s| s.1.iter().map(|p| p.1)));
        let sx = move |x: f64| LEFT + (x - x0) / (x1 - x0) * (WIDTH - LEFT - PAD);
        let sy = move |y: f64| HEIGHT - PAD - (y - y0) / (y1 - y0) * (HEIGHT - 2.0 * PAD);
        let lines = all
            .iter()
            .enumerate()
            .map(|(i, (name, points))| {
                let path: String = points
                    .iter()
                    .map(|(x, y)| format!("{:.1},{:.1}", sx(*x), sy(*y)))
                    .collect::<Vec<_>>()
                    .join(" ");
                view! {
                    <polyline class=format!("series series-{i}") points=path fill="none">
                        <title>{name.clone()}</title>
                    </polyline>
                }
            })
            .collect_view();
        let count: usize = all.iter().map(|s| s.1.len()).sum();
        view! {
            <line class="axis" x1=LEFT y1=HEIGHT - PAD x2=WIDTH - PAD y2=HEIGHT - PAD />
            <line class="axis" x1=LEFT y1=PAD x2=LEFT y2=HEIGHT - PAD />
            <text class="tick" x=LEFT - 4.0 y=PAD + 4.0 text-anchor="end">{label(y1)}</text>
            <text class="tick" x=LEFT - 4.0 y=HEIGHT - PAD text-anchor="end">{label(y0)}</text>
            <text class="tick" x=LEFT y=HEIGHT - PAD + 14.0>{format!("{x0}")}</text>
            <text class="tick" x=WIDTH - PAD y=HEIGHT - PAD + 14.0 text-anchor="end">{format!("{x1}")}</text>
            {lines}
            <text class="points" x=WIDTH - PAD y=PAD - 8.0 text-anchor="end">{format!("{count} points")}</text>
        }
    };
    view! {
        <figure class="chart" data-title=title>
            <figcaption>{title}</figcaption>
            <svg viewBox=format!("0 0 {WIDTH} {HEIGHT}") role="img" aria-label=title>
                {drawing}
            </svg>
        </figure>
    }
}

/// Bars of `(low, high, count)` with a marker at `limit` (values past it are truncated).
#[component]
pub fn Histogram(
    title: String,
    buckets: Vec<(f64, f64, f64)>,
    limit: Option<f64>,
) -> impl IntoView {
    let (x0, x1) = bounds(buckets.iter().flat_map(|b| [b.0, b.1 + 1.0]));
    let x1 = limit.map_or(x1, |l| x1.max(l + 1.0));
    let top = buckets.iter().map(|b| b.2).fold(1.0, f64::max);
    let sx = move |x: f64| PAD + (x - x0) / (x1 - x0) * (WIDTH - 2.0 * PAD);
    let bars = buckets
        .iter()
        .map(|(low, high, count)| {
            let height = count / top * (HEIGHT - 2.0 * PAD);
            view! {
                <rect class="bar" x=sx(*low) width=(sx(high + 1.0) - sx(*low) - 1.0).max(1.0)
                    y=HEIGHT - PAD - height height=height>
                    <title>{format!("{low}..{high}: {count}")}</title>
                </rect>
            }
        })
        .collect_view();
    let marker = limit.map(|l| {
        view! {
            <line class="limit" x1=sx(l) x2=sx(l) y1=PAD - 6.0 y2=HEIGHT - PAD />
            <text class="tick" x=sx(l) y=PAD - 10.0 text-anchor="middle">{format!("limit {l}")}</text>
        }
    });
    let (data_title, caption) = (title.clone(), title.clone());
    view! {
        <figure class="chart histogram" data-title=data_title>
            <figcaption>{caption}</figcaption>
            <svg viewBox=format!("0 0 {WIDTH} {HEIGHT}") role="img" aria-label=title>
                <line class="axis" x1=PAD y1=HEIGHT - PAD x2=WIDTH - PAD y2=HEIGHT - PAD />
                {bars}
                {marker}
                <text class="tick" x=PAD y=HEIGHT - PAD + 14.0>{format!("{x0} tokens")}</text>
                <text class="tick" x=WIDTH - PAD y=HEIGHT - PAD + 14.0 text-anchor="end">{format!("{}", x1 - 1.0)}</text>
            </svg>
        </figure>
    }
}
