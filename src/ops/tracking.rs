//! Tracking wired into a run: an [`EventSink`] in front of the display that
//! hands every stage the run computes (not the ones it reuses) to the
//! [`Tracker`] and passes the tracker's warnings on as stage warnings.

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::cache::{Cache, RunRecord};
use crate::dsl::parse_track_flags;
use crate::error::Diags;
use crate::exec::{Event, EventSink, Plan};
use crate::report::tracking::{StageRun, Tracker, Warning};

/// The display, with tracking in front of it when the run has any.
pub struct TrackingSink<'a> {
    inner: &'a mut dyn EventSink,
    tracker: Option<Tracker>,
    cache: &'a Cache,
    plan: &'a Plan,
}

impl<'a> TrackingSink<'a> {
    /// Tracking from the experiment's `tracking` block and `--track` flags.
    pub fn new(
        plan: &'a Plan,
        cache: &'a Cache,
        track_flags: &[String],
        inner: &'a mut dyn EventSink,
    ) -> Result<TrackingSink<'a>, Diags> {
        let targets = parse_track_flags(track_flags, plan.pipeline.experiment.tracking.clone())?;
        let tracker = Tracker::start(&targets, plan.experiment_name())?;
        Ok(TrackingSink {
            inner,
            tracker,
            cache,
            plan,
        })
    }

    /// Waits until everything is logged; the last warnings go to the display.
    pub fn finish(mut self) {
        let last = self.tracker.take().map(Tracker::finish).unwrap_or_default();
        self.show(last);
    }

    /// The tracker's warnings, as warnings of the stages they are about.
    fn show(&mut self, warnings: Vec<Warning>) {
        for (node, message) in warnings {
            self.inner
                .event(self.plan, &Event::Warning { node, message });
        }
    }

    fn stage_run(&self, node: usize, rec: &RunRecord) -> StageRun {
        let n = &self.plan.pipeline.nodes[node];
        let mut params: BTreeMap<String, String> = n
            .params
            .iter()
            .map(|(k, v)| (k.clone(), v.to_string()))
            .collect();
        params.insert("seed".into(), n.seed.to_string());
        if let Some(b) = &rec.components.backend {
            params.insert("backend".into(), b.clone());
        }
        let finished_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        StageRun {
            experiment: self.plan.experiment_name().to_string(),
            stage: n.id.clone(),
            kind: n.kind.name.clone(),
            key: rec.key.clone(),
            params,
            metrics: rec.metrics.clone(),
            dir: self.cache.artifact_dir(&rec.output),
            started_ms: finished_ms.saturating_sub((rec.seconds * 1000.0) as u64),
            finished_ms,
        }
    }
}

impl EventSink for TrackingSink<'_> {
    fn event(&mut self, plan: &Plan, ev: &Event) {
        if let (Some(t), Event::Done { node, record }) = (&self.tracker, ev) {
            t.submit(*node, self.stage_run(*node, record));
        }
        self.inner.event(plan, ev);
    }
    fn tick(&mut self) {
        let so_far = self
            .tracker
            .as_ref()
            .map(Tracker::warnings)
            .unwrap_or_default();
        self.show(so_far);
        self.inner.tick();
    }
    fn note(&mut self, text: &str) {
        self.inner.note(text);
    }
    fn download(&mut self, ev: &crate::exec::DownloadEvent) {
        self.inner.download(ev);
    }
}
