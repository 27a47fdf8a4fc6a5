//! Progress on stderr: indicatif bars on a terminal (the sweep, and an epoch bar per worker),
//! plain one-line-per-trial logs when stderr is not a terminal or `CI` is set.

use std::io::IsTerminal;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use kd_report::{EpochRecord, Kind, TrialRecord};

#[derive(Debug)]
pub struct Progress {
    bars: Option<(MultiProgress, ProgressBar)>,
    /// The running trial's epoch bar, per worker slot.
    epoch_bars: Vec<Option<ProgressBar>>,
}

impl Progress {
    /// Bars when stderr is a terminal and `CI` is unset; plain lines otherwise.
    pub fn new(total_trials: u64) -> Self {
        let plain = std::env::var_os("CI").is_some() || !std::io::stderr().is_terminal();
        if plain {
            return Progress {
                bars: None,
                epoch_bars: vec![],
            };
        }
        let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
        let sweep = multi.add(ProgressBar::new(total_trials));
        sweep.set_style(
            ProgressStyle::with_template(
                "trials {pos}/{len} [{bar:30}] elapsed {elapsed} eta {eta}",
            )
            .expect("valid template")
            .progress_chars("=> "),
        );
        Progress {
            bars: Some((multi, sweep)),
            epoch_bars: vec![],
        }
    }

    fn slot(&mut self, slot: usize) -> &mut Option<ProgressBar> {
        if self.epoch_bars.len() <= slot {
            self.epoch_bars.resize(slot + 1, None);
        }
        &mut self.epoch_bars[slot]
    }

    /// A trial starts on worker `slot` (0 when trials run in this process).
    pub fn start_trial(&mut self, slot: usize, label: &str, epochs: u64) {
        let Some((multi, _)) = &self.bars else {
            return;
        };
        let bar = multi.add(ProgressBar::new(epochs));
        bar.set_style(
            ProgressStyle::with_template("  {prefix} epoch {pos}/{len} [{bar:20}] {msg}")
                .expect("valid template")
                .progress_chars("=> "),
        );
        bar.set_prefix(label.to_string());
        if let Some(old) = self.slot(slot).replace(bar) {
            old.finish_and_clear();
        }
    }

    pub fn epoch(&mut self, slot: usize, log: &EpochRecord) {
        if let Some(bar) = self.slot(slot) {
            bar.set_position(log.epoch as u64);
            let val = log
                .val_acc
                .map_or(String::new(), |v| format!(" val {:.2}%", 100.0 * v));
            bar.set_message(format!(
                "loss {:.4} train {:.2}%{val}",
                log.train_loss,
                100.0 * log.train_acc,
            ));
        }
    }

    /// One line per finished trial, printed in both modes.
    pub fn finish_trial(&mut self, slot: usize, line: &str) {
        if let Some(bar) = self.slot(slot).take() {
            bar.finish_and_clear();
        }
        match &self.bars {
            Some((multi, sweep)) => {
                let _ = multi.println(line);
                sweep.inc(1);
            }
            None => eprintln!("{line}"),
        }
    }

    /// A message that is not a trial result.
    pub fn note(&self, line: &str) {
        match &self.bars {
            Some((multi, _)) => {
                let _ = multi.println(line);
            }
            None => eprintln!("{line}"),
        }
    }

    pub fn finish(self) {
        for bar in self.epoch_bars.into_iter().flatten() {
            bar.finish_and_clear();
        }
        if let Some((_, sweep)) = self.bars {
            sweep.finish_and_clear();
        }
    }
}

/// The one line printed per finished trial.
pub fn trial_line(r: &TrialRecord) -> String {
    let pct = |v: Option<f64>| v.map_or("-".into(), |v| format!("{:.2}%", 100.0 * v));
    let kd = match (r.temperature, r.alpha) {
        (Some(t), Some(a)) if r.kind == Kind::Kd => format!(" T={t} alpha={a}"),
        _ => String::new(),
    };
    let why = r
        .message
        .as_deref()
        .map_or(String::new(), |m| format!(" ({m})"));
    format!(
        "[{}] {} {} {}{} seed={} status={}{why} test={} val={} ({:.1}s)",
        r.trial_id,
        r.kind,
        r.arch,
        r.hidden,
        kd,
        r.seed,
        r.status,
        pct(r.test_acc),
        pct(r.val_acc),
        r.wall_s
    )
}
