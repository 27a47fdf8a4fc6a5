//! Progress on stderr: indicatif bars on a terminal (the sweep, and an epoch bar per worker),
//! plain lines when stderr is not a terminal or `CI` is set (a Slurm log, CI): one per finished
//! trial, and for a running trial one per minute at most (epoch, loss, validation accuracy,
//! elapsed, ETA), so a 15-minute teacher shows life.

use std::io::IsTerminal;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use kd_report::{EpochRecord, Kind, TrialRecord};

#[derive(Debug)]
pub struct Progress {
    bars: Option<(MultiProgress, ProgressBar)>,
    /// The running trial's epoch bar, per worker slot.
    epoch_bars: Vec<Option<ProgressBar>>,
    /// In plain mode, the running trial per worker slot.
    running: Vec<Option<Running>>,
    /// In plain mode, the least time between two epoch lines of one trial.
    every: std::time::Duration,
}

/// A trial running in plain mode: what its epoch lines say and when the last one was printed.
#[derive(Debug, Clone)]
struct Running {
    label: String,
    epochs: u64,
    started: std::time::Instant,
    printed: std::time::Instant,
    /// The first epoch record this process saw for the trial, and when: a continued trial's
    /// rate counts only the epochs trained since (not those before the checkpoint, nor the
    /// time its continuation took).
    first: Option<(u32, std::time::Instant)>,
}

/// `1h02m`, `4m10s`, `12s`.
fn duration(d: std::time::Duration) -> String {
    let s = d.as_secs();
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
    }
}

/// The plain-mode line of epoch `log` of a running trial, `elapsed` after it started, with the
/// time an epoch takes where known (`per_epoch`).
fn epoch_line(
    label: &str,
    epochs: u64,
    log: &EpochRecord,
    elapsed: std::time::Duration,
    per_epoch: Option<std::time::Duration>,
) -> String {
    let val = log
        .val_acc
        .map_or(String::new(), |v| format!(" val {:.2}%", 100.0 * v));
    let left = epochs.saturating_sub(u64::from(log.epoch));
    let eta = per_epoch.map_or("?".into(), |d| duration(d.mul_f64(left as f64)));
    format!(
        "  {label}: epoch {}/{epochs} loss {:.4}{val} elapsed {} eta {eta}",
        log.epoch,
        log.train_loss,
        duration(elapsed),
    )
}

impl Running {
    /// The time an epoch takes, from the epochs this process trained: since the first epoch
    /// record it saw, or since the start where that record is the trial's first epoch.
    fn per_epoch(&mut self, epoch: u32, now: std::time::Instant) -> Option<std::time::Duration> {
        let (first, at) = *self.first.get_or_insert((epoch, now));
        match epoch.checked_sub(first) {
            Some(n) if n > 0 => Some(now.duration_since(at).div_f64(n as f64)),
            _ if epoch == 1 => Some(now.duration_since(self.started)),
            _ => None,
        }
    }
}

impl Progress {
    /// Bars when stderr is a terminal and `CI` is unset; plain lines otherwise.
    pub fn new(total_trials: u64) -> Self {
        let plain = std::env::var_os("CI").is_some() || !std::io::stderr().is_terminal();
        let every = std::time::Duration::from_secs(
            std::env::var("KD_PROGRESS_EVERY_S")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(60),
        );
        if plain {
            return Progress {
                bars: None,
                epoch_bars: vec![],
                running: vec![],
                every,
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
            running: vec![],
            every,
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
            if self.running.len() <= slot {
                self.running.resize(slot + 1, None);
            }
            let now = std::time::Instant::now();
            self.running[slot] = Some(Running {
                label: label.to_string(),
                epochs,
                started: now,
                printed: now,
                first: None,
            });
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
        if self.bars.is_none() {
            let every = self.every;
            if let Some(Some(r)) = self.running.get_mut(slot) {
                let now = std::time::Instant::now();
                let per_epoch = r.per_epoch(log.epoch, now);
                if now.duration_since(r.printed) >= every {
                    r.printed = now;
                    let elapsed = now.duration_since(r.started);
                    eprintln!(
                        "{}",
                        epoch_line(&r.label, r.epochs, log, elapsed, per_epoch)
                    );
                }
            }
            return;
        }
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
        if let Some(r) = self.running.get_mut(slot) {
            *r = None;
        }
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

    fn close_bars(&mut self) {
        for bar in self.epoch_bars.drain(..).flatten() {
            bar.finish_and_clear();
        }
        if let Some((_, sweep)) = self.bars.take() {
            sweep.finish_and_clear();
        }
    }
}

impl super::Output for Progress {
    fn name(&self) -> &'static str {
        "terminal"
    }

    fn started(&mut self, slot: usize, label: &str, epochs: u64) -> Result<(), String> {
        self.start_trial(slot, label, epochs);
        Ok(())
    }

    fn epoch(&mut self, slot: usize, log: &EpochRecord) -> Result<(), String> {
        Progress::epoch(self, slot, log);
        Ok(())
    }

    fn finished(
        &mut self,
        slot: usize,
        record: &TrialRecord,
        _epochs: &[EpochRecord],
        kept: bool,
    ) -> Result<(), String> {
        let line = trial_line(record);
        if kept {
            self.finish_trial(slot, &format!("{line} (done before, skipped)"));
        } else {
            self.finish_trial(slot, &line);
        }
        Ok(())
    }

    fn note(&mut self, line: &str) {
        Progress::note(self, line);
    }

    fn close(&mut self) {
        self.close_bars();
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_epoch_lines_say_epoch_loss_accuracy_elapsed_and_eta() {
        let log = EpochRecord {
            trial_id: "teacher-x".into(),
            epoch: 25,
            train_loss: 0.123456,
            soft_loss: None,
            hard_loss: 0.123456,
            train_acc: 0.9,
            val_acc: Some(0.9812),
            test_acc: None,
            lr: 0.1,
            seconds: 10.0,
        };
        let secs = std::time::Duration::from_secs;
        let line = epoch_line("teacher", 100, &log, secs(250), Some(secs(10)));
        assert_eq!(
            line,
            "  teacher: epoch 25/100 loss 0.1235 val 98.12% elapsed 4m10s eta 12m30s"
        );
        let unknown = epoch_line("teacher", 100, &log, secs(250), None);
        assert!(unknown.ends_with("elapsed 4m10s eta ?"), "{unknown}");
        assert_eq!(duration(std::time::Duration::from_secs(3720)), "1h02m");
        assert_eq!(duration(std::time::Duration::from_secs(7)), "7s");
    }

    /// A trial continued at epoch 747 that took 17 minutes to get back to where it was
    /// (the dropout replay) and then 10 s an epoch: its ETA is 10 s per epoch left, not the
    /// 17 minutes spread over 748 epochs (the ETA said 6 minutes for 250 epochs before).
    #[test]
    fn a_continued_trials_eta_counts_the_epochs_it_trained_since() {
        let t0 = std::time::Instant::now();
        let secs = std::time::Duration::from_secs;
        let mut r = Running {
            label: "teacher".into(),
            epochs: 1000,
            started: t0,
            printed: t0,
            first: None,
        };
        assert_eq!(r.per_epoch(748, t0 + secs(1020)), None);
        assert_eq!(r.per_epoch(758, t0 + secs(1120)), Some(secs(10)));
        let mut fresh = Running {
            first: None,
            ..r.clone()
        };
        assert_eq!(fresh.per_epoch(1, t0 + secs(8)), Some(secs(8)));
        assert_eq!(fresh.per_epoch(3, t0 + secs(28)), Some(secs(10)));
    }
}
