//! Where a sweep's events go: the terminal ([`progress`]) and, with `kd sweep --tensorboard`,
//! TensorBoard event files ([`tensorboard`]). The sweep and the teacher call [`Outputs`] once per
//! event (a trial started, an epoch ended, a trial finished or was kept from an earlier run, a
//! note); each output is one [`Output`] in its own file. To add one (a tracker, an event log):
//! write `track/NAME.rs` implementing [`Output`] with a `pub(crate) fn open(&Opening) ->
//! Option<Box<dyn Output>>`, then its line in `outputs!` below (an optional output also gets
//! its flag of `kd sweep` and in [`Opening`], as `--tensorboard` has).
//!
//! The record store (`OUT/trials/`, the Parquet frames) is not an output: a result that cannot
//! be stored ends the sweep, while an output that fails is switched off with a warning and the
//! sweep goes on (its results are unaffected).

pub(crate) mod progress;

use std::path::Path;

use kd_report::{EpochRecord, TrialRecord};

pub(crate) use progress::Progress;

/// The registry of outputs besides the terminal, one line each (the file's name): the line
/// declares `track/NAME.rs` and calls its `open` for every sweep.
macro_rules! outputs {
    ($($file:ident,)+) => {
        $(pub(crate) mod $file;)+

        /// Each output's `open`, in registry order.
        const OPENERS: &[fn(&Opening) -> Option<Box<dyn Output>>] = &[$($file::open),+];
    };
}

outputs! {
    tensorboard,
}

/// What an output is opened with: the sweep's folder and the flags of `kd sweep`.
pub(crate) struct Opening<'a> {
    pub(crate) out: &'a Path,
    /// `--tensorboard`.
    pub(crate) tensorboard: bool,
}

/// One output of a sweep's events. Every method but [`Output::name`] has a default that does
/// nothing, so an output implements what it uses.
pub(crate) trait Output {
    /// What the output is, for its warning when it fails.
    fn name(&self) -> &'static str;

    /// A trial (or a pack of them, one `label`) started on worker `slot`.
    fn started(&mut self, _slot: usize, _label: &str, _epochs: u64) -> Result<(), String> {
        Ok(())
    }

    /// Epoch `log.epoch` of trial `log.trial_id` ended on worker `slot`.
    fn epoch(&mut self, _slot: usize, _log: &EpochRecord) -> Result<(), String> {
        Ok(())
    }

    /// Trial `record` finished on worker `slot` (`kept`: an earlier run finished it and this
    /// one keeps it), with its epochs.
    fn finished(
        &mut self,
        _slot: usize,
        _record: &TrialRecord,
        _epochs: &[EpochRecord],
        _kept: bool,
    ) -> Result<(), String> {
        Ok(())
    }

    /// A message that is not a trial result.
    fn note(&mut self, _line: &str) {}

    /// The sweep ended.
    fn close(&mut self) {}
}

/// Every output of one sweep; the terminal first.
pub(crate) struct Outputs {
    terminal: Progress,
    others: Vec<Box<dyn Output>>,
}

impl Outputs {
    pub(crate) fn new(terminal: Progress, others: Vec<Box<dyn Output>>) -> Self {
        Outputs { terminal, others }
    }

    /// The outputs of a sweep into `out` of `trials` units: the terminal, and each registered
    /// output that opens for these options (`--tensorboard`).
    pub(crate) fn for_sweep(trials: u64, opening: &Opening) -> Self {
        let others = OPENERS.iter().filter_map(|open| open(opening)).collect();
        Outputs::new(Progress::new(trials), others)
    }

    /// Run `event` on each output; one that fails is dropped with a warning on the terminal.
    fn each(&mut self, mut event: impl FnMut(&mut dyn Output) -> Result<(), String>) {
        let _ = event(&mut self.terminal);
        let mut failed = vec![];
        self.others.retain_mut(|o| match event(o.as_mut()) {
            Ok(()) => true,
            Err(why) => {
                failed.push(format!(
                    "warning: the {} output stopped: {why}; the results are unaffected",
                    o.name()
                ));
                false
            }
        });
        for line in failed {
            self.terminal.note(&line);
        }
    }

    pub(crate) fn start_trial(&mut self, slot: usize, label: &str, epochs: u64) {
        self.each(|o| o.started(slot, label, epochs));
    }

    pub(crate) fn epoch(&mut self, slot: usize, log: &EpochRecord) {
        self.each(|o| o.epoch(slot, log));
    }

    pub(crate) fn finish_trial(
        &mut self,
        slot: usize,
        record: &TrialRecord,
        epochs: &[EpochRecord],
    ) {
        self.each(|o| o.finished(slot, record, epochs, false));
    }

    pub(crate) fn kept_trial(&mut self, record: &TrialRecord, epochs: &[EpochRecord]) {
        self.each(|o| o.finished(0, record, epochs, true));
    }

    pub(crate) fn note(&mut self, line: &str) {
        self.each(|o| {
            o.note(line);
            Ok(())
        });
    }

    pub(crate) fn finish(mut self) {
        self.each(|o| {
            o.close();
            Ok(())
        });
    }
}
