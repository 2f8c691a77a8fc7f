//! Progress bars drawn from the libraries' `tracing` spans: a span with a `progress_total` field
//! (and optional `progress_unit`, `progress_message`) gets a bar; each event under the target
//! `sparsity::progress` with a `progress_inc` field advances the nearest such span. Libraries
//! never draw to the terminal themselves.

use std::fmt::Debug;

use indicatif::ProgressBar;
use tracing::field::{Field, Visit};
use tracing::{Event, Metadata, Subscriber, span};
use tracing_subscriber::Layer;
use tracing_subscriber::layer::{Context, Filter};
use tracing_subscriber::registry::LookupSpan;

/// The target of progress events (`sparsity_models::PROGRESS`).
pub const TARGET: &str = "sparsity::progress";

/// The layer that owns the bars.
pub struct ProgressLayer;

/// Only progress spans and progress events reach [`ProgressLayer`].
pub struct ProgressFilter;

impl<S> Filter<S> for ProgressFilter {
    fn enabled(&self, meta: &Metadata<'_>, _: &Context<'_, S>) -> bool {
        meta.target() == TARGET
            || (meta.is_span() && meta.fields().field("progress_total").is_some())
    }
}

#[derive(Default)]
struct Fields {
    total: Option<u64>,
    inc: Option<u64>,
    unit: Option<String>,
    message: Option<String>,
}

impl Visit for Fields {
    fn record_u64(&mut self, field: &Field, value: u64) {
        match field.name() {
            "progress_total" => self.total = Some(value),
            "progress_inc" => self.inc = Some(value),
            _ => {}
        }
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        if let Ok(v) = u64::try_from(value) {
            self.record_u64(field, v);
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            "progress_unit" => self.unit = Some(value.to_string()),
            "progress_message" => self.message = Some(value.to_string()),
            _ => {}
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn Debug) {
        if field.name() == "progress_message" {
            self.message = Some(format!("{value:?}"));
        }
    }
}

impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for ProgressLayer {
    fn on_new_span(&self, attrs: &span::Attributes<'_>, id: &span::Id, ctx: Context<'_, S>) {
        let mut fields = Fields::default();
        attrs.record(&mut fields);
        let (Some(total), Some(span)) = (fields.total, ctx.span(id)) else {
            return;
        };
        let stage = fields.message.unwrap_or_else(|| span.name().to_string());
        let unit = fields.unit.unwrap_or_default();
        span.extensions_mut()
            .insert(crate::util::progress_bar(&stage, &unit, total));
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let mut fields = Fields::default();
        event.record(&mut fields);
        let (Some(inc), Some(span)) = (fields.inc, ctx.event_span(event)) else {
            return;
        };
        if let Some(s) = span
            .scope()
            .find(|s| s.extensions().get::<ProgressBar>().is_some())
            && let Some(bar) = s.extensions().get::<ProgressBar>()
        {
            bar.inc(inc);
        }
    }

    fn on_close(&self, id: span::Id, ctx: Context<'_, S>) {
        if let Some(span) = ctx.span(&id)
            && let Some(bar) = span.extensions_mut().remove::<ProgressBar>()
        {
            bar.finish_and_clear();
        }
    }
}
